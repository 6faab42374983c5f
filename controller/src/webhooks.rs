//! Outgoing webhooks: adding and removing them, signing what is sent, and the worker that
//! delivers the outbox ([`crate::store::webhooks`]) with retries.
//!
//! Each delivery is a `POST` of the event as JSON with these headers:
//!
//! | header | value |
//! | --- | --- |
//! | `X-Cordon-Event` | the event kind, e.g. `incident.created` |
//! | `X-Cordon-Delivery` | the delivery id (the same on every retry: receivers dedupe on it) |
//! | `X-Cordon-Timestamp` | Unix seconds when this attempt was signed |
//! | `X-Cordon-Signature` | `sha256=` + hex HMAC-SHA256(secret, `"<timestamp>.<body>"`) |
//!
//! A 2xx answer delivers it. Anything else (another status, a refused connection, no answer
//! within [`SEND_TIMEOUT`]) is tried again after the retry base (1 s unless configured), then
//! twice that, and so on, capped at [`MAX_BACKOFF`]; after [`MAX_ATTEMPTS`] attempts it fails.
//! Redirects are not followed. Delivery is at least once: a controller that dies mid-send
//! sends that attempt again once its lease ([`LEASE`]) runs out.
//!
//! Secrets are never logged, and neither are URLs (which often carry a token themselves): logs
//! name the webhook and delivery ids.

use std::time::Duration;

use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::{
    error_chain,
    events::{check_pattern, kind, Event},
    now_ms,
    state::{Controller, Shared},
    store::{
        webhooks::{AttemptOutcome, ClaimedDelivery, NewWebhook, WebhookRecord},
        StoreError,
    },
};
pub use cordon_api::webhooks::{CreateWebhook, WebhookCreated};

/// Most enabled webhooks at once.
pub const MAX_WEBHOOKS: i64 = 100;
/// Most event patterns on one webhook.
pub const MAX_PATTERNS: usize = 32;
/// Attempts before a delivery fails.
pub const MAX_ATTEMPTS: i64 = 8;
/// Longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long one attempt may take, connection included.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claimed delivery stays claimed; longer than an attempt can take.
pub const LEASE: Duration = Duration::from_secs(60);
/// Deliveries claimed at once.
const BATCH: i64 = 32;
/// Deliveries sent at once.
const CONCURRENCY: usize = 8;
/// How often the outbox is looked at when nothing wakes the worker (deliveries queued by
/// another replica, leases run out).
const IDLE_POLL: Duration = Duration::from_secs(5);
/// Finished deliveries are kept this long, then deleted.
pub const RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often old deliveries are deleted.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
/// Longest name.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest URL.
pub const MAX_URL_CHARS: usize = 2048;
/// Shortest and longest secret a caller may choose.
pub const SECRET_CHARS: std::ops::RangeInclusive<usize> = 16..=256;
/// How much of an error (or of a refusing receiver's answer) is kept.
const MAX_ERROR_CHARS: usize = 300;

/// Why a webhook operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// A field of the request is not acceptable.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("no webhook {0}")]
    UnknownWebhook(String),
    #[error("webhook {0} is removed")]
    Removed(String),
    #[error("at most {MAX_WEBHOOKS} webhooks can be enabled; remove one first")]
    TooMany,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &'static str, message: impl Into<String>) -> WebhookError {
    WebhookError::Invalid {
        field,
        message: message.into(),
    }
}

/// The `X-Cordon-Signature` value: `sha256=` + hex HMAC-SHA256(`secret`, `"<timestamp>.<body>"`).
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a webhook URL: `https` with a host, or plain `http` to a receiver on this host
/// (loopback) only — events name hosts, processes and files, and must not cross a network in
/// clear text.
pub fn check_url(url: &str) -> Result<reqwest::Url, WebhookError> {
    let url = url.trim();
    if url.chars().count() > MAX_URL_CHARS {
        return Err(invalid(
            "url",
            format!("longer than {MAX_URL_CHARS} characters"),
        ));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        invalid(
            "url",
            format!("not a URL ({e}); expected http(s)://host/path"),
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(
            "url",
            format!("scheme {:?} is not http or https", parsed.scheme()),
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("url", "has no host"));
    }
    if parsed.scheme() == "http" && !is_loopback(&parsed) {
        return Err(invalid(
            "url",
            "plain http is only accepted for a receiver on this host (127.0.0.0/8, ::1, \
             localhost); use https",
        ));
    }
    Ok(parsed)
}

/// Whether `url`'s host is this machine's loopback.
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // IPv6 hosts come bracketed; IP hosts come normalised (`127.1` is `127.0.0.1`).
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// Checks the event patterns; all events (`*`) when none are given.
fn check_events(events: Option<Vec<String>>) -> Result<Vec<String>, WebhookError> {
    let Some(events) = events else {
        return Ok(vec!["*".to_owned()]);
    };
    if events.is_empty() {
        return Err(invalid(
            "events",
            "give at least one pattern, or leave it out for every event",
        ));
    }
    if events.len() > MAX_PATTERNS {
        return Err(invalid(
            "events",
            format!("at most {MAX_PATTERNS} patterns"),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for pattern in events {
        let pattern = pattern.trim().to_owned();
        check_pattern(&pattern).map_err(|message| invalid("events", message))?;
        if !out.contains(&pattern) {
            out.push(pattern);
        }
    }
    Ok(out)
}

fn check_name(name: &str) -> Result<String, WebhookError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(invalid("name", "must not be empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(invalid(
            "name",
            format!("longer than {MAX_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid("name", "contains control characters"));
    }
    Ok(name.to_owned())
}

fn check_secret(secret: Option<String>) -> Result<String, WebhookError> {
    let Some(secret) = secret else {
        let bytes: [u8; 32] = rand::random();
        return Ok(hex::encode(bytes));
    };
    let chars = secret.chars().count();
    if !SECRET_CHARS.contains(&chars) {
        return Err(invalid(
            "secret",
            format!(
                "must be {} to {} characters, not {chars}",
                SECRET_CHARS.start(),
                SECRET_CHARS.end()
            ),
        ));
    }
    if secret.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid(
            "secret",
            "must not contain whitespace or control characters",
        ));
    }
    Ok(secret)
}

/// The wait before attempt `attempts + 1`, after `attempts` failed ones: the base, doubled
/// for each earlier failure, capped at [`MAX_BACKOFF`].
pub fn backoff(base: Duration, attempts: i64) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    base.saturating_mul(1u32 << doublings).min(MAX_BACKOFF)
}

impl Controller {
    /// Adds a webhook; returns it with its secret, which is never shown again.
    pub async fn create_webhook(
        &self,
        request: CreateWebhook,
        actor: &str,
    ) -> Result<WebhookCreated, WebhookError> {
        let name = check_name(&request.name)?;
        let url = check_url(&request.url)?;
        let events = check_events(request.events)?;
        let secret = check_secret(request.secret)?;
        if self.store.count_enabled_webhooks().await? >= MAX_WEBHOOKS {
            return Err(WebhookError::TooMany);
        }
        let new = NewWebhook {
            id: uuid::Uuid::new_v4().to_string(),
            name,
            url: url.to_string(),
            secret,
            events,
            created_at_ms: now_ms(),
            created_by: actor.to_owned(),
        };
        self.store.insert_webhook(&new).await?;
        self.events.webhooks_changed();
        tracing::info!(webhook_id = %new.id, name = %new.name, events = ?new.events, by = actor, "webhook added");
        let webhook = self
            .store
            .get_webhook(&new.id)
            .await?
            .ok_or_else(|| WebhookError::UnknownWebhook(new.id.clone()))?;
        Ok(WebhookCreated {
            webhook,
            secret: new.secret,
        })
    }

    /// The webhook, or `UnknownWebhook`.
    pub async fn webhook(&self, id: &str) -> Result<WebhookRecord, WebhookError> {
        self.store
            .get_webhook(id)
            .await?
            .ok_or_else(|| WebhookError::UnknownWebhook(id.to_owned()))
    }

    /// Disables a webhook; its pending deliveries are given up. Removing one twice is fine.
    pub async fn remove_webhook(
        &self,
        id: &str,
        actor: &str,
    ) -> Result<WebhookRecord, WebhookError> {
        self.webhook(id).await?;
        if self.store.disable_webhook(id, actor, now_ms()).await? {
            self.events.webhooks_changed();
            tracing::info!(webhook_id = id, by = actor, "webhook removed");
        }
        self.webhook(id).await
    }

    /// Queues a `webhook.test` event for this webhook alone; returns the delivery id.
    pub async fn test_webhook(&self, id: &str, actor: &str) -> Result<String, WebhookError> {
        let webhook = self.webhook(id).await?;
        if webhook.disabled_at_ms.is_some() {
            return Err(WebhookError::Removed(id.to_owned()));
        }
        let event = Event::new(
            kind::WEBHOOK_TEST,
            format!("test delivery for webhook {}", webhook.name),
            serde_json::json!({ "webhook_id": webhook.id, "name": webhook.name }),
        )
        .actor(actor);
        self.queue_for(&event, std::iter::once(webhook.id.as_str()))
            .await
            .into_iter()
            .next()
            .ok_or_else(|| {
                WebhookError::Store(StoreError::InvalidData {
                    what: "webhook test delivery",
                    detail: "it could not be queued; see the controller log".into(),
                })
            })
    }
}

/// The HTTP client deliveries go out with: the system's trusted CAs and the deployment's own
/// CA, no redirects, [`SEND_TIMEOUT`] per attempt.
fn http_client(controller: &Controller) -> Result<reqwest::Client, String> {
    use rustls_pki_types::{pem::PemObject, CertificateDer};

    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(%error, "cannot load some of the system's trusted CAs for webhooks");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    if ignored > 0 {
        tracing::debug!(added, ignored, "system CAs skipped for webhooks");
    }
    match CertificateDer::from_pem_slice(controller.ca.cert_pem().as_bytes()) {
        Ok(ca) => {
            if let Err(e) = roots.add(ca) {
                tracing::warn!(error = %e, "cannot trust the deployment CA for webhooks");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the deployment CA for webhooks"),
    }
    let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(SEND_TIMEOUT)
        .timeout(SEND_TIMEOUT)
        .user_agent(concat!("cordon-controller/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// Delivers the outbox until `shutdown`: claims what is due, sends it, records each attempt,
/// and sleeps until the next one is due or new deliveries are queued.
pub async fn run_worker(controller: Shared, shutdown: CancellationToken) {
    deliver_until(&controller, &shutdown).await;
}

async fn deliver_until(controller: &Shared, shutdown: &CancellationToken) {
    let http = match http_client(controller) {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = %e, "webhook deliveries disabled: cannot build the HTTP client");
            shutdown.cancelled().await;
            return;
        }
    };
    let mut last_prune: Option<tokio::time::Instant> = None;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let now = now_ms();
        let lease_until = now.saturating_add(i64::try_from(LEASE.as_millis()).unwrap_or(60_000));
        match controller
            .store
            .claim_due_deliveries(now, lease_until, BATCH)
            .await
        {
            Ok(batch) if !batch.is_empty() => {
                let full = i64::try_from(batch.len()).unwrap_or(BATCH) >= BATCH;
                send_batch(controller, &http, batch, lease_until, shutdown).await;
                if full {
                    // More may be due already.
                    continue;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read due webhook deliveries"),
        }
        if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_INTERVAL) {
            last_prune = Some(tokio::time::Instant::now());
            let before = now_ms().saturating_sub(i64::try_from(RETENTION.as_millis()).unwrap_or(0));
            match controller.store.prune_deliveries(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "old webhook deliveries deleted"),
                Err(e) => tracing::warn!(error = %e, "cannot delete old webhook deliveries"),
            }
        }
        let wait = match controller.store.next_delivery_due().await {
            Ok(Some(due)) => {
                Duration::from_millis(u64::try_from(due.saturating_sub(now_ms())).unwrap_or(0))
                    .min(IDLE_POLL)
            }
            Ok(None) => IDLE_POLL,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read when the next webhook delivery is due");
                IDLE_POLL
            }
        };
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = controller.events.queued.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Sends claimed deliveries, a few at a time. On shutdown the ones not finished are released
/// (due at once) for the next start, rather than waiting out their lease.
async fn send_batch(
    controller: &Controller,
    http: &reqwest::Client,
    batch: Vec<ClaimedDelivery>,
    lease_until: i64,
    shutdown: &CancellationToken,
) {
    let ids: Vec<String> = batch.iter().map(|d| d.id.clone()).collect();
    let done = std::sync::Mutex::new(Vec::<String>::new());
    let sends = futures_util::stream::iter(batch).for_each_concurrent(CONCURRENCY, |delivery| {
        let done = &done;
        async move {
            deliver(controller, http, &delivery).await;
            if let Ok(mut done) = done.lock() {
                done.push(delivery.id);
            }
        }
    });
    tokio::select! {
        _ = sends => return,
        _ = shutdown.cancelled() => {}
    }
    let done = done.into_inner().unwrap_or_default();
    for id in ids.iter().filter(|id| !done.contains(id)) {
        if let Err(e) = controller
            .store
            .release_delivery(id, lease_until, now_ms())
            .await
        {
            tracing::debug!(delivery_id = %id, error = %e, "cannot release webhook delivery at shutdown");
        }
    }
}

/// One attempt at one delivery, recorded.
async fn deliver(controller: &Controller, http: &reqwest::Client, delivery: &ClaimedDelivery) {
    let attempt = delivery.attempts.saturating_add(1);
    let outcome = match send(http, delivery).await {
        Ok(status) => AttemptOutcome::Delivered { status },
        Err((status, error)) if attempt >= MAX_ATTEMPTS => {
            tracing::warn!(delivery_id = %delivery.id, webhook_id = %delivery.webhook_id, kind = %delivery.event_kind, attempt, %error, "webhook delivery failed; giving up");
            AttemptOutcome::Failed { status, error }
        }
        Err((status, error)) => {
            let wait = backoff(controller.events.retry_base(), attempt);
            tracing::info!(delivery_id = %delivery.id, webhook_id = %delivery.webhook_id, kind = %delivery.event_kind, attempt, %error, retry_in_ms = wait.as_millis() as u64, "webhook delivery failed; will retry");
            AttemptOutcome::Retry {
                status,
                error,
                next_attempt_at_ms: now_ms()
                    .saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)),
            }
        }
    };
    if let AttemptOutcome::Delivered { status } = outcome {
        tracing::debug!(delivery_id = %delivery.id, webhook_id = %delivery.webhook_id, kind = %delivery.event_kind, attempt, status, "webhook delivered");
    }
    if let Err(e) = controller
        .store
        .record_delivery_attempt(&delivery.id, &outcome, now_ms())
        .await
    {
        // The lease runs out and the delivery is tried again: at least once.
        tracing::warn!(delivery_id = %delivery.id, error = %e, "cannot record webhook delivery attempt");
    }
}

/// Posts the delivery, signed now: the 2xx status, or the status (if any) and why it failed.
async fn send(
    http: &reqwest::Client,
    delivery: &ClaimedDelivery,
) -> Result<i64, (Option<i64>, String)> {
    let timestamp = now_ms() / 1000;
    let response = http
        .post(&delivery.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Cordon-Event", &delivery.event_kind)
        .header("X-Cordon-Delivery", &delivery.id)
        .header("X-Cordon-Timestamp", timestamp.to_string())
        .header(
            "X-Cordon-Signature",
            signature(&delivery.secret, timestamp, &delivery.body),
        )
        .body(delivery.body.clone())
        .send()
        .await
        // Without the URL: it may carry a token.
        .map_err(|e| (None, bounded(&error_chain(&e.without_url()))))?;
    let status = response.status();
    let code = i64::from(status.as_u16());
    if status.is_success() {
        return Ok(code);
    }
    // A little of what the receiver said helps whoever reads the delivery's status.
    let mut response = response;
    let said = match response.chunk().await {
        Ok(Some(chunk)) => String::from_utf8_lossy(&chunk[..chunk.len().min(MAX_ERROR_CHARS)])
            .trim()
            .to_owned(),
        _ => String::new(),
    };
    let error = if said.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {said}")
    };
    Err((Some(code), bounded(&error)))
}

fn bounded(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(MAX_ERROR_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_dot_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let sig = signature("Jefe", 0, "what do ya want for nothing?");
        // The signed text is "0.what do ya want for nothing?", so it differs from the RFC
        // vector; check the scheme against a direct computation instead.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"0.what do ya want for nothing?");
        assert_eq!(
            sig,
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        );
        // And the HMAC itself against the RFC vector.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_ne!(sig, signature("Jefe", 1, "what do ya want for nothing?"));
    }

    #[test]
    fn urls_must_be_http_or_https_with_a_host() {
        assert!(check_url("https://hooks.example.com/x?y=1").is_ok());
        assert!(check_url("http://127.0.0.1:8080/hook").is_ok());
        assert!(check_url("http://[::1]:8080/hook").is_ok());
        assert!(check_url("http://localhost/hook").is_ok());
        assert!(check_url("https://soar.example.org/hook").is_ok());
        for bad in [
            "http://soar.example.org/hook",
            "http://10.0.0.5/hook",
            "http://127.0.0.1.example.org/hook",
            "ftp://example.com/",
            "example.com/hook",
            "https://",
            "file:///etc/passwd",
            "",
        ] {
            let err = check_url(bad).unwrap_err();
            assert!(err.to_string().starts_with("url: "), "{bad}: {err}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let base = Duration::from_secs(1);
        assert_eq!(backoff(base, 1), Duration::from_secs(1));
        assert_eq!(backoff(base, 2), Duration::from_secs(2));
        assert_eq!(backoff(base, 3), Duration::from_secs(4));
        assert_eq!(backoff(base, 7), Duration::from_secs(64));
        assert_eq!(backoff(base, 9), Duration::from_secs(256));
        assert_eq!(backoff(base, 10), MAX_BACKOFF);
        assert_eq!(backoff(base, i64::MAX), MAX_BACKOFF);
    }

    #[test]
    fn requests_are_checked_and_secrets_generated() {
        assert_eq!(check_events(None).unwrap(), ["*"]);
        assert_eq!(
            check_events(Some(vec!["incident.*".into(), " incident.* ".into()])).unwrap(),
            ["incident.*"]
        );
        assert!(check_events(Some(vec![])).is_err());
        assert!(check_events(Some(vec!["Incident".into()])).is_err());
        let generated = check_secret(None).unwrap();
        assert_eq!(generated.len(), 64);
        assert!(check_secret(Some("short".into())).is_err());
        assert!(check_secret(Some("has a space in it, see".into())).is_err());
        assert!(check_name(" ").is_err());
        let request = CreateWebhook {
            name: "n".into(),
            url: "https://x".into(),
            events: None,
            secret: Some("very-secret-value-123".into()),
        };
        assert!(!format!("{request:?}").contains("very-secret"));
    }
}
