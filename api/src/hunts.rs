//! Hunts: `/api/v1/hunts`, one query over many agents.

use cordon_protocol::{collect::HuntMatches, message::HuntQuery};
use serde::{Deserialize, Serialize};

use crate::tasks::{TaskErrorView, TaskState};

/// `POST /api/v1/hunts`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateHunt {
    pub query: HuntQuerySpec,
    /// Only agents carrying this `key=value` label; all agents when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// How long offline agents are picked up when they return (default 1 hour, at most 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
}

/// A hunt query as API callers write it; every field optional, unknown fields refused (a
/// misspelt filter must not silently widen a hunt).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HuntQuerySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline_contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_sha256: Option<String>,
}

impl From<HuntQuerySpec> for HuntQuery {
    fn from(s: HuntQuerySpec) -> Self {
        HuntQuery {
            process_name: s.process_name,
            exe_sha256: s.exe_sha256,
            cmdline_contains: s.cmdline_contains,
            remote_address: s.remote_address,
            remote_port: s.remote_port,
            file_path: s.file_path,
            file_sha256: s.file_sha256,
        }
    }
}

impl From<HuntQuery> for HuntQuerySpec {
    fn from(q: HuntQuery) -> Self {
        HuntQuerySpec {
            process_name: q.process_name,
            exe_sha256: q.exe_sha256,
            cmdline_contains: q.cmdline_contains,
            remote_address: q.remote_address,
            remote_port: q.remote_port,
            file_path: q.file_path,
            file_sha256: q.file_sha256,
        }
    }
}

/// Where a hunt stands.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HuntProgress {
    /// Agents targeted (one task each).
    pub targeted: i64,
    #[serde(flatten)]
    pub tasks: TaskCounts,
    /// Agents whose answer matched; counted for one hunt (`GET /hunts/{id}`), not in listings.
    pub matched: Option<i64>,
    /// Every task has ended (done, failed, expired or cancelled).
    pub complete: bool,
    /// When the latest answer arrived (for one hunt, once any has).
    pub last_result_at_ms: Option<i64>,
}

/// `GET /api/v1/hunts/{id}` and the listing's entries.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HuntView {
    pub id: String,
    pub query: HuntQuerySpec,
    pub label: Option<String>,
    pub created_by: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub progress: HuntProgress,
    /// Per agent, by host name; absent in listings and with `results=none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<HuntAgentResult>>,
}

/// One targeted agent's part in a hunt.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HuntAgentResult {
    pub agent_id: String,
    pub hostname: String,
    pub task_id: String,
    pub state: TaskState,
    /// Whether its answer matched (once it answered).
    pub matched: Option<bool>,
    /// What matched, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<HuntMatches>,
    pub error: Option<TaskErrorView>,
    pub finished_at_ms: Option<i64>,
}

/// How many of a hunt's tasks are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskCounts {
    pub queued: i64,
    pub sent: i64,
    pub running: i64,
    pub done: i64,
    pub failed: i64,
    pub expired: i64,
    pub cancelled: i64,
}

impl TaskCounts {
    /// Counts `n` more tasks in `state`.
    pub fn add(&mut self, state: TaskState, n: i64) {
        let slot = match state {
            TaskState::Queued => &mut self.queued,
            TaskState::Sent => &mut self.sent,
            TaskState::Running => &mut self.running,
            TaskState::Done => &mut self.done,
            TaskState::Failed => &mut self.failed,
            TaskState::Expired => &mut self.expired,
            TaskState::Cancelled => &mut self.cancelled,
        };
        *slot += n;
    }

    /// Every task.
    pub fn total(&self) -> i64 {
        self.queued + self.sent + self.running + self.finished()
    }

    /// Tasks that have ended, however.
    pub fn finished(&self) -> i64 {
        self.done + self.failed + self.expired + self.cancelled
    }
}
