//! Request and response bodies of the API, shared by the server and the `cordon` CLI.

use cordon_protocol::inventory::Inventory;
use serde::{Deserialize, Serialize};

/// `GET /api/v1/health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub version: String,
    pub agents_online: usize,
}

/// An agent's connection state as responders see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    Online,
    Offline,
    Revoked,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Online => "online",
            AgentStatus::Offline => "offline",
            AgentStatus::Revoked => "revoked",
        }
    }
}

/// `GET /api/v1/agents[/{id}]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentView {
    pub id: String,
    pub hostname: String,
    pub status: AgentStatus,
    pub enrolled_at_ms: i64,
    pub last_seen_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    pub labels: Vec<String>,
    pub inventory: Option<Inventory>,
    /// Remote address of the live session, when online.
    pub peer: Option<String>,
    pub connected_at_ms: Option<i64>,
}

/// `PUT /api/v1/agents/{id}/labels`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetLabels {
    pub labels: Vec<String>,
}

/// `POST /api/v1/enrollment-tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentToken {
    /// Lifetime in seconds (at most 30 days).
    pub ttl_secs: u64,
    #[serde(default)]
    pub note: Option<String>,
}

/// The one time an enrolment token is shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollmentTokenCreated {
    pub token: String,
    pub expires_at_ms: i64,
    /// SHA-256 fingerprint of the CA, for `cordon-agent enroll --ca-fingerprint`.
    pub ca_fingerprint: String,
}
