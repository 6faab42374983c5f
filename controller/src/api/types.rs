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

/// A collection to run, as API callers write it: `{"type": "processes", "hash_exes": true}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
                authorization: authorization
                    .map(crate::actions::SubmitAction::into_signed)
                    .transpose()?,
            },
            TaskSpec::Snapshot => TaskKind::Snapshot,
        })
    }
}

/// `POST /api/v1/tasks`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    pub agent_id: String,
    pub task: TaskSpec,
    /// How long the task may wait for an offline agent (default 1 hour, at most 7 days).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// A task's error, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskErrorView {
    pub code: String,
    pub message: String,
}

/// `GET /api/v1/tasks/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskView {
    pub id: String,
    pub agent_id: String,
    pub kind: String,
    pub state: crate::store::TaskState,
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

impl From<crate::store::TaskRecord> for TaskView {
    fn from(t: crate::store::TaskRecord) -> Self {
        let parse =
            |s: &str| serde_json::from_str(s).unwrap_or(serde_json::Value::String(s.to_string()));
        TaskView {
            error: match (t.error_code, t.error_message) {
                (Some(code), message) => Some(TaskErrorView {
                    code,
                    message: message.unwrap_or_default(),
                }),
                _ => None,
            },
            request: parse(&t.request),
            result: t.result.as_deref().map(parse),
            id: t.id,
            agent_id: t.agent_id,
            kind: t.kind,
            state: t.state,
            created_by: t.created_by,
            created_at_ms: t.created_at_ms,
            expires_at_ms: t.expires_at_ms,
            sent_at_ms: t.sent_at_ms,
            started_at_ms: t.started_at_ms,
            finished_at_ms: t.finished_at_ms,
        }
    }
}

/// `?agent_id=…&limit=…` on listings that can be narrowed to one agent.
#[derive(Debug, Default, Deserialize)]
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
