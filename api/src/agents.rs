//! Agents: `/api/v1/agents`, and the health check.

use cordon_protocol::inventory::Inventory;
use serde::{Deserialize, Serialize};

/// `GET /api/v1/health`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    pub status: String,
    pub version: String,
    pub agents_online: usize,
}

/// An agent's connection state as responders see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SetLabels {
    pub labels: Vec<String>,
}

/// `?agent_id=…&limit=…` on listings that can be narrowed to one agent.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AgentListQuery {
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub limit: Option<i64>,
}

impl AgentListQuery {
    /// The limit asked for, 100 by default, between 1 and 1,000.
    pub fn limit(&self) -> i64 {
        self.limit.unwrap_or(100).clamp(1, 1000)
    }
}

crate::eq_name!(AgentStatus);
