//! Messages after the hellos: heartbeats, tasks and their results, chunks of bulk data, and
//! events the agent streams (file-watch). Every task and its result carry the task id, so many
//! tasks share one connection.

use serde::{Deserialize, Serialize};

use crate::action::SignedAction;

/// Controller → agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerMessage {
    /// Answer to the agent's heartbeat, echoing its sequence number.
    HeartbeatAck { seq: u64 },
    /// Run a task.
    Task(Task),
    /// Stop a running task; the agent answers with a `TaskResult` whose error is `Cancelled`.
    Cancel { task_id: String },
    /// The controller is going away (shutdown) or ending this session; reconnect later.
    Goodbye { reason: String },
}

/// Agent → controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentMessage {
    /// Liveness, sent every heartbeat interval.
    Heartbeat { seq: u64 },
    /// A task was received and started.
    TaskStarted { task_id: String },
    /// A task finished (successfully or not).
    TaskResult(TaskResult),
    /// A piece of bulk output belonging to a task.
    Chunk(Chunk),
    /// Something the agent observed on its own (e.g. a watched file changed).
    Event(AgentEvent),
    /// The agent's containment policy changed on its host (`cordon-agent trust …`) since the
    /// summary it last reported (in its hello, or in this message): what it trusts now, ids
    /// only. The controller's early checks use it from then on. Since protocol version 2.
    PolicyChanged(crate::action::PolicySummary),
}

/// A unit of work for the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub task_id: String,
    /// After this instant (ms since the epoch) the agent should not start the task.
    pub deadline_ms: i64,
    pub kind: TaskKind,
}

/// What a task asks for. Read-only collection is authorised by the mTLS channel (and the agent's
/// path policy); containment only by the signatures inside [`SignedAction`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskKind {
    /// Round trip with no work: measures the command path.
    Ping,
    /// Refresh the inventory.
    Inventory,
    /// Process list; with `hash_exes` the SHA-256 of each executable.
    Processes { hash_exes: bool },
    /// One process in detail (open files, cwd; environment only on request).
    ProcessDetail { pid: u32, environment: bool },
    /// TCP and UDP sockets with owning processes, and interfaces.
    Network,
    /// Hostname, OS, kernel, boot time, logged-in users.
    System,
    /// stat(2) of a path.
    FileStat { path: String },
    /// SHA-256 of a file.
    FileHash { path: String },
    /// Directory listing.
    ListDir(ListDirRequest),
    /// Stream a file's bytes as chunks, refusing files over `max_bytes`. `authorization`: a
    /// signed [`crate::action::Action::Fetch`] of this path, which a host whose policy requires
    /// signed reads insists on (and any host checks when it is given).
    FetchFile {
        path: String,
        max_bytes: u64,
        #[serde(default)]
        authorization: Option<SignedAction>,
    },
    /// Everything above in one signed bundle.
    Snapshot,
    /// Start watching paths; events arrive as [`AgentEvent::FileChanged`] with this watch id.
    Watch {
        watch_id: String,
        paths: Vec<String>,
    },
    /// Stop a watch.
    Unwatch { watch_id: String },
    /// A collection evaluated on the agent, returning only what matches.
    Hunt(HuntQuery),
    /// A signed containment action.
    Action(SignedAction),
    /// What the agent's quarantine vault holds (a read: the vault's own records).
    Quarantined,
}

impl TaskKind {
    /// The first protocol version whose agents can decode this task: a controller does not send
    /// it to an agent whose session runs at an older one (it fails the task as unsupported).
    pub fn since_version(&self) -> u32 {
        match self {
            TaskKind::Quarantined => 4,
            TaskKind::Action(signed) => match signed.request.action {
                crate::action::Action::Terminate { .. } => 4,
                _ => crate::OLDEST_PROTOCOL_VERSION,
            },
            _ => crate::OLDEST_PROTOCOL_VERSION,
        }
    }

    /// The short name a task of this kind is stored, listed and logged under.
    pub fn name(&self) -> &'static str {
        match self {
            TaskKind::Ping => "ping",
            TaskKind::Inventory => "inventory",
            TaskKind::Processes { .. } => "processes",
            TaskKind::ProcessDetail { .. } => "process_detail",
            TaskKind::Network => "network",
            TaskKind::System => "system",
            TaskKind::FileStat { .. } => "file_stat",
            TaskKind::FileHash { .. } => "file_hash",
            TaskKind::ListDir(_) => "list_dir",
            TaskKind::FetchFile { .. } => "fetch_file",
            TaskKind::Snapshot => "snapshot",
            TaskKind::Watch { .. } => "watch",
            TaskKind::Unwatch { .. } => "unwatch",
            TaskKind::Hunt(_) => "hunt",
            TaskKind::Action(_) => "action",
            TaskKind::Quarantined => "quarantined",
        }
    }
}

/// Directory listing limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListDirRequest {
    pub path: String,
    /// Shell-style glob on file names, e.g. `*.so`.
    pub glob: Option<String>,
    pub max_depth: u32,
    pub max_entries: u32,
}

/// Filters a hunt evaluates on the agent. Empty fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HuntQuery {
    pub process_name: Option<String>,
    pub exe_sha256: Option<String>,
    pub cmdline_contains: Option<String>,
    pub remote_address: Option<String>,
    pub remote_port: Option<u16>,
    pub file_path: Option<String>,
    pub file_sha256: Option<String>,
}

/// The end of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResult {
    pub task_id: String,
    pub outcome: Result<TaskOutput, TaskError>,
}

/// Why a task failed, in a form the controller can store and show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    pub code: TaskErrorCode,
    pub message: String,
}

/// Failure classes a responder or a script can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskErrorCode {
    NotFound,
    PermissionDenied,
    InvalidInput,
    TooLarge,
    PolicyDenied,
    /// A signed action failed verification; the message names the check.
    Unauthorized,
    Unsupported,
    Busy,
    Cancelled,
    Expired,
    Internal,
}

/// Successful task output. Bulk outputs (file bytes, snapshot bundles) arrive as chunks first;
/// the result then says how much arrived and its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskOutput {
    Pong,
    Inventory(crate::inventory::Inventory),
    /// A JSON document for collections whose schema lives with the collector (processes,
    /// network, system, stat, listings, hunt matches). Kept as text so the controller can store
    /// and serve it without knowing each collector's types.
    Json(String),
    /// Bulk output already sent as chunks.
    Streamed {
        total_len: u64,
        sha256: String,
    },
    /// A signed action's receipt.
    Receipt(Receipt),
    /// Nothing to report beyond success (e.g. a watch started).
    Done,
    /// Evidence (a fetched file, a snapshot bundle) already sent as chunks, with the agent's
    /// signed manifest naming its length and hash.
    Evidence(crate::evidence::SignedManifest),
}

/// A piece of bulk output. Chunks of a task are numbered from 0; the last one carries the hash of
/// the whole, which the receiver checks before keeping anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub task_id: String,
    pub seq: u64,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    pub end: Option<ChunkEnd>,
}

/// Trailer of the final chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkEnd {
    pub total_len: u64,
    /// Lowercase hex SHA-256 of all chunks' data in order.
    pub sha256: String,
}

/// Events the agent sends without being asked for each one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentEvent {
    FileChanged {
        watch_id: String,
        path: String,
        kind: FileChangeKind,
        at_ms: i64,
    },
}

/// What happened to a watched path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileChangeKind {
    Created,
    Modified,
    Removed,
    Renamed,
}

/// What an agent returns after a containment action, signed with its own key so that "sent" is
/// never mistaken for "done".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub action_id: String,
    pub agent_id: String,
    pub at_ms: i64,
    /// JSON description of the state found before the action.
    pub before: String,
    /// What was done.
    pub done: String,
    /// JSON description of the state seen after.
    pub after: String,
    /// The agent's Ed25519 public key and signature over [`Receipt::signing_bytes`].
    #[serde(with = "serde_bytes")]
    pub agent_public_key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// Domain tag for receipt signatures.
pub const RECEIPT_DOMAIN: &[u8] = b"cordon/receipt/v1\0";

impl Receipt {
    /// Canonical bytes the agent signs: the domain tag, then every field but the signature.
    pub fn signing_bytes(&self) -> Result<Vec<u8>, crate::ProtocolError> {
        let body = (
            &self.action_id,
            &self.agent_id,
            self.at_ms,
            &self.before,
            &self.done,
            &self.after,
            serde_bytes::Bytes::new(&self.agent_public_key),
        );
        let mut out = RECEIPT_DOMAIN.to_vec();
        out.extend(crate::codec::encode(&body)?);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use proptest::prelude::*;

    fn arb_task_kind() -> impl Strategy<Value = TaskKind> {
        prop_oneof![
            Just(TaskKind::Ping),
            Just(TaskKind::Network),
            any::<bool>().prop_map(|hash_exes| TaskKind::Processes { hash_exes }),
            (any::<u32>(), any::<bool>())
                .prop_map(|(pid, environment)| TaskKind::ProcessDetail { pid, environment }),
            ".{0,64}".prop_map(|path| TaskKind::FileStat { path }),
            (".{0,64}", any::<u64>()).prop_map(|(path, max_bytes)| TaskKind::FetchFile {
                path,
                max_bytes,
                authorization: None,
            }),
            (".{0,16}", proptest::collection::vec(".{0,32}", 0..4))
                .prop_map(|(watch_id, paths)| TaskKind::Watch { watch_id, paths }),
        ]
    }

    fn arb_agent_message() -> impl Strategy<Value = AgentMessage> {
        prop_oneof![
            any::<u64>().prop_map(|seq| AgentMessage::Heartbeat { seq }),
            ".{0,40}".prop_map(|task_id| AgentMessage::TaskStarted { task_id }),
            (
                ".{0,40}",
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..512),
                any::<bool>()
            )
                .prop_map(|(task_id, seq, data, last)| AgentMessage::Chunk(Chunk {
                    task_id,
                    seq,
                    end: last.then(|| ChunkEnd {
                        total_len: data.len() as u64,
                        sha256: "00".into()
                    }),
                    data,
                })),
            (".{0,40}", ".{0,200}").prop_map(|(task_id, json)| AgentMessage::TaskResult(
                TaskResult {
                    task_id,
                    outcome: Ok(TaskOutput::Json(json)),
                }
            )),
            (".{0,16}", ".{0,16}", any::<u64>()).prop_map(|(name, key_id, max_ttl_secs)| {
                AgentMessage::PolicyChanged(crate::action::PolicySummary {
                    signers: vec![crate::action::SignerSummary {
                        name,
                        key_id,
                        actions: vec![crate::action::ActionKind::Kill],
                        max_ttl_secs,
                    }],
                    required_signers: vec![(crate::action::ActionKind::Kill, 2)],
                    signed_reads: max_ttl_secs % 2 == 0,
                })
            }),
            (".{0,40}", ".{0,80}").prop_map(|(task_id, message)| AgentMessage::TaskResult(
                TaskResult {
                    task_id,
                    outcome: Err(TaskError {
                        code: TaskErrorCode::NotFound,
                        message
                    }),
                }
            )),
        ]
    }

    #[test]
    fn only_what_version_4_added_needs_version_4() {
        use crate::action::{Action, ActionRequest, SignedAction};
        let action = |action| {
            TaskKind::Action(SignedAction {
                request: ActionRequest {
                    action_id: uuid::Uuid::nil(),
                    agent_id: "a".into(),
                    issued_at_ms: 0,
                    expires_at_ms: 1,
                    nonce: [0; 16],
                    action,
                },
                signatures: vec![],
            })
        };
        assert_eq!(TaskKind::Quarantined.since_version(), 4);
        let terminate = action(Action::Terminate {
            pid: 1,
            start_time_ms: 0,
            grace_secs: 5,
        });
        assert_eq!(terminate.since_version(), 4);
        let kill = action(Action::Kill {
            pid: 1,
            start_time_ms: 0,
            tree: false,
        });
        for old in [TaskKind::Ping, TaskKind::Snapshot, kill] {
            assert_eq!(
                old.since_version(),
                crate::OLDEST_PROTOCOL_VERSION,
                "{old:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn controller_messages_round_trip(task_id in ".{0,40}", deadline_ms in any::<i64>(), kind in arb_task_kind()) {
            let msg = ControllerMessage::Task(Task { task_id, deadline_ms, kind });
            let bytes = codec::encode(&msg).unwrap();
            prop_assert_eq!(codec::decode::<ControllerMessage>(&bytes).unwrap(), msg);
        }

        #[test]
        fn agent_messages_round_trip(msg in arb_agent_message()) {
            let bytes = codec::encode(&msg).unwrap();
            prop_assert_eq!(codec::decode::<AgentMessage>(&bytes).unwrap(), msg);
        }

        #[test]
        fn every_truncation_of_a_message_is_an_error(msg in arb_agent_message()) {
            let bytes = codec::encode(&msg).unwrap();
            for cut in 0..bytes.len() {
                prop_assert!(codec::decode::<AgentMessage>(&bytes[..cut]).is_err());
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = codec::decode::<AgentMessage>(&bytes);
            let _ = codec::decode::<ControllerMessage>(&bytes);
        }
    }
}
