//! Live agent sessions on this controller, and tasks awaiting their results.
//!
//! The registry is the only way the rest of the controller reaches an agent: it looks up the
//! session, queues a message on its bounded outbound queue and, for tasks, waits for the result
//! that the session hands back with [`Registry::complete`].

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex, MutexGuard,
    },
    time::Duration,
};

use cordon_protocol::message::{ControllerMessage, Task, TaskKind, TaskResult};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Outbound messages queued per session before senders are told the agent is busy.
pub const SESSION_QUEUE: usize = 256;

/// Why a task could not be delivered or answered.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DispatchError {
    #[error("agent {0} is not connected")]
    Offline(String),
    #[error("agent {0} has too many queued messages")]
    Busy(String),
    #[error("agent {agent_id} did not answer task {task_id} within {timeout_ms} ms")]
    Timeout {
        agent_id: String,
        task_id: String,
        timeout_ms: u64,
    },
    #[error("agent {0} disconnected before answering")]
    Disconnected(String),
}

struct Session {
    conn_id: u64,
    tx: mpsc::Sender<ControllerMessage>,
    cancel: CancellationToken,
    peer: SocketAddr,
    connected_at_ms: i64,
}

/// What a session task gets when it registers.
pub struct Registration {
    pub conn_id: u64,
    pub rx: mpsc::Receiver<ControllerMessage>,
    /// Cancelled when the session must end (revoked, replaced by a newer connection).
    pub cancel: CancellationToken,
}

/// A live session as the API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionInfo {
    pub peer: String,
    pub connected_at_ms: i64,
}

#[derive(Default)]
pub struct Registry {
    sessions: Mutex<HashMap<String, Session>>,
    pending: Mutex<HashMap<String, (String, oneshot::Sender<TaskResult>)>>,
    next_conn: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a new session for `agent_id`. A previous session of the same agent (a stale
    /// connection the agent has already given up on) is told to end.
    pub fn register(&self, agent_id: &str, peer: SocketAddr, now_ms: i64) -> Registration {
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let cancel = CancellationToken::new();
        let old = lock(&self.sessions).insert(
            agent_id.to_string(),
            Session {
                conn_id,
                tx,
                cancel: cancel.clone(),
                peer,
                connected_at_ms: now_ms,
            },
        );
        if let Some(old) = old {
            tracing::info!(agent_id, old_peer = %old.peer, "agent reconnected; closing its previous session");
            old.cancel.cancel();
        }
        Registration {
            conn_id,
            rx,
            cancel,
        }
    }

    /// Removes the session, unless a newer one has replaced it. Fails its pending tasks.
    pub fn unregister(&self, agent_id: &str, conn_id: u64) -> bool {
        let mut sessions = lock(&self.sessions);
        let ours = sessions.get(agent_id).is_some_and(|s| s.conn_id == conn_id);
        if ours {
            sessions.remove(agent_id);
            drop(sessions);
            // Dropping the senders wakes the waiters with `Disconnected`.
            lock(&self.pending).retain(|_, (agent, _)| agent != agent_id);
        }
        ours
    }

    pub fn is_online(&self, agent_id: &str) -> bool {
        lock(&self.sessions).contains_key(agent_id)
    }

    pub fn session_info(&self, agent_id: &str) -> Option<SessionInfo> {
        lock(&self.sessions).get(agent_id).map(|s| SessionInfo {
            peer: s.peer.to_string(),
            connected_at_ms: s.connected_at_ms,
        })
    }

    pub fn online_count(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Ends an agent's session (e.g. its certificate was revoked).
    pub fn disconnect(&self, agent_id: &str) -> bool {
        match lock(&self.sessions).get(agent_id) {
            Some(s) => {
                s.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Queues a message for an agent without waiting.
    pub fn send(&self, agent_id: &str, message: ControllerMessage) -> Result<(), DispatchError> {
        let tx = lock(&self.sessions)
            .get(agent_id)
            .map(|s| s.tx.clone())
            .ok_or_else(|| DispatchError::Offline(agent_id.to_string()))?;
        tx.try_send(message).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => DispatchError::Busy(agent_id.to_string()),
            mpsc::error::TrySendError::Closed(_) => DispatchError::Offline(agent_id.to_string()),
        })
    }

    /// Sends a task and waits for its result.
    pub async fn run_task(
        &self,
        agent_id: &str,
        kind: TaskKind,
        timeout: Duration,
    ) -> Result<TaskResult, DispatchError> {
        let task_id = uuid::Uuid::new_v4().to_string();
        let (done_tx, done_rx) = oneshot::channel();
        lock(&self.pending).insert(task_id.clone(), (agent_id.to_string(), done_tx));
        let deadline_ms = crate::now_ms() + i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let task = Task {
            task_id: task_id.clone(),
            deadline_ms,
            kind,
        };
        if let Err(e) = self.send(agent_id, ControllerMessage::Task(task)) {
            lock(&self.pending).remove(&task_id);
            return Err(e);
        }
        match tokio::time::timeout(timeout, done_rx).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(_)) => Err(DispatchError::Disconnected(agent_id.to_string())),
            Err(_) => {
                lock(&self.pending).remove(&task_id);
                Err(DispatchError::Timeout {
                    agent_id: agent_id.to_string(),
                    task_id,
                    timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                })
            }
        }
    }

    /// Hands a result from `agent_id` to whoever waits for it in memory. A result for a task
    /// not waited for here (a stored task, or one sent to another agent) is given back.
    pub fn complete(&self, agent_id: &str, result: TaskResult) -> Option<TaskResult> {
        let mut pending = lock(&self.pending);
        match pending.get(&result.task_id) {
            Some((owner, _)) if owner == agent_id => {}
            _ => return Some(result),
        }
        if let Some((_, tx)) = pending.remove(&result.task_id) {
            // A waiter that gave up (timed out) just drops the result.
            let _ = tx.send(result);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_protocol::message::TaskOutput;

    fn addr() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    #[tokio::test]
    async fn a_result_reaches_the_waiting_task_only_from_its_agent() {
        let registry = std::sync::Arc::new(Registry::new());
        let mut reg = registry.register("a1", addr(), 0);
        let r2 = registry.clone();
        let waiter = tokio::spawn(async move {
            r2.run_task("a1", TaskKind::Ping, Duration::from_secs(5))
                .await
        });
        let Some(ControllerMessage::Task(task)) = reg.rx.recv().await else {
            panic!("no task queued")
        };
        let result = TaskResult {
            task_id: task.task_id.clone(),
            outcome: Ok(TaskOutput::Pong),
        };
        assert!(registry.complete("intruder", result.clone()).is_some());
        assert!(registry.complete("a1", result.clone()).is_none());
        assert_eq!(waiter.await.unwrap().unwrap(), result);
    }

    #[tokio::test]
    async fn offline_agents_and_disconnects_are_reported() {
        let registry = std::sync::Arc::new(Registry::new());
        assert_eq!(
            registry
                .run_task("nobody", TaskKind::Ping, Duration::from_secs(1))
                .await,
            Err(DispatchError::Offline("nobody".into()))
        );
        let mut reg = registry.register("a1", addr(), 0);
        let r2 = registry.clone();
        let waiter = tokio::spawn(async move {
            r2.run_task("a1", TaskKind::Ping, Duration::from_secs(5))
                .await
        });
        reg.rx.recv().await.unwrap();
        assert!(registry.unregister("a1", reg.conn_id));
        assert_eq!(
            waiter.await.unwrap(),
            Err(DispatchError::Disconnected("a1".into()))
        );
    }

    #[test]
    fn a_newer_session_replaces_and_cancels_the_old_one() {
        let registry = Registry::new();
        let old = registry.register("a1", addr(), 0);
        let new = registry.register("a1", addr(), 1);
        assert!(old.cancel.is_cancelled());
        assert!(
            !registry.unregister("a1", old.conn_id),
            "old session must not remove the new"
        );
        assert!(registry.is_online("a1"));
        assert!(registry.unregister("a1", new.conn_id));
        assert!(!registry.is_online("a1"));
    }
}
