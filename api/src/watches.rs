//! File watches: `/api/v1/watches`, and the changes they report.

use serde::{Deserialize, Serialize};

use crate::tasks::{TaskErrorView, TaskState};

/// `POST /api/v1/watches`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWatch {
    pub agent_id: String,
    /// Absolute paths; directories are watched recursively.
    pub paths: Vec<String>,
    /// How long the task that starts the watch may wait for an offline agent (default 1 hour).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// A watch as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WatchView {
    pub id: String,
    pub agent_id: String,
    pub paths: Vec<String>,
    pub status: WatchStatus,
    pub created_at_ms: i64,
    pub created_by: String,
    pub stopped_at_ms: Option<i64>,
    /// Who stopped it: a token name, or the controller when it reached its change limit.
    pub stopped_by: Option<String>,
    /// Changes stored for it (at most the controller's per-watch limit).
    #[serde(default)]
    pub changes: i64,
    /// The latest task that (re)started the watch on the agent, its state and error.
    pub task_id: Option<String>,
    pub task_state: Option<TaskState>,
    pub error: Option<TaskErrorView>,
}

/// One change an agent reported.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WatchEventView {
    pub id: i64,
    pub watch_id: String,
    pub path: String,
    /// created, modified, removed or renamed.
    pub kind: String,
    /// When the agent saw it.
    pub changed_at_ms: i64,
    pub received_at_ms: i64,
}

/// `GET /api/v1/watches/{id}/events`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WatchEventsPage {
    pub watch_id: String,
    pub events: Vec<WatchEventView>,
    /// The id of the last event returned (or `after` when none): pass it as `after` next time.
    pub last_id: i64,
    /// Whether the watch is stopped. Changes it saw before the stop may still arrive later from
    /// an agent that was away; none after it.
    pub stopped: bool,
}

/// Where a watch is, as responders see it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
    strum::VariantArray,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum WatchStatus {
    /// Its `Watch` task has not reached the agent yet (or the agent is away).
    Pending,
    /// The agent is watching.
    Active,
    /// The agent could not start it (the task's error says why).
    Failed,
    Stopped,
}

impl WatchStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

crate::eq_name!(WatchStatus);
