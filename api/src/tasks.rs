//! Collection tasks: `/api/v1/tasks`.

use serde::{Deserialize, Serialize};

use crate::actions::SubmitAction;

/// A collection to run, as API callers write it: `{"type": "processes", "hash_exes": true}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TaskSpec {
    Ping,
    Inventory,
    Processes {
        #[serde(default)]
        hash_exes: bool,
    },
    ProcessDetail {
        pid: u32,
        #[serde(default)]
        environment: bool,
    },
    Network,
    System,
    FileStat {
        path: String,
    },
    FileHash {
        path: String,
    },
    ListDir {
        path: String,
        #[serde(default)]
        glob: Option<String>,
        #[serde(default = "default_depth")]
        max_depth: u32,
        #[serde(default = "default_entries")]
        max_entries: u32,
    },
    /// Stream a regular file into the evidence store.
    FetchFile {
        path: String,
        /// Refuse files larger than this (default 2 GiB).
        #[serde(default = "default_fetch_limit")]
        max_bytes: u64,
        /// A signed `{"Fetch": {"path"}}` request of this path, as for `POST /api/v1/actions`:
        /// needed where the host's policy says `signed_reads`.
        #[serde(default)]
        authorization: Option<crate::actions::SubmitAction>,
    },
    /// Processes (with executable hashes), sockets and system facts in one signed bundle.
    Snapshot,
    /// What the agent's quarantine vault holds: each item's id, original path, hash and times.
    Quarantined,
}

/// Default size limit of a file fetch.
pub const DEFAULT_FETCH_LIMIT: u64 = 2 * 1024 * 1024 * 1024;
fn default_fetch_limit() -> u64 {
    DEFAULT_FETCH_LIMIT
}

fn default_depth() -> u32 {
    0
}

fn default_entries() -> u32 {
    10_000
}

/// `POST /api/v1/tasks`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    pub agent_id: String,
    pub task: TaskSpec,
    /// How long the task may wait for an offline agent (default 1 hour, at most 7 days).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// Why a task (or the action or watch it carried) failed: what the agent reported, or what the
/// controller found wrong with what came back.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
    strum::VariantArray,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum TaskErrorCode {
    /// The path, process or thing asked for does not exist on the host.
    NotFound,
    /// The agent's user may not read or do it.
    PermissionDenied,
    /// The request is not one the agent can run as given.
    InvalidInput,
    /// The answer would exceed the agent's limits.
    TooLarge,
    /// A safety rail on the host refused it (e.g. killing a protected process).
    PolicyDenied,
    /// The signed order failed the agent's checks; the message names the check.
    Unauthorized,
    /// This agent does not do that (an older version, another platform).
    Unsupported,
    /// The agent had its most tasks running or waiting.
    Busy,
    /// Cancelled before it ended.
    Cancelled,
    /// Its time ran out before the agent ran it.
    Expired,
    /// The agent's or the controller's fault; the message says more.
    Internal,
    /// What arrived does not match its hash, manifest or request, so none of it was kept.
    Integrity,
    /// The agent's answer could not be read as the result it should be.
    InvalidResult,
}

impl TaskErrorCode {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The code stored as `text`; one this build does not know reads as [`Self::Internal`], so
    /// an old or foreign row still shows (its message says the rest).
    pub fn from_stored(text: &str) -> Self {
        text.parse().unwrap_or(Self::Internal)
    }
}

impl From<cordon_protocol::message::TaskErrorCode> for TaskErrorCode {
    fn from(code: cordon_protocol::message::TaskErrorCode) -> Self {
        use cordon_protocol::message::TaskErrorCode as C;
        match code {
            C::NotFound => Self::NotFound,
            C::PermissionDenied => Self::PermissionDenied,
            C::InvalidInput => Self::InvalidInput,
            C::TooLarge => Self::TooLarge,
            C::PolicyDenied => Self::PolicyDenied,
            C::Unauthorized => Self::Unauthorized,
            C::Unsupported => Self::Unsupported,
            C::Busy => Self::Busy,
            C::Cancelled => Self::Cancelled,
            C::Expired => Self::Expired,
            C::Internal => Self::Internal,
        }
    }
}

/// A task's error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskErrorView {
    pub code: TaskErrorCode,
    pub message: String,
}

/// `GET /api/v1/tasks/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskView {
    pub id: String,
    pub agent_id: String,
    pub kind: String,
    pub state: TaskState,
    pub created_by: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub sent_at_ms: Option<i64>,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    /// What was asked, as the protocol's task kind.
    pub request: serde_json::Value,
    /// The collector's output, when done.
    pub result: Option<serde_json::Value>,
    pub error: Option<TaskErrorView>,
}

/// Where a task is in its life.
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
pub enum TaskState {
    Queued,
    Sent,
    Running,
    Done,
    Failed,
    Expired,
    Cancelled,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether the task has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Done | TaskState::Failed | TaskState::Expired | TaskState::Cancelled
        )
    }
}

impl TryFrom<TaskSpec> for cordon_protocol::message::TaskKind {
    /// What is wrong with a fetch's authorization.
    type Error = String;

    fn try_from(spec: TaskSpec) -> Result<Self, String> {
        use cordon_protocol::message::{ListDirRequest, TaskKind};
        Ok(match spec {
            TaskSpec::Ping => TaskKind::Ping,
            TaskSpec::Inventory => TaskKind::Inventory,
            TaskSpec::Processes { hash_exes } => TaskKind::Processes { hash_exes },
            TaskSpec::ProcessDetail { pid, environment } => {
                TaskKind::ProcessDetail { pid, environment }
            }
            TaskSpec::Network => TaskKind::Network,
            TaskSpec::System => TaskKind::System,
            TaskSpec::FileStat { path } => TaskKind::FileStat { path },
            TaskSpec::FileHash { path } => TaskKind::FileHash { path },
            TaskSpec::ListDir {
                path,
                glob,
                max_depth,
                max_entries,
            } => TaskKind::ListDir(ListDirRequest {
                path,
                glob,
                max_depth,
                max_entries,
            }),
            TaskSpec::FetchFile {
                path,
                max_bytes,
                authorization,
            } => TaskKind::FetchFile {
                path,
                max_bytes,
                authorization: authorization.map(SubmitAction::into_signed).transpose()?,
            },
            TaskSpec::Snapshot => TaskKind::Snapshot,
            TaskSpec::Quarantined => TaskKind::Quarantined,
        })
    }
}

crate::eq_name!(TaskState);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_stored_as_they_read_and_unknown_ones_still_show() {
        use strum::VariantArray;
        for code in TaskErrorCode::VARIANTS {
            assert_eq!(TaskErrorCode::from_stored(code.as_str()), *code);
            assert_eq!(
                serde_json::to_value(code).ok(),
                Some(serde_json::Value::from(code.as_str()))
            );
        }
        assert_eq!(
            TaskErrorCode::from_stored("from_a_newer_build"),
            TaskErrorCode::Internal
        );
        assert_eq!(
            TaskErrorCode::from(cordon_protocol::message::TaskErrorCode::PolicyDenied).as_str(),
            "policy_denied"
        );
    }
}
