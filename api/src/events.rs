//! Events: `GET /api/v1/events` (server-sent events) and what webhooks deliver.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Event kinds. Patterns match them whole (`task.done`), by prefix (`incident.*`), or all (`*`).
pub mod kind {
    pub const INCIDENT_CREATED: &str = "incident.created";
    pub const INCIDENT_STAGE_CHANGED: &str = "incident.stage_changed";
    pub const INCIDENT_CLOSED: &str = "incident.closed";
    pub const INCIDENT_ASSIGNED: &str = "incident.assigned";
    pub const INCIDENT_ESCALATED: &str = "incident.escalated";
    pub const INCIDENT_SEVERITY_CHANGED: &str = "incident.severity_changed";
    pub const INCIDENT_COMMENT: &str = "incident.comment";
    pub const INCIDENT_HOSTS_ADDED: &str = "incident.hosts_added";
    pub const INCIDENT_ALERT_JOINED: &str = "incident.alert_joined";
    pub const INCIDENT_LINKED: &str = "incident.linked";
    pub const INCIDENT_UPDATED: &str = "incident.updated";
    pub const TASK_DONE: &str = "task.done";
    pub const TASK_FAILED: &str = "task.failed";
    pub const TASK_CANCELLED: &str = "task.cancelled";
    pub const TASK_EXPIRED: &str = "task.expired";
    pub const ACTION_PENDING: &str = "action.pending";
    pub const ACTION_SUBMITTED: &str = "action.submitted";
    pub const ACTION_DONE: &str = "action.done";
    pub const ACTION_FAILED: &str = "action.failed";
    pub const ACTION_EXPIRED: &str = "action.expired";
    /// Sent to one webhook on request, to check it is reachable.
    pub const WEBHOOK_TEST: &str = "webhook.test";
    /// Sent to a live consumer that fell behind (never to webhooks).
    pub const EVENTS_LAGGED: &str = "events.lagged";

    /// Every kind a webhook or live consumer can receive, for documentation and validation.
    pub const ALL: &[&str] = &[
        INCIDENT_CREATED,
        INCIDENT_STAGE_CHANGED,
        INCIDENT_CLOSED,
        INCIDENT_ASSIGNED,
        INCIDENT_ESCALATED,
        INCIDENT_SEVERITY_CHANGED,
        INCIDENT_COMMENT,
        INCIDENT_HOSTS_ADDED,
        INCIDENT_ALERT_JOINED,
        INCIDENT_LINKED,
        INCIDENT_UPDATED,
        TASK_DONE,
        TASK_FAILED,
        TASK_CANCELLED,
        TASK_EXPIRED,
        ACTION_PENDING,
        ACTION_SUBMITTED,
        ACTION_DONE,
        ACTION_FAILED,
        ACTION_EXPIRED,
        WEBHOOK_TEST,
        EVENTS_LAGGED,
    ];
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// Unique (a UUID); a consumer that sees the same id twice has seen one event.
    pub id: String,
    /// e.g. `incident.created`; see [`kind`].
    pub kind: String,
    pub at_ms: i64,
    /// Who did it: a token name, `controller`, an agent id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_id: Option<String>,
    /// One line a human reads.
    pub summary: String,
    /// The details, as JSON (depends on the kind).
    #[serde(default)]
    pub data: Value,
}

impl Event {
    /// A new event of `kind`, now.
    pub fn new(kind: &str, summary: impl Into<String>, data: Value) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            kind: kind.to_owned(),
            at_ms: crate::now_ms(),
            actor: None,
            incident_id: None,
            agent_id: None,
            task_id: None,
            action_id: None,
            summary: summary.into(),
            data,
        }
    }

    pub fn actor(mut self, actor: &str) -> Self {
        self.actor = Some(actor.to_owned());
        self
    }

    pub fn incident(mut self, id: &str) -> Self {
        self.incident_id = Some(id.to_owned());
        self
    }

    pub fn agent(mut self, id: &str) -> Self {
        self.agent_id = Some(id.to_owned());
        self
    }

    pub fn task(mut self, id: &str) -> Self {
        self.task_id = Some(id.to_owned());
        self
    }

    pub fn action(mut self, id: &str) -> Self {
        self.action_id = Some(id.to_owned());
        self
    }
}
