//! Chunked transfers on one agent session: the bytes of a fetched file or a snapshot, written to
//! `evidence/incoming/` while they are hashed, then handed to [`crate::evidence`] with the task's
//! result.
//!
//! A transfer is accepted only for a task this agent was sent that produces evidence; chunks
//! must come in order, within the task's size limit, and the final chunk's hash must match the
//! bytes. Any breach ends the task as failed, tells the agent to stop, and deletes what arrived.
//! A session that ends drops its transfers, and with them their files.

use cordon_api::tasks::TaskErrorCode;
use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
};

use cordon_protocol::message::{Chunk, ControllerMessage, TaskKind};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::{
    evidence::Staged,
    state::Controller,
    store::{TaskEnd, TaskState},
};

/// Transfers one session may have open at once (the agent runs a few tasks at a time).
const MAX_OPEN_TRANSFERS: usize = 16;
/// Largest snapshot bundle accepted.
pub const MAX_SNAPSHOT_BYTES: u64 = 256 * 1024 * 1024;

struct Transfer {
    file: tokio::fs::File,
    /// Deleted on drop unless handed on as [`Staged`].
    staged: Staged,
    hasher: Sha256,
    received: u64,
    next_seq: u64,
    limit: u64,
    complete: bool,
}

/// The transfers of one session.
#[derive(Default)]
pub struct Transfers {
    open: HashMap<String, Transfer>,
    /// Tasks whose transfer was refused: their later chunks are ignored.
    refused: HashSet<String>,
}

impl Transfers {
    /// Takes one chunk. On a breach the task is failed and the agent told to stop.
    pub async fn push(&mut self, controller: &Controller, agent_id: &str, chunk: Chunk) {
        let task_id = chunk.task_id.clone();
        if self.refused.contains(&task_id) {
            return;
        }
        if let Err(message) = self.try_push(controller, agent_id, chunk).await {
            tracing::warn!(agent_id, task_id, %message, "transfer refused");
            self.open.remove(&task_id);
            if self.refused.len() >= 1024 {
                self.refused.clear();
            }
            self.refused.insert(task_id.clone());
            let _ = controller.registry.send(
                agent_id,
                ControllerMessage::Cancel {
                    task_id: task_id.clone(),
                },
            );
            let end = TaskEnd::Failed {
                code: TaskErrorCode::Integrity,
                message,
            };
            controller.end_task(&task_id, Some(agent_id), end).await;
        }
    }

    async fn try_push(
        &mut self,
        controller: &Controller,
        agent_id: &str,
        chunk: Chunk,
    ) -> Result<(), String> {
        if !self.open.contains_key(&chunk.task_id) {
            if chunk.seq != 0 {
                return Err(format!(
                    "transfer started at chunk {} instead of 0",
                    chunk.seq
                ));
            }
            if self.open.len() >= MAX_OPEN_TRANSFERS {
                return Err(format!(
                    "more than {MAX_OPEN_TRANSFERS} transfers at once on one session"
                ));
            }
            let transfer = open(controller, agent_id, &chunk.task_id).await?;
            self.open.insert(chunk.task_id.clone(), transfer);
        }
        let Some(t) = self.open.get_mut(&chunk.task_id) else {
            return Err("transfer vanished".into());
        };
        if t.complete {
            return Err("chunk after the final chunk".into());
        }
        if chunk.seq != t.next_seq {
            return Err(format!(
                "chunk {} arrived where chunk {} was expected",
                chunk.seq, t.next_seq
            ));
        }
        t.received += chunk.data.len() as u64;
        if t.received > t.limit {
            return Err(format!("more than the limit of {} bytes arrived", t.limit));
        }
        t.hasher.update(&chunk.data);
        t.file
            .write_all(&chunk.data)
            .await
            .map_err(|e| format!("cannot write the transfer to disk: {e}"))?;
        t.next_seq += 1;
        if let Some(end) = chunk.end {
            let actual = hex::encode(t.hasher.clone().finalize());
            if end.total_len != t.received || end.sha256 != actual {
                return Err(format!(
                    "the agent announced {} bytes with SHA-256 {}, but {} bytes with SHA-256 {actual} arrived",
                    end.total_len, end.sha256, t.received
                ));
            }
            t.file
                .sync_all()
                .await
                .map_err(|e| format!("cannot write the transfer to disk: {e}"))?;
            t.staged.total_len = t.received;
            t.staged.sha256 = actual;
            t.complete = true;
        }
        Ok(())
    }

    /// The task ended: its complete transfer, if it has one. An incomplete one is deleted.
    pub fn finish(&mut self, task_id: &str) -> Option<Staged> {
        self.refused.remove(task_id);
        let transfer = self.open.remove(task_id)?;
        transfer.complete.then_some(transfer.staged)
    }
}

/// Starts a transfer for `task_id` if it is an evidence task this agent was sent.
async fn open(controller: &Controller, agent_id: &str, task_id: &str) -> Result<Transfer, String> {
    let task = controller
        .store
        .get_task(task_id)
        .await
        .map_err(|e| format!("cannot read the task: {e}"))?
        .ok_or_else(|| format!("chunk for unknown task {task_id}"))?;
    if task.agent_id != agent_id {
        return Err(format!("chunk for task {task_id} of another agent"));
    }
    if !matches!(task.state, TaskState::Sent | TaskState::Running) {
        return Err(format!(
            "chunk for task {task_id}, which is {}",
            task.state.as_str()
        ));
    }
    let kind: TaskKind = serde_json::from_str(&task.request)
        .map_err(|e| format!("stored task request is unreadable: {e}"))?;
    let limit = match kind {
        TaskKind::FetchFile { max_bytes, .. } => max_bytes,
        TaskKind::Snapshot => MAX_SNAPSHOT_BYTES,
        _ => return Err(format!("chunk for task {task_id}, which sends no data")),
    };
    let path: PathBuf = controller
        .evidence
        .incoming()
        .join(format!("{}.part", uuid::Uuid::new_v4()));
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .await
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    Ok(Transfer {
        file,
        staged: Staged::new(path, 0, String::new()),
        hasher: Sha256::new(),
        received: 0,
        next_seq: 0,
        limit,
        complete: false,
    })
}
