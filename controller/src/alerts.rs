//! Alert intake: `POST /api/v1/alerts` turns an alert from a SIEM or a script into an
//! incident, or into one more alert on the open incident it repeats.
//!
//! **Formats.** Three mappings, one per file: Cordon's own JSON ([`generic`]), Wazuh alerts as
//! its integrations and active responses send them ([`wazuh`]), and Elastic Security alerts
//! in ECS ([`ecs`]). `?format=` picks one; otherwise it is detected from the body:
//!
//! 1. any `kibana.alert.*` field (dotted or nested), or an Elasticsearch hit (`_source`)
//!    holding one → `ecs`;
//! 2. a `rule` object with a `level` (or an active-response message whose
//!    `parameters.alert` is such an alert) → `wazuh`;
//! 3. a top-level string `title` → `generic`;
//! 4. anything else is refused with 400, saying what was looked for.
//!
//! **Host.** The host the alert names is matched to an enrolled, unrevoked agent
//! ([`host`]): by agent id, then host name (ignoring case; `web-01` and `web-01.corp.example`
//! match each other), then IP address (against the interface addresses agents report). A
//! host that matches no agent, or several that nothing else tells apart, is not guessed at:
//! the alert is still taken and the incident opened without a host, and the alert's
//! timeline entry names the host and why it was not added, for a responder to add the right
//! one (`cordon incidents hosts add`). Dropping a SIEM's alert because Cordon does not know
//! the host yet would lose the one signal that an unprotected host is in trouble.
//!
//! **Fingerprint.** The alert's own (`fingerprint` in the generic format), else SHA-256 over
//! the source (for the generic format with its `source` field), the rule, the host (the
//! matched agent's id, else the name or address given) and the primary indicator — the
//! file's SHA-256, else the file's path, the process's executable or name, or the
//! destination address, whichever comes first. An alert whose fingerprint an open incident
//! holds joins it; otherwise it opens one. Either way the alert row, its timeline entry and
//! the incident change are one transaction ([`crate::store::alerts`]).
//!
//! **The timeline entry** (kind `alert`, actor the caller's token name) is what playbooks
//! read; its detail is exactly [`Alert::timeline_detail`] ([`entry`]). [`intake`] puts it
//! all together.

pub mod ecs;
pub mod entry;
pub mod fields;
pub mod generic;
pub mod host;
pub mod intake;
pub mod wazuh;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    incidents::{IncidentError, Severity},
    store::StoreError,
};
pub use cordon_api::alerts::{Source, MAX_ALERT_BYTES};
pub use entry::{one_line, ENTRY_KIND};
pub use intake::Received;

/// The kind of an alert no mapping recognised.
pub const DEFAULT_KIND: &str = "other";

/// An alert format as a request names it (`?format=`).
pub fn parse_source(s: &str) -> Result<Source, AlertError> {
    s.parse()
        .map_err(|e: cordon_api::alerts::UnknownSource| AlertError::Format(e.to_string()))
}

/// The host an alert names, as it names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertHost {
    /// An agent id the alert gives (a Cordon id matches; others, like Wazuh's `001`, not).
    pub agent_id: Option<String>,
    pub hostname: Option<String>,
    /// Its addresses, canonical text; the first is the one shown.
    pub ips: Vec<String>,
}

impl AlertHost {
    pub(crate) fn is_empty(&self) -> bool {
        self.agent_id.is_none() && self.hostname.is_none() && self.ips.is_empty()
    }

    /// How a person would name it: host name, else address, else agent id.
    pub(crate) fn describe(&self) -> String {
        let mut parts: Vec<&str> = Vec::new();
        parts.extend(self.hostname.as_deref());
        parts.extend(self.ips.first().map(String::as_str));
        if parts.is_empty() {
            parts.extend(self.agent_id.as_deref());
        }
        parts.join(" / ")
    }
}

/// The process an alert is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertProcess {
    pub pid: Option<u32>,
    pub name: Option<String>,
    pub executable: Option<String>,
    pub command_line: Option<String>,
}

/// The file an alert is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertFile {
    pub path: Option<String>,
    pub sha256: Option<String>,
}

/// Where the host connected to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertDestination {
    pub ip: String,
    pub port: Option<u16>,
}

/// An alert as a mapping read it, whatever its format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub source: Source,
    /// The rule that fired: Wazuh's rule id, Elastic's rule name, the generic `rule` (else
    /// its title).
    pub rule: String,
    pub title: String,
    /// `malware`, `c2`, `brute_force`, `ransomware`, … or [`DEFAULT_KIND`].
    pub kind: String,
    pub severity: Severity,
    pub host: AlertHost,
    /// The alert's own fingerprint, if it gave one.
    pub fingerprint: Option<String>,
    pub process: Option<AlertProcess>,
    pub file: Option<AlertFile>,
    pub destination: Option<AlertDestination>,
    pub description: Option<String>,
    pub labels: Vec<String>,
    /// The system that raised it (the generic format's `source`).
    pub origin: Option<String>,
    /// The sender's id for this alert (Wazuh `id`, `kibana.alert.uuid`).
    pub external_id: Option<String>,
}

/// Why an alert was refused.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// A field is missing or of the wrong kind; `field` is its dotted path.
    #[error("{field} {message}")]
    Field { field: String, message: String },
    /// The body as a whole is not an alert (not JSON, not an object, no known format).
    #[error("{0}")]
    Format(String),
    #[error("the alert is {0} bytes; at most {MAX_ALERT_BYTES} are taken")]
    TooLarge(usize),
    #[error(transparent)]
    Incident(#[from] IncidentError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AlertError {
    pub(crate) fn field(field: &str, message: impl Into<String>) -> Self {
        AlertError::Field {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// Reads an alert: `format`, or the one detected, mapped to an [`Alert`].
pub fn parse(body: &[u8], format: Option<Source>) -> Result<Alert, AlertError> {
    if body.len() > MAX_ALERT_BYTES {
        return Err(AlertError::TooLarge(body.len()));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| AlertError::Format(format!("the alert is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(AlertError::Format(
            "the alert must be a JSON object".to_owned(),
        ));
    }
    let source = match format {
        Some(source) => source,
        None => detect(&value)?,
    };
    match source {
        Source::Generic => generic::map(&value),
        Source::Wazuh => wazuh::map(wazuh::unwrap(&value)),
        Source::Ecs => ecs::map(ecs::unwrap(&value)),
    }
}

/// Tells the format from the body (see the module docs for the rules).
pub fn detect(value: &Value) -> Result<Source, AlertError> {
    if ecs::looks_like(ecs::unwrap(value)) {
        Ok(Source::Ecs)
    } else if wazuh::looks_like(wazuh::unwrap(value)) {
        Ok(Source::Wazuh)
    } else if matches!(value.get("title"), Some(Value::String(_))) {
        Ok(Source::Generic)
    } else {
        Err(AlertError::Format(
            "cannot tell the alert's format: expected a Cordon alert (a \"title\"), a Wazuh \
             alert (\"rule\" with a \"level\") or an Elastic Security alert \
             (\"kibana.alert.rule.name\"); or name it with ?format=generic|wazuh|ecs"
                .to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn formats_are_detected_from_the_body() {
        let detect_json = |v: Value| detect(&v).map(Source::as_str).map_err(|e| e.to_string());
        assert_eq!(
            detect_json(json!({"kibana.alert.rule.name": "x"})),
            Ok("ecs")
        );
        assert_eq!(
            detect_json(json!({"kibana": {"alert": {"uuid": "u"}}})),
            Ok("ecs")
        );
        assert_eq!(
            detect_json(json!({"_index": ".alerts-security.alerts-default",
                "_source": {"kibana.alert.rule.name": "x"}})),
            Ok("ecs")
        );
        assert_eq!(
            detect_json(json!({"rule": {"level": 3}, "agent": {"id": "001"}})),
            Ok("wazuh")
        );
        assert_eq!(
            detect_json(json!({"version": 1, "command": "add",
                "parameters": {"alert": {"rule": {"level": 3}}}})),
            Ok("wazuh")
        );
        assert_eq!(detect_json(json!({"title": "t"})), Ok("generic"));
        let err = detect_json(json!({"message": "?"})).unwrap_err();
        assert!(err.contains("?format="), "{err}");
    }

    #[test]
    fn bodies_that_are_not_alerts_are_refused_whole() {
        let err = parse(b"[1,2]", None).unwrap_err();
        assert_eq!(err.to_string(), "the alert must be a JSON object");
        let err = parse(b"{\"title\": ", None).unwrap_err();
        assert!(
            err.to_string().starts_with("the alert is not JSON"),
            "{err}"
        );
        let big = vec![b' '; MAX_ALERT_BYTES + 1];
        assert!(matches!(parse(&big, None), Err(AlertError::TooLarge(_))));
        let err = parse_source("splunk").unwrap_err();
        assert!(err.to_string().contains("generic, wazuh or ecs"), "{err}");
    }
}
