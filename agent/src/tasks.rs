//! Runs one task and produces its result. Collectors and actions plug in here, one module each.

use std::sync::Arc;

use cordon_protocol::message::{AgentMessage, TaskError, TaskErrorCode, TaskKind, TaskOutput};
use ed25519_dalek::SigningKey;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::collect::{
    self,
    cancel::{Cancel, CancelOnDrop},
    gate::Gate,
};

/// What a task may use beyond its request. Cheap to clone.
#[derive(Clone)]
pub struct TaskContext {
    pub agent_id: String,
    /// The agent's own key, for manifests and receipts.
    pub signer: Arc<SigningKey>,
    /// The session's outgoing queue, for chunks of bulk output. Bounded: a fast reader waits
    /// for a slow link instead of filling memory.
    pub outbox: mpsc::Sender<AgentMessage>,
    /// The agent's file watches; they outlive the session that started them.
    pub watches: collect::watch::WatchRegistry,
    /// Signed containment actions: policy, replay cache, journal. `None` in a detached context
    /// (no data directory), where actions are answered `Unsupported`.
    pub containment: Option<Arc<crate::containment::Containment>>,
}

impl TaskContext {
    /// The gate collection reads through, as the policy on disk says now (nothing denied in a
    /// detached context).
    pub fn gate(&self) -> Gate {
        self.containment
            .as_ref()
            .map_or_else(Gate::none, |c| c.gate())
    }

    /// A context whose output goes to the returned receiver (tests, benchmarks).
    pub fn detached(agent_id: &str, capacity: usize) -> (Self, mpsc::Receiver<AgentMessage>) {
        let (outbox, rx) = mpsc::channel(capacity);
        let ctx = Self {
            agent_id: agent_id.to_string(),
            signer: Arc::new(SigningKey::from_bytes(&rand::random())),
            outbox,
            watches: collect::watch::WatchRegistry::new(),
            containment: None,
        };
        (ctx, rx)
    }
}

/// Runs task `task_id`. Tasks this agent version cannot do are answered `Unsupported`, never
/// ignored.
pub async fn execute(
    task_id: &str,
    kind: TaskKind,
    ctx: &TaskContext,
) -> Result<TaskOutput, TaskError> {
    match kind {
        TaskKind::Ping => Ok(TaskOutput::Pong),
        TaskKind::Inventory => {
            let mut inventory = tokio::task::spawn_blocking(crate::inventory::collect)
                .await
                .map_err(|e| TaskError {
                    code: TaskErrorCode::Internal,
                    message: format!("inventory collection failed: {e}"),
                })?;
            // As in the hello: the containment policy is part of what the host reports.
            if let Some(containment) = &ctx.containment {
                inventory.action_policy = containment.reported_policy();
            }
            Ok(TaskOutput::Inventory(inventory))
        }
        TaskKind::Processes { hash_exes } => {
            let gate = ctx.gate();
            collect_json("processes", move |cancel| {
                collect::process::list(hash_exes, &gate.index(), cancel)
            })
            .await
        }
        TaskKind::ProcessDetail { pid, environment } => {
            collect_json("process detail", move |_| {
                collect::process_detail::detail(pid, environment)
            })
            .await
        }
        TaskKind::Network => collect_json("network", |_| collect::network::snapshot()).await,
        TaskKind::System => collect_json("system", |_| collect::system::collect()).await,
        TaskKind::FileStat { path } => {
            let gate = ctx.gate();
            collect_json("file stat", move |_| {
                collect::file::stat(&gate.index(), &path)
            })
            .await
        }
        TaskKind::FileHash { path } => {
            let gate = ctx.gate();
            collect_json("file hash", move |cancel| {
                collect::file::hash(&gate.index(), &path, cancel)
            })
            .await
        }
        TaskKind::ListDir(request) => {
            let gate = ctx.gate();
            collect_json("directory listing", move |cancel| {
                collect::listing::list(&request, &gate.index(), cancel)
            })
            .await
        }
        TaskKind::FetchFile {
            path,
            max_bytes,
            authorization,
        } => {
            authorize_read(task_id, &path, authorization, ctx).await?;
            collect::fetch::fetch(task_id, path, max_bytes, ctx).await
        }
        TaskKind::Snapshot => collect::snapshot::snapshot(task_id, ctx).await,
        TaskKind::Hunt(query) => {
            let gate = ctx.gate();
            collect_json("hunt", move |cancel| {
                collect::hunt::hunt(&query, &gate.index(), cancel)
            })
            .await
        }
        TaskKind::Watch { watch_id, paths } => ctx.watches.watch(watch_id, paths, ctx.gate()).await,
        TaskKind::Unwatch { watch_id } => ctx.watches.unwatch(&watch_id),
        TaskKind::Action(signed) => match &ctx.containment {
            Some(containment) => {
                containment
                    .execute(task_id, signed, ctx.signer.clone())
                    .await
            }
            None => Err(unsupported(&TaskKind::Action(signed))),
        },
        TaskKind::Quarantined => match &ctx.containment {
            Some(containment) => {
                let data_dir = containment.env().map_err(|e| TaskError {
                    code: TaskErrorCode::Internal,
                    message: format!("the containment settings cannot be read: {e}"),
                })?;
                let data_dir = data_dir.data_dir;
                collect_json("quarantined", move |_| {
                    crate::act::quarantine::list(&data_dir)
                })
                .await
            }
            None => Err(unsupported(&TaskKind::Quarantined)),
        },
    }
}

/// A fetch reads a file's contents: where the policy says `signed_reads` it needs a signed
/// `fetch` of that path, and a signature given is checked wherever it is given.
async fn authorize_read(
    task_id: &str,
    path: &str,
    authorization: Option<cordon_protocol::action::SignedAction>,
    ctx: &TaskContext,
) -> Result<(), TaskError> {
    let Some(containment) = ctx.containment.clone() else {
        return Ok(());
    };
    let (task_id, path) = (task_id.to_string(), path.to_string());
    tokio::task::spawn_blocking(move || match authorization {
        Some(signed) => containment.authorize_read(&task_id, &signed, &path),
        None if containment.reads_need_signature() => Err(TaskError {
            code: TaskErrorCode::Unauthorized,
            message: format!(
                "{path}: this host's policy requires a responder's signature to read file \
                 contents (signed_reads); sign the fetch with a key trusted for fetch: cordon \
                 files fetch --key KEY"
            ),
        }),
        None => Ok(()),
    })
    .await
    .map_err(|e| TaskError {
        code: TaskErrorCode::Internal,
        message: format!("checking the fetch's signature failed: {e}"),
    })?
}

/// The answer to a task this agent cannot do.
fn unsupported(kind: &TaskKind) -> TaskError {
    TaskError {
        code: TaskErrorCode::Unsupported,
        message: format!(
            "agent {} does not support task {}",
            env!("CARGO_PKG_VERSION"),
            kind.name()
        ),
    }
}

/// Runs a blocking collector off the async threads (it reads /proc and the file system) and
/// serialises what it returns as [`TaskOutput::Json`]. If this task is cancelled (dropped),
/// the collector's [`Cancel`] is set, and its loops stop the work.
async fn collect_json<T, F>(what: &str, collector: F) -> Result<TaskOutput, TaskError>
where
    T: Serialize + Send + 'static,
    F: FnOnce(&Cancel) -> Result<T, TaskError> + Send + 'static,
{
    let guard = CancelOnDrop::default();
    let cancel = guard.cancel();
    let value = tokio::task::spawn_blocking(move || collector(&cancel))
        .await
        .map_err(|e| TaskError {
            code: TaskErrorCode::Internal,
            message: format!("{what} collection failed: {e}"),
        })??;
    serde_json::to_string(&value)
        .map(TaskOutput::Json)
        .map_err(|e| TaskError {
            code: TaskErrorCode::Internal,
            message: format!("{what}: cannot encode the result: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use cordon_protocol::{
        collect::{FileHash, ProcessList, SystemInfo},
        message::ListDirRequest,
    };

    use super::*;

    async fn run(kind: TaskKind) -> Result<TaskOutput, TaskError> {
        let (ctx, _rx) = TaskContext::detached("agent-1", 64);
        execute("task-1", kind, &ctx).await
    }

    fn json(output: Result<TaskOutput, TaskError>) -> String {
        match output {
            Ok(TaskOutput::Json(text)) => text,
            other => panic!("expected JSON, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn collections_answer_with_their_documents() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"cordon").unwrap();
        let path = file.to_str().unwrap().to_string();

        let hash: FileHash =
            serde_json::from_str(&json(run(TaskKind::FileHash { path }).await)).unwrap();
        assert_eq!(hash.size, 6);
        let list: ProcessList =
            serde_json::from_str(&json(run(TaskKind::Processes { hash_exes: false }).await))
                .unwrap();
        assert!(list.processes.iter().any(|p| p.pid == std::process::id()));
        let system: SystemInfo = serde_json::from_str(&json(run(TaskKind::System).await)).unwrap();
        assert!(!system.hostname.is_empty());
        for kind in [
            TaskKind::Network,
            TaskKind::FileStat { path: "/".into() },
            TaskKind::ListDir(ListDirRequest {
                path: dir.path().to_str().unwrap().into(),
                glob: None,
                max_depth: 0,
                max_entries: 10,
            }),
            TaskKind::ProcessDetail {
                pid: std::process::id(),
                environment: false,
            },
        ] {
            json(run(kind).await);
        }
    }

    #[tokio::test]
    async fn collector_errors_keep_their_codes() {
        let err = run(TaskKind::ProcessDetail {
            pid: u32::MAX,
            environment: false,
        })
        .await
        .unwrap_err();
        assert_eq!(err.code, TaskErrorCode::NotFound);
        let err = run(TaskKind::FileStat {
            path: "relative".into(),
        })
        .await
        .unwrap_err();
        assert_eq!(err.code, TaskErrorCode::InvalidInput);
        assert_eq!(run(TaskKind::Ping).await, Ok(TaskOutput::Pong));
    }
}
