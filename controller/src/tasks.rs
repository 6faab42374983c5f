//! The task service: creates collection tasks in the store, delivers them to connected agents
//! (at once, or when the agent comes back), records what agents answer, and expires what nobody
//! ran in time. The store holds the truth; this module moves tasks through their states.

use cordon_api::tasks::{TaskErrorCode, TaskView};
use std::time::Duration;

use cordon_protocol::message::{ControllerMessage, Task, TaskKind, TaskOutput, TaskResult};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::{
    now_ms,
    sessions::registry::DispatchError,
    state::Controller,
    store::{NewTask, StoreError, TaskEnd, TaskRecord, TaskState},
};

/// Default time a task may wait for its agent.
pub const DEFAULT_TASK_TTL: Duration = Duration::from_secs(3600);
/// Longest a task may wait for its agent.
pub const MAX_TASK_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often queued tasks are retried and stale ones expired.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(2);

/// Why a task could not be created or changed.
#[derive(Debug, Error)]
pub enum TaskError {
    #[error("no agent {0}")]
    UnknownAgent(String),
    #[error("agent {0} is revoked")]
    RevokedAgent(String),
    #[error("no task {0}")]
    UnknownTask(String),
    #[error("task {id} already ended ({state})")]
    AlreadyEnded { id: String, state: &'static str },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A stored task as the API shows it: its request and result as JSON values, its error
/// typed.
impl From<crate::store::TaskRecord> for TaskView {
    fn from(t: crate::store::TaskRecord) -> Self {
        let parse =
            |s: &str| serde_json::from_str(s).unwrap_or(serde_json::Value::String(s.to_string()));
        TaskView {
            error: match (t.error_code, t.error_message) {
                (Some(code), message) => Some(cordon_api::tasks::TaskErrorView {
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

impl Controller {
    /// Queues a task for an agent and sends it at once if the agent is connected.
    pub async fn create_task(
        &self,
        agent_id: &str,
        kind: TaskKind,
        ttl: Duration,
        created_by: &str,
    ) -> Result<TaskRecord, TaskError> {
        let id = uuid::Uuid::new_v4().to_string();
        self.create_task_with_id(id, agent_id, kind, ttl, created_by)
            .await
    }

    /// [`Controller::create_task`] with the caller's id (playbooks derive theirs, so a step
    /// is never made twice); an id already taken fails in the store (unique violation).
    pub async fn create_task_with_id(
        &self,
        id: String,
        agent_id: &str,
        kind: TaskKind,
        ttl: Duration,
        created_by: &str,
    ) -> Result<TaskRecord, TaskError> {
        let agent = self
            .store
            .get_agent(agent_id)
            .await?
            .ok_or_else(|| TaskError::UnknownAgent(agent_id.to_string()))?;
        if agent.revoked_at_ms.is_some() {
            return Err(TaskError::RevokedAgent(agent_id.to_string()));
        }
        if ttl.is_zero() || ttl > MAX_TASK_TTL {
            return Err(TaskError::Invalid(format!(
                "task lifetime must be between 1 s and {} days",
                MAX_TASK_TTL.as_secs() / 86_400
            )));
        }
        let request = serde_json::to_string(&kind)
            .map_err(|e| TaskError::Invalid(format!("cannot encode task: {e}")))?;
        let now = now_ms();
        self.store
            .insert_task(&NewTask {
                id: id.clone(),
                agent_id: agent_id.to_string(),
                hunt_id: None,
                kind: kind.name().to_string(),
                request,
                created_by: created_by.to_string(),
                created_at_ms: now,
                expires_at_ms: now
                    .saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
            })
            .await?;
        tracing::info!(task_id = %id, agent_id, kind = kind.name(), by = created_by, "task queued");
        self.dispatch_queued(agent_id).await;
        self.store
            .get_task(&id)
            .await?
            .ok_or(TaskError::UnknownTask(id))
    }

    /// Sends an agent's queued tasks, if it is connected. Errors are logged: the sweeper retries.
    pub async fn dispatch_queued(&self, agent_id: &str) {
        if !self.registry.is_online(agent_id) {
            return;
        }
        let queued = match self.store.queued_tasks(agent_id, now_ms()).await {
            Ok(queued) => queued,
            Err(e) => {
                tracing::warn!(agent_id, error = %e, "cannot read queued tasks");
                return;
            }
        };
        for task in queued {
            let kind: TaskKind = match serde_json::from_str(&task.request) {
                Ok(kind) => kind,
                Err(e) => {
                    let end = TaskEnd::Failed {
                        code: TaskErrorCode::Internal,
                        message: format!("stored task request is unreadable: {e}"),
                    };
                    self.end_task(&task.id, None, end).await;
                    continue;
                }
            };
            // Marked first, so a result racing back finds the task already sent.
            match self.store.mark_task_sent(&task.id, now_ms()).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(task_id = %task.id, error = %e, "cannot mark task sent");
                    return;
                }
            }
            let message = ControllerMessage::Task(Task {
                task_id: task.id.clone(),
                deadline_ms: task.expires_at_ms,
                kind,
            });
            match self.registry.send(agent_id, message) {
                Ok(()) => tracing::debug!(task_id = %task.id, agent_id, "task sent"),
                Err(e @ (DispatchError::Busy(_) | DispatchError::Offline(_))) => {
                    tracing::debug!(task_id = %task.id, agent_id, error = %e, "task stays queued");
                    if let Err(e) = self.store.requeue_task(&task.id).await {
                        tracing::warn!(task_id = %task.id, error = %e, "cannot requeue task");
                    }
                    return;
                }
                Err(e) => tracing::warn!(task_id = %task.id, error = %e, "task not sent"),
            }
        }
    }

    /// The agent reported that it started these tasks, each at its time (ms): they are
    /// `running`, all in one commit.
    pub async fn tasks_started(&self, agent_id: &str, started: Vec<(String, i64)>) {
        if started.is_empty() {
            return;
        }
        let ids: Vec<String> = started.iter().map(|(id, _)| id.clone()).collect();
        for (task_id, outcome) in ids
            .iter()
            .zip(self.store.mark_tasks_running(agent_id, started).await)
        {
            if let Err(e) = outcome {
                tracing::warn!(task_id, agent_id, error = %e, "cannot mark task running");
            }
        }
    }

    /// The agent reports a result. Results for tasks that are not this agent's, or that have
    /// already ended, are ignored.
    /// `staged` is the task's completed transfer, if it sent one; `started_at_ms` when the
    /// agent said it started the task, if that was not written yet (see
    /// [`crate::sessions::starts`]): it is written with the end.
    pub async fn task_finished(
        &self,
        agent_id: &str,
        result: TaskResult,
        staged: Option<crate::evidence::Staged>,
        started_at_ms: Option<i64>,
    ) {
        let end = match result.outcome {
            Ok(TaskOutput::Evidence(signed)) => {
                self.accept_evidence(agent_id, &result.task_id, signed, staged)
                    .await
            }
            Ok(TaskOutput::Receipt(receipt)) => {
                // Recorded on its action and ending the task together.
                return self
                    .accept_receipt(agent_id, &result.task_id, &receipt, started_at_ms)
                    .await;
            }
            Ok(output) => TaskEnd::Done {
                result: output_json(output),
            },
            Err(e) if e.code == cordon_protocol::message::TaskErrorCode::Cancelled => {
                TaskEnd::Cancelled { message: e.message }
            }
            Err(e) => TaskEnd::Failed {
                code: e.code.into(),
                message: e.message,
            },
        };
        self.end_started_task(&result.task_id, Some(agent_id), started_at_ms, end)
            .await;
    }

    /// Records how a task ended (once: later ends are ignored) and wakes its waiters.
    pub(crate) async fn end_task(&self, task_id: &str, agent_id: Option<&str>, end: TaskEnd) {
        self.end_started_task(task_id, agent_id, None, end).await;
    }

    /// [`Controller::end_task`], writing the task's start too if it was not written yet.
    pub(crate) async fn end_started_task(
        &self,
        task_id: &str,
        agent_id: Option<&str>,
        started_at_ms: Option<i64>,
        end: TaskEnd,
    ) {
        match self
            .store
            .finish_started_task(task_id, agent_id, &end, started_at_ms, now_ms())
            .await
        {
            Ok(true) => {
                // A refused or failed action records why before its waiters wake.
                self.action_task_ended(task_id, &end).await;
                let _ = self.task_events.send(task_id.to_string());
                self.publish_task_end(task_id, crate::events::task_end_kind(&end))
                    .await;
            }
            Ok(false) => tracing::debug!(task_id, ?agent_id, "result for an unknown or ended task"),
            Err(e) => tracing::error!(task_id, error = %e, "cannot store task result"),
        }
    }

    /// The agent's session ended: what it was sent may not have run, so queue it again.
    pub async fn agent_disconnected(&self, agent_id: &str) {
        match self.store.requeue_unfinished(agent_id).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(agent_id, tasks = n, "unfinished tasks queued again"),
            Err(e) => tracing::warn!(agent_id, error = %e, "cannot requeue tasks"),
        }
    }

    /// Cancels a task: a queued one ends at once; a sent or running one is cancelled on the
    /// agent, which answers with its own result.
    pub async fn cancel_task(&self, task_id: &str, by: &str) -> Result<TaskRecord, TaskError> {
        let task = self
            .store
            .get_task(task_id)
            .await?
            .ok_or_else(|| TaskError::UnknownTask(task_id.to_string()))?;
        match task.state {
            state if state.is_final() => {
                return Err(TaskError::AlreadyEnded {
                    id: task.id,
                    state: state.as_str(),
                })
            }
            TaskState::Queued => {
                let end = TaskEnd::Cancelled {
                    message: format!("cancelled by {by} before it was sent"),
                };
                self.end_task(task_id, None, end).await;
            }
            _ => {
                let cancel = ControllerMessage::Cancel {
                    task_id: task_id.to_string(),
                };
                if self.registry.send(&task.agent_id, cancel).is_err() {
                    // Not connected: the requeued task would run later; end it here instead.
                    let end = TaskEnd::Cancelled {
                        message: format!("cancelled by {by} while the agent was away"),
                    };
                    self.end_task(task_id, None, end).await;
                }
            }
        }
        tracing::info!(task_id, by, "task cancel requested");
        self.store
            .get_task(task_id)
            .await?
            .ok_or_else(|| TaskError::UnknownTask(task_id.to_string()))
    }

    /// Waits until a task has ended or `timeout` passes; returns its latest record.
    pub async fn wait_for_task(
        &self,
        task_id: &str,
        timeout: Duration,
    ) -> Result<TaskRecord, TaskError> {
        let mut events = self.task_events.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        // A stopping controller answers at once, so its shutdown is not held open.
        let stopping = self.events.closing();
        loop {
            let task = self
                .store
                .get_task(task_id)
                .await?
                .ok_or_else(|| TaskError::UnknownTask(task_id.to_string()))?;
            if task.state.is_final() {
                return Ok(task);
            }
            // Wake on any ended task (then re-read), or re-check every second regardless: events
            // can be missed when the channel lags, and expiry happens in the sweeper.
            let wake = tokio::time::sleep_until(
                deadline.min(tokio::time::Instant::now() + Duration::from_secs(1)),
            );
            tokio::select! {
                _ = events.recv() => {}
                _ = wake => {}
                _ = stopping.cancelled() => {}
            }
            if tokio::time::Instant::now() >= deadline || stopping.is_cancelled() {
                return self
                    .store
                    .get_task(task_id)
                    .await?
                    .ok_or_else(|| TaskError::UnknownTask(task_id.to_string()));
            }
        }
    }
}

/// Expires stale tasks and retries queued ones for connected agents, until `shutdown`.
pub async fn run_sweeper(controller: crate::state::Shared, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(SWEEP_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match controller.store.expire_tasks(now_ms()).await {
            Ok(expired) => {
                for id in expired {
                    tracing::info!(task_id = %id, "task expired");
                    controller
                        .publish_task_end(&id, crate::events::kind::TASK_EXPIRED)
                        .await;
                    let _ = controller.task_events.send(id);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot expire tasks"),
        }
        controller.expire_actions().await;
        match controller.store.agents_with_queued_tasks(now_ms()).await {
            Ok(agents) => {
                for agent in agents {
                    controller.dispatch_queued(&agent).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read queued tasks"),
        }
    }
}

/// What the store keeps of a successful output: JSON a client can read without the protocol.
fn output_json(output: TaskOutput) -> String {
    match output {
        TaskOutput::Json(json) => json,
        TaskOutput::Pong => "{\"pong\":true}".into(),
        TaskOutput::Done => "{}".into(),
        TaskOutput::Inventory(inventory) => serde_json::to_string(&inventory).unwrap_or_default(),
        // Accepted (or refused) in `task_finished` before this point.
        TaskOutput::Evidence(signed) => signed.manifest,
        TaskOutput::Streamed { total_len, sha256 } => {
            serde_json::json!({ "total_len": total_len, "sha256": sha256 }).to_string()
        }
        TaskOutput::Receipt(receipt) => serde_json::json!({
            "action_id": receipt.action_id,
            "agent_id": receipt.agent_id,
            "at_ms": receipt.at_ms,
            "before": receipt.before,
            "done": receipt.done,
            "after": receipt.after,
        })
        .to_string(),
    }
}
