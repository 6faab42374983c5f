//! Alerts: `/api/v1/alerts`, taken in from SIEMs and other sources.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// Largest alert taken, in bytes (the raw payload is stored with it).
pub const MAX_ALERT_BYTES: usize = 256 * 1024;

/// Where an alert came from, i.e. which mapping read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Generic,
    Wazuh,
    Ecs,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Generic => "generic",
            Source::Wazuh => "wazuh",
            Source::Ecs => "ecs",
        }
    }
}

/// An alert format name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown alert format {0:?}: expected generic, wazuh or ecs")]
pub struct UnknownSource(pub String);

/// Any case; `cordon` means generic and `elastic` ECS.
impl FromStr for Source {
    type Err = UnknownSource;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "generic" | "cordon" => Ok(Source::Generic),
            "wazuh" => Ok(Source::Wazuh),
            "ecs" | "elastic" => Ok(Source::Ecs),
            _ => Err(UnknownSource(s.trim().to_owned())),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an alert's host was matched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostMatch {
    /// The agent it is, if exactly one fits.
    pub agent_id: Option<String>,
    /// `agent_id`, `hostname`, `hostname and ip`, or `ip`.
    pub matched_by: Option<String>,
    /// When several agents fit and nothing told them apart: their ids (none chosen).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<String>,
}

impl HostMatch {
    /// Matched to agent `id`, by `by`.
    pub fn agent(id: &str, by: &str) -> Self {
        HostMatch {
            agent_id: Some(id.to_owned()),
            matched_by: Some(by.to_owned()),
            candidates: Vec::new(),
        }
    }
}

/// An alert taken in.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Received {
    pub alert_id: String,
    pub incident_id: String,
    /// True if the alert opened the incident, false if it joined an open one.
    pub opened: bool,
    /// `opened` or `joined`.
    pub outcome: String,
    pub source: Source,
    pub fingerprint: String,
    /// The incident's title (an alert that joins keeps the incident's).
    pub title: String,
    /// The alert's kind and severity, as mapped.
    pub kind: String,
    pub severity: String,
    /// The agent the host was matched to, and how.
    pub host: HostMatch,
    /// Hosts newly added to the incident by this alert.
    pub hosts_added: Vec<String>,
    /// Alerts on the incident, this one included.
    pub alert_count: i64,
    /// When the alert opened its incident: the incidents most like it, most similar first (at
    /// most [`crate::similar::SHOWN_SIMILAR`]), with the reasons and what worked there. Empty
    /// when it joined one (the incident's view has them).
    pub similar: Vec<crate::similar::SimilarIncident>,
}

/// A stored alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertRecord {
    pub id: String,
    pub received_at_ms: i64,
    pub source: String,
    pub fingerprint: String,
    pub incident_id: String,
    /// `opened` (it opened the incident) or `joined`.
    pub outcome: String,
    pub actor: String,
    pub external_id: Option<String>,
    pub agent_id: Option<String>,
    pub detail: serde_json::Value,
    pub raw_sha256: String,
}

/// One alert with the payload it came in.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertView {
    #[serde(flatten)]
    pub alert: AlertRecord,
    /// The payload exactly as received (JSON; its SHA-256 is `raw_sha256`).
    pub raw: serde_json::Value,
}
