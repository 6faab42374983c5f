//! Outgoing webhooks and the live event stream end to end, with a real controller: incident changes
//! (opened, assigned, escalated, moved, closed) reach a webhook receiver on 127.0.0.1 as POSTs
//! whose HMAC-SHA256 signature checks out under the secret shown once at creation (checked here
//! with an HMAC written independently of the controller's); a receiver that fails twice gets the
//! same delivery a third time and the API shows it delivered after 3 attempts; a delivery pending
//! when the controller stops is delivered after it starts again; one that keeps failing is given up
//! after 8 attempts; a removed webhook gets nothing more; `GET /api/v1/events` streams
//! `incident.created` to a viewer as server-sent events, and a real agent's finished task reaches
//! both as `task.done`; only admins manage webhooks; and the `cordon webhooks …` and `cordon
//! events` commands do the same through the CLI.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    process::Stdio,
    sync::{
        atomic::{AtomicU16, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use cordon_api::{
    incidents::IncidentView,
    tokens::ApiTokenCreated,
    webhooks::{TestQueued, WebhookCreated},
};
use cordon_controller::store::webhooks::{DeliveryRecord, DeliveryState, WebhookRecord};
use cordon_tests::{ok, text, Deployment, PgSchema};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::mpsc,
};

/// Retry base for these tests, so retries take milliseconds.
const FAST_RETRY: Duration = Duration::from_millis(50);
/// How long a test waits for something that should happen soon.
const PATIENCE: Duration = Duration::from_secs(15);

/// HMAC-SHA256 (RFC 2104), written here rather than taken from the controller, so the test
/// checks the signature scheme, not the controller against itself.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|k| k ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

#[test]
fn the_test_hmac_matches_rfc_4231() {
    assert_eq!(
        hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

/// One POST the receiver took.
#[derive(Debug, Clone)]
struct Received {
    /// Header names in lower case.
    headers: HashMap<String, String>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    /// Asserts the signature is HMAC-SHA256(secret, "<timestamp>.<body>") and the timestamp
    /// is recent; returns the body as JSON.
    fn verified(&self, secret: &str) -> Value {
        let timestamp = self.header("x-cordon-timestamp");
        let expected = format!(
            "sha256={}",
            hex::encode(hmac_sha256(
                secret.as_bytes(),
                format!("{timestamp}.{}", self.body).as_bytes()
            ))
        );
        assert_eq!(self.header("x-cordon-signature"), expected, "{self:?}");
        let at: i64 = timestamp.parse().expect("numeric timestamp");
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap();
        assert!((now - at).abs() < 60, "timestamp {at} vs now {now}");
        assert_eq!(self.header("content-type"), "application/json");
        let body: Value = serde_json::from_str(&self.body).expect("JSON body");
        assert_eq!(body["kind"], self.header("x-cordon-event"), "{self:?}");
        body
    }
}

/// A tiny HTTP/1.1 webhook receiver on 127.0.0.1: answers each POST with the next queued
/// status (then `default_status`) and passes what it got to the test.
struct Receiver {
    addr: SocketAddr,
    requests: mpsc::UnboundedReceiver<Received>,
    queued: Arc<Mutex<VecDeque<u16>>>,
    default_status: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(queued: &[u16], default_status: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, requests) = mpsc::unbounded_channel();
        let queued = Arc::new(Mutex::new(queued.iter().copied().collect::<VecDeque<_>>()));
        let default_status = Arc::new(AtomicU16::new(default_status));
        let (q, d) = (queued.clone(), default_status.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (tx, q, d) = (tx.clone(), q.clone(), d.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, tx, q, d).await;
                });
            }
        });
        Self {
            addr,
            requests,
            queued,
            default_status,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    async fn next(&mut self) -> Received {
        tokio::time::timeout(PATIENCE, self.requests.recv())
            .await
            .expect("a delivery within the patience")
            .expect("receiver running")
    }

    /// Asserts nothing arrives for a while.
    async fn quiet_for(&mut self, wait: Duration) {
        if let Ok(Some(got)) = tokio::time::timeout(wait, self.requests.recv()).await {
            panic!("unexpected delivery: {got:?}");
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: tokio::net::TcpStream,
    tx: mpsc::UnboundedSender<Received>,
    queued: Arc<Mutex<VecDeque<u16>>>,
    default_status: Arc<AtomicU16>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        assert!(buf.len() < 64 * 1024, "request head too large");
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    assert!(request_line.starts_with("POST /hook "), "{request_line}");
    let status = queued
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| default_status.load(Ordering::SeqCst));
    let _ = tx.send(Received {
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let answer = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: 6\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nstatus"
    );
    stream.write_all(answer.as_bytes()).await?;
    stream.shutdown().await
}

/// An API token with `role`.
async fn token(deployment: &Deployment, role: &str) -> String {
    let created: ApiTokenCreated = deployment
        .api()
        .post_json(
            "/api/v1/api-tokens",
            json!({ "name": format!("{role}-user"), "role": role }),
        )
        .await
        .expect("admin creates tokens");
    created.token
}

async fn add_webhook(deployment: &Deployment, url: &str, events: &[&str]) -> WebhookCreated {
    deployment
        .api()
        .post_json(
            "/api/v1/webhooks",
            json!({ "name": "receiver", "url": url, "events": events }),
        )
        .await
        .expect("admin adds a webhook")
}

async fn open_incident(deployment: &Deployment, title: &str) -> IncidentView {
    deployment
        .api()
        .post_json(
            "/api/v1/incidents",
            json!({ "title": title, "kind": "malware" }),
        )
        .await
        .expect("incident created")
}

async fn deliveries(deployment: &Deployment, webhook_id: &str) -> Vec<DeliveryRecord> {
    deployment
        .api()
        .get_json(&format!("/api/v1/webhooks/{webhook_id}/deliveries"))
        .await
        .expect("deliveries")
}

/// Waits until the webhook's delivery of `kind` is no longer pending; returns it.
async fn settled(deployment: &Deployment, webhook_id: &str, kind: &str) -> DeliveryRecord {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let found = deliveries(deployment, webhook_id)
            .await
            .into_iter()
            .find(|d| d.event_kind == kind);
        if let Some(d) = found.filter(|d| d.state != DeliveryState::Pending) {
            return d;
        }
        assert!(Instant::now() < deadline, "{kind} still pending");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `n` live consumers are subscribed.
async fn consumers(deployment: &Deployment, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    while deployment.controller().events.live_consumers() < n {
        assert!(Instant::now() < deadline, "no live consumer subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One server-sent event.
#[derive(Debug, Default, Clone)]
struct Sse {
    id: String,
    event: String,
    data: String,
}

/// Opens `GET /api/v1/events{query}` with `token`; events arrive on the channel. Returns the
/// HTTP status when the stream is refused.
async fn open_events(
    deployment: &Deployment,
    token: &str,
    query: &str,
) -> Result<mpsc::UnboundedReceiver<Sse>, (u16, Value)> {
    open_events_after(deployment, token, query, None).await
}

/// [`open_events`], resuming after the event `last_event_id` when given.
async fn open_events_after(
    deployment: &Deployment,
    token: &str,
    query: &str,
    last_event_id: Option<&str>,
) -> Result<mpsc::UnboundedReceiver<Sse>, (u16, Value)> {
    use rustls_pki_types::{pem::PemObject, CertificateDer};
    let ca = CertificateDer::from_pem_file(deployment.ca_cert_path()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(cordon_controller::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .unwrap();
    let mut request = http
        .get(format!("{}/api/v1/events{query}", deployment.api_url()))
        .bearer_auth(token);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    let mut response = request.send().await.expect("events request");
    if !response.status().is_success() {
        let status = response.status().as_u16();
        return Err((status, response.json().await.unwrap_or(Value::Null)));
    }
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut text = String::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                let mut sse = Sse::default();
                for line in block.lines() {
                    match line.split_once(':') {
                        Some(("id", v)) => sse.id = v.trim().to_owned(),
                        Some(("event", v)) => sse.event = v.trim().to_owned(),
                        Some(("data", v)) => sse.data.push_str(v.trim_start()),
                        _ => {}
                    }
                }
                if !sse.event.is_empty() && tx.send(sse).is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

async fn next_sse(events: &mut mpsc::UnboundedReceiver<Sse>) -> Sse {
    tokio::time::timeout(PATIENCE, events.recv())
        .await
        .expect("an event within the patience")
        .expect("stream open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_changes_reach_a_signed_webhook_and_the_live_stream() {
    let deployment = Deployment::start().await;
    deployment.controller().events.set_retry_base(FAST_RETRY);
    let admin = deployment.api();
    let viewer_token = token(&deployment, "viewer").await;
    let viewer = admin.with_token(&viewer_token);

    // A viewer follows incident events live.
    let mut live = open_events(&deployment, &viewer_token, "?kinds=incident.*")
        .await
        .expect("viewers may follow events");
    consumers(&deployment, 1).await;
    let (status, body) = open_events(&deployment, &viewer_token, "?kinds=Not%20A%20Kind")
        .await
        .expect_err("a bad pattern is refused");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().starts_with("kinds:"),
        "{body}"
    );

    // Only admins manage webhooks; bad fields are named.
    let mut receiver = Receiver::start(&[], 200).await;
    let refused = viewer
        .post_json::<Value>(
            "/api/v1/webhooks",
            json!({ "name": "x", "url": receiver.url() }),
        )
        .await
        .expect_err("viewers may not add webhooks");
    assert_eq!(refused.status, 403, "{:?}", refused.body);
    let refused = viewer
        .get_json::<Value>("/api/v1/webhooks")
        .await
        .expect_err("viewers may not list webhooks");
    assert_eq!(refused.status, 403);
    for (body, field) in [
        (
            json!({ "name": "x", "url": "ftp://127.0.0.1/hook" }),
            "url:",
        ),
        (json!({ "name": "x", "url": "not a url" }), "url:"),
        // Events must not cross a network in clear text.
        (
            json!({ "name": "x", "url": "http://soar.example.org/hook" }),
            "url: plain http",
        ),
        (
            json!({ "name": "x", "url": receiver.url(), "events": ["Incident"] }),
            "events:",
        ),
        (
            json!({ "name": "x", "url": receiver.url(), "secret": "short" }),
            "secret:",
        ),
    ] {
        let failure = admin
            .post_json::<Value>("/api/v1/webhooks", body.clone())
            .await
            .expect_err("refused");
        assert_eq!(failure.status, 400, "{body}: {:?}", failure.body);
        assert!(
            failure.body["detail"].as_str().unwrap().starts_with(field),
            "{body}: {:?}",
            failure.body
        );
    }

    let created = add_webhook(&deployment, &receiver.url(), &["incident.*"]).await;
    assert_eq!(created.secret.len(), 64);
    assert_eq!(created.webhook.events, ["incident.*"]);
    // The secret is shown once: never by a read.
    let listed: Value = admin.get_json("/api/v1/webhooks").await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(!listed.to_string().contains(&created.secret));
    assert!(listed[0].get("secret").is_none(), "{listed}");
    let shown: Value = admin
        .get_json(&format!("/api/v1/webhooks/{}", created.webhook.id))
        .await
        .unwrap();
    assert!(!shown.to_string().contains(&created.secret));
    // Audited like every change, naming the receiver's host, never the secret.
    let audit: Value = admin.get_json("/api/v1/audit?limit=1000").await.unwrap();
    assert!(!audit.to_string().contains(&created.secret));
    let added = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["action"] == "POST /api/v1/webhooks" && e["target"] == created.webhook.id.as_str()
        })
        .expect("the addition is audited");
    assert_eq!(added["detail"]["host"], "127.0.0.1", "{added}");

    // Opening, moving and closing an incident: four signed deliveries.
    let incident = open_incident(&deployment, "webhook test").await;
    let id = incident.incident.id.clone();
    let sse = next_sse(&mut live).await;
    assert_eq!(sse.event, "incident.created");
    let data: Value = serde_json::from_str(&sse.data).unwrap();
    assert_eq!(data["incident_id"], id.as_str());
    assert_eq!(data["id"], sse.id.as_str());
    assert_eq!(data["data"]["incident"]["title"], "webhook test");

    let _: IncidentView = admin
        .post_json(
            &format!("/api/v1/incidents/{id}/assign"),
            json!({ "assignee": "alice" }),
        )
        .await
        .unwrap();
    let _: IncidentView = admin
        .post_json(
            &format!("/api/v1/incidents/{id}/escalate"),
            json!({ "tier": 2, "to": "forensics", "reason": "needs disk images" }),
        )
        .await
        .unwrap();
    let _: IncidentView = admin
        .post_json(
            &format!("/api/v1/incidents/{id}/stage"),
            json!({ "stage": "assessment" }),
        )
        .await
        .unwrap();
    let _: IncidentView = admin
        .post_json(
            &format!("/api/v1/incidents/{id}/stage"),
            json!({ "stage": "false_positive", "reason": "test" }),
        )
        .await
        .unwrap();
    let mut kinds = Vec::new();
    let mut delivery_ids = Vec::new();
    for _ in 0..6 {
        let got = receiver.next().await;
        let body = got.verified(&created.secret);
        assert_eq!(body["incident_id"], id.as_str(), "{body}");
        kinds.push(got.header("x-cordon-event").to_owned());
        delivery_ids.push(got.header("x-cordon-delivery").to_owned());
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "incident.assigned",
            "incident.closed",
            "incident.created",
            "incident.escalated",
            "incident.stage_changed",
            "incident.stage_changed"
        ]
    );
    let assigned = next_sse(&mut live).await;
    assert_eq!(assigned.event, "incident.assigned");
    let data: Value = serde_json::from_str(&assigned.data).unwrap();
    assert_eq!(data["data"]["detail"]["assignee"], "alice", "{data}");
    let escalated = next_sse(&mut live).await;
    assert_eq!(escalated.event, "incident.escalated");
    let data: Value = serde_json::from_str(&escalated.data).unwrap();
    assert_eq!(data["data"]["incident"]["tier"], 2, "{data}");
    assert_eq!(
        data["data"]["incident"]["escalated_to"], "forensics",
        "{data}"
    );
    for expected in [
        "incident.stage_changed",
        "incident.stage_changed",
        "incident.closed",
    ] {
        assert_eq!(next_sse(&mut live).await.event, expected);
    }

    // The API shows each delivered at the first attempt.
    for kind in ["incident.created", "incident.closed"] {
        let delivery = settled(&deployment, &created.webhook.id, kind).await;
        assert_eq!(delivery.state, DeliveryState::Delivered, "{delivery:?}");
        assert_eq!(delivery.attempts, 1);
        assert_eq!(delivery.last_status, Some(200));
        assert!(delivery_ids.contains(&delivery.id), "{delivery:?}");
    }

    // A test delivery goes to this webhook whatever its filter.
    let queued: TestQueued = admin
        .post_json(
            &format!("/api/v1/webhooks/{}/test", created.webhook.id),
            json!({}),
        )
        .await
        .unwrap();
    let got = receiver.next().await;
    assert_eq!(got.header("x-cordon-event"), "webhook.test");
    assert_eq!(got.header("x-cordon-delivery"), queued.delivery_id);
    got.verified(&created.secret);

    // Removed: no more deliveries.
    let removed: WebhookRecord = admin
        .delete_json(&format!("/api/v1/webhooks/{}", created.webhook.id))
        .await
        .unwrap();
    assert!(removed.disabled_at_ms.is_some());
    let _: IncidentView = admin
        .post_json(
            &format!("/api/v1/incidents/{id}/comments"),
            json!({ "text": "after removal" }),
        )
        .await
        .unwrap();
    assert_eq!(next_sse(&mut live).await.event, "incident.comment");
    receiver.quiet_for(Duration::from_millis(500)).await;

    // An alert opens an incident (`incident.created`, with the alert), its repeat joins it.
    let alert = json!({ "title": "seen by the SIEM", "kind": "c2", "fingerprint": "fp-events" });
    let opened: Value = admin
        .post_json("/api/v1/alerts", alert.clone())
        .await
        .unwrap();
    let sse = next_sse(&mut live).await;
    assert_eq!(sse.event, "incident.created");
    let data: Value = serde_json::from_str(&sse.data).unwrap();
    assert_eq!(data["incident_id"], opened["incident_id"]);
    assert_eq!(
        data["data"]["detail"]["alert"]["source"], "generic",
        "{data}"
    );
    let _: Value = admin.post_json("/api/v1/alerts", alert).await.unwrap();
    let sse = next_sse(&mut live).await;
    assert_eq!(sse.event, "incident.alert_joined");
    let data: Value = serde_json::from_str(&sse.data).unwrap();
    assert_eq!(data["incident_id"], opened["incident_id"]);
    assert_eq!(data["data"]["incident"]["alert_count"], 2, "{data}");
    let all: Vec<WebhookRecord> = admin.get_json("/api/v1/webhooks?all=true").await.unwrap();
    assert_eq!(all.len(), 1);
    let enabled: Vec<WebhookRecord> = admin.get_json("/api/v1/webhooks").await.unwrap();
    assert!(enabled.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_retried_resumed_after_a_restart_and_given_up() {
    let mut deployment = Deployment::start().await;
    retried_resumed_and_given_up(&mut deployment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_retried_resumed_and_given_up_on_postgres() {
    let test = "failed_deliveries_are_retried_resumed_and_given_up_on_postgres";
    let Some(schema) = PgSchema::create(test).await else {
        return;
    };
    let mut deployment = Deployment::start_with_database(Some(schema.url())).await;
    retried_resumed_and_given_up(&mut deployment).await;
    deployment.stop_controller().await;
    schema.drop().await;
}

async fn retried_resumed_and_given_up(deployment: &mut Deployment) {
    deployment.controller().events.set_retry_base(FAST_RETRY);

    // 500, 500, then 200: delivered at the third attempt, the same delivery each time.
    let mut receiver = Receiver::start(&[500, 500], 200).await;
    let created = add_webhook(deployment, &receiver.url(), &["incident.created"]).await;
    let incident = open_incident(deployment, "retried").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let got = receiver.next().await;
        let body = got.verified(&created.secret);
        assert_eq!(body["incident_id"], incident.incident.id.as_str());
        ids.push(got.header("x-cordon-delivery").to_owned());
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let delivery = settled(deployment, &created.webhook.id, "incident.created").await;
    assert_eq!(delivery.state, DeliveryState::Delivered, "{delivery:?}");
    assert_eq!(delivery.attempts, 3);
    assert_eq!(delivery.last_status, Some(200));
    assert_eq!(delivery.last_error, None);
    assert_eq!(delivery.id, ids[0]);

    // Failing when the controller stops: delivered once it is back.
    receiver.default_status.store(503, Ordering::SeqCst);
    let second = open_incident(deployment, "across a restart").await;
    let first_try = receiver.next().await;
    first_try.verified(&created.secret);
    let deadline = Instant::now() + PATIENCE;
    let pending = loop {
        let found = deliveries(deployment, &created.webhook.id)
            .await
            .into_iter()
            .find(|d| d.event_id != delivery.event_id && d.attempts >= 1);
        if let Some(d) = found {
            break d;
        }
        assert!(Instant::now() < deadline, "no failed attempt recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(pending.last_status, Some(503));
    assert!(
        pending.last_error.as_deref().unwrap_or("").contains("503"),
        "{pending:?}"
    );
    deployment.stop_controller().await;
    receiver.queued.lock().unwrap().clear();
    receiver.default_status.store(200, Ordering::SeqCst);
    while receiver.requests.try_recv().is_ok() {}
    deployment.start_controller().await;
    deployment.controller().events.set_retry_base(FAST_RETRY);
    let resumed = loop {
        let got = receiver.next().await;
        if got.header("x-cordon-delivery") == pending.id {
            break got;
        }
    };
    let body = resumed.verified(&created.secret);
    assert_eq!(body["incident_id"], second.incident.id.as_str());
    let deadline = Instant::now() + PATIENCE;
    loop {
        let all = deliveries(deployment, &created.webhook.id).await;
        let d = all.iter().find(|d| d.id == pending.id).expect("delivery");
        if d.state == DeliveryState::Delivered {
            assert!(d.attempts >= 2, "{d:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not delivered after restart: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Always failing: given up after 8 attempts, with the last answer kept.
    deployment
        .controller()
        .events
        .set_retry_base(Duration::from_millis(10));
    let mut failing = Receiver::start(&[], 500).await;
    let doomed = add_webhook(deployment, &failing.url(), &["incident.comment"]).await;
    let _: IncidentView = deployment
        .api()
        .post_json(
            &format!("/api/v1/incidents/{}/comments", second.incident.id),
            json!({ "text": "nobody will hear this" }),
        )
        .await
        .unwrap();
    let given_up = settled(deployment, &doomed.webhook.id, "incident.comment").await;
    assert_eq!(given_up.state, DeliveryState::Failed, "{given_up:?}");
    assert_eq!(given_up.attempts, 8);
    assert_eq!(given_up.last_status, Some(500));
    assert!(
        given_up.last_error.as_deref().unwrap_or("").contains("500"),
        "{given_up:?}"
    );
    for _ in 0..8 {
        failing.next().await.verified(&doomed.secret);
    }
    failing.quiet_for(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_webhooks_and_follows_events() {
    let deployment = Deployment::start().await;
    deployment.controller().events.set_retry_base(FAST_RETRY);
    let admin = deployment.admin_token.clone();
    let mut receiver = Receiver::start(&[], 204).await;
    let url = receiver.url();

    let added = ok(&deployment
        .run_cli_as(
            &admin,
            &[
                "webhooks",
                "add",
                "--name",
                "soar",
                &url,
                "--event",
                "incident.*",
                "--json",
            ],
        )
        .await);
    let created: WebhookCreated = serde_json::from_str(&added).expect("JSON");
    assert_eq!(created.webhook.name, "soar");
    let listed = ok(&deployment.run_cli_as(&admin, &["webhooks", "list"]).await);
    assert!(
        listed.contains("soar") && listed.contains("incident.*"),
        "{listed}"
    );
    assert!(!listed.contains(&created.secret), "{listed}");

    // `cordon events --count 1` prints the first event and exits.
    let follower = {
        let mut command = deployment.cli_command(&admin);
        command
            .args(["events", "--kinds", "incident.*", "--count", "1", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = command.spawn().expect("spawn cordon events");
        tokio::task::spawn_blocking(move || child.wait_with_output().expect("cordon events"))
    };
    consumers(&deployment, 1).await;
    let incident = open_incident(&deployment, "seen by the CLI").await;
    let followed = tokio::time::timeout(PATIENCE, follower)
        .await
        .expect("cordon events exits after one event")
        .unwrap();
    let line = ok(&followed);
    let event: Value = serde_json::from_str(line.trim()).expect("one JSON event");
    assert_eq!(event["kind"], "incident.created");
    assert_eq!(event["incident_id"], incident.incident.id.as_str());

    receiver.next().await.verified(&created.secret);
    settled(&deployment, &created.webhook.id, "incident.created").await;
    let shown = ok(&deployment
        .run_cli_as(&admin, &["webhooks", "deliveries", &created.webhook.id])
        .await);
    assert!(
        shown.contains("incident.created") && shown.contains("delivered") && shown.contains("204"),
        "{shown}"
    );

    let tested = ok(&deployment
        .run_cli_as(&admin, &["webhooks", "test", &created.webhook.id])
        .await);
    assert!(tested.contains("queued"), "{tested}");
    assert_eq!(
        receiver.next().await.header("x-cordon-event"),
        "webhook.test"
    );

    // Only admins: a viewer is refused with exit code 3.
    let viewer = token(&deployment, "viewer").await;
    let refused = deployment
        .run_cli_as(&viewer, &["webhooks", "add", "--name", "x", &url])
        .await;
    assert_eq!(refused.status.code(), Some(3), "{refused:?}");
    // A bad URL is a usage error naming the field.
    let bad = deployment
        .run_cli_as(&admin, &["webhooks", "add", "--name", "x", "gopher://h/"])
        .await;
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(text(&bad.stderr).contains("url:"), "{bad:?}");

    let removed = ok(&deployment
        .run_cli_as(&admin, &["webhooks", "remove", &created.webhook.id])
        .await);
    assert!(removed.contains("removed"), "{removed}");
    let listed = ok(&deployment.run_cli_as(&admin, &["webhooks", "list"]).await);
    assert!(!listed.contains("soar"), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_ends_reach_webhooks_and_the_live_stream() {
    let deployment = Deployment::start().await;
    deployment.controller().events.set_retry_base(FAST_RETRY);
    let mut receiver = Receiver::start(&[], 200).await;
    let created = add_webhook(&deployment, &receiver.url(), &["task.*"]).await;
    let mut agent = deployment.enroll_agent().await;
    agent.start();
    deployment
        .wait_for_status(&agent.id, cordon_api::agents::AgentStatus::Online)
        .await;
    let mut live = open_events(&deployment, &deployment.admin_token, "?kinds=task.done")
        .await
        .expect("admins may follow events");
    consumers(&deployment, 1).await;

    let task = deployment
        .run_task(&agent.id, json!({ "type": "ping" }))
        .await;
    let sse = next_sse(&mut live).await;
    assert_eq!(sse.event, "task.done");
    let event: Value = serde_json::from_str(&sse.data).unwrap();
    assert_eq!(event["task_id"], task.id.as_str());
    assert_eq!(event["agent_id"], agent.id.as_str());
    assert_eq!(event["data"]["kind"], "ping");

    let got = receiver.next().await;
    assert_eq!(got.header("x-cordon-event"), "task.done");
    let body = got.verified(&created.secret);
    assert_eq!(body["task_id"], task.id.as_str());
    agent.stop().await;
}

/// The incident an `incident.created` event is about.
fn incident_of(sse: &Sse) -> String {
    assert_eq!(sse.event, "incident.created", "{sse:?}");
    let event: Value = serde_json::from_str(&sse.data).expect("event JSON");
    event["incident_id"]
        .as_str()
        .expect("incident id")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_consumer_that_reconnects_gets_what_it_missed_once() {
    let deployment = Deployment::start().await;
    let admin = deployment.admin_token.clone();
    let query = "?kinds=incident.created";
    let mut live = open_events(&deployment, &admin, query)
        .await
        .expect("stream");
    consumers(&deployment, 1).await;
    let first = open_incident(&deployment, "before the break").await;
    let seen = next_sse(&mut live).await;
    assert_eq!(incident_of(&seen), first.incident.id);
    assert!(!seen.id.is_empty(), "events carry an id to resume from");
    drop(live);

    // Published while the consumer is away.
    let mut missed = Vec::new();
    for title in ["while away 1", "while away 2"] {
        missed.push(open_incident(&deployment, title).await.incident.id);
    }

    // Back with Last-Event-ID: what it missed, in order, then live events, nothing twice.
    let mut resumed = open_events_after(&deployment, &admin, query, Some(&seen.id))
        .await
        .expect("resumed stream");
    for expected in &missed {
        assert_eq!(&incident_of(&next_sse(&mut resumed).await), expected);
    }
    let later = open_incident(&deployment, "after the return").await;
    assert_eq!(
        incident_of(&next_sse(&mut resumed).await),
        later.incident.id
    );
    quiet(&mut resumed).await;

    // A resume point that is not kept is said to be so, with no id to resume from.
    let mut stale = open_events_after(&deployment, &admin, query, Some("no-such-event"))
        .await
        .expect("stream");
    let note = next_sse(&mut stale).await;
    assert_eq!(note.event, "events.lagged", "{note:?}");
    assert!(note.id.is_empty(), "{note:?}");
    assert!(note.data.contains("no-such-event"), "{note:?}");
}

/// Nothing more arrives on `events` for a while.
async fn quiet(events: &mut mpsc::UnboundedReceiver<Sse>) {
    if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_millis(300), events.recv()).await {
        panic!("an event arrived twice or unasked: {extra:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_events_reconnects_after_a_controller_restart() {
    let mut deployment = Deployment::start().await;
    let admin = deployment.admin_token.clone();
    let follower = {
        let mut command = deployment.cli_command(&admin);
        command
            .args(["events", "--kinds", "incident.*", "--count", "3", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = command.spawn().expect("spawn cordon events");
        tokio::task::spawn_blocking(move || child.wait_with_output().expect("cordon events"))
    };
    consumers(&deployment, 1).await;
    let before = open_incident(&deployment, "before the restart").await;
    // Let the CLI read it before the controller goes away.
    tokio::time::sleep(Duration::from_millis(300)).await;

    deployment.stop_controller().await;
    deployment.start_controller().await;
    // The CLI reconnects by itself; the new controller kept nothing to resume from.
    consumers(&deployment, 1).await;
    let after = open_incident(&deployment, "after the restart").await;

    let followed = tokio::time::timeout(PATIENCE, follower)
        .await
        .expect("cordon events exits after three events")
        .unwrap();
    let out = ok(&followed);
    let events: Vec<Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON event per line"))
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["incident.created", "events.lagged", "incident.created"],
        "{out}"
    );
    assert_eq!(events[0]["incident_id"], before.incident.id.as_str());
    assert_eq!(events[2]["incident_id"], after.incident.id.as_str());
    assert!(
        text(&followed.stderr).contains("reconnecting"),
        "{}",
        text(&followed.stderr)
    );
    deployment.stop_controller().await;
}
