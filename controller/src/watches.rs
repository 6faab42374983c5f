//! File watches: a responder asks an agent to watch paths, the agent streams what changes, the
//! controller stores it.
//!
//! Creating a watch stores it and queues a `Watch` task through the task service; stopping it
//! marks it stopped and queues an `Unwatch`. A watch outlives sessions on both sides: the agent
//! keeps it across reconnects, and after every hello the controller sends the agent's running
//! watches again (the agent keeps one it already has), so an agent restart keeps them too.
//! Changes are written by a per-session [`ChangeWriter`] in batches, off the session loop, so a
//! burst of changes never delays heartbeats.

use std::{
    collections::{BTreeMap, HashSet},
    path::Component,
    time::Duration,
};

use cordon_protocol::message::{AgentEvent, FileChangeKind, TaskKind};
use thiserror::Error;
use tokio::sync::mpsc;

use crate::{
    now_ms,
    state::{Controller, Shared},
    store::{NewWatch, NewWatchEvent, StoreError, TaskRecord, TaskState, WatchRecord},
    tasks::{TaskError, MAX_TASK_TTL},
};
pub use cordon_api::watches::WatchStatus;

/// Paths one watch may name (the agent enforces the same bound).
pub const MAX_PATHS: usize = 64;
/// Longest path accepted, in bytes (PATH_MAX).
pub const MAX_PATH_LEN: usize = 4096;
/// How long a `Watch` task sent again after a reconnect may wait; the next hello sends it again
/// anyway.
const RESEND_TTL: Duration = Duration::from_secs(3600);
/// Changes queued per session for the writer; beyond this the session waits for it.
const CHANGE_QUEUE: usize = 4096;
/// Most changes stored in one transaction.
const CHANGE_BATCH: usize = 512;
/// Changes one watch stores; at this many the controller stops it (and tells the agent), so a
/// watch on a busy directory cannot fill the store. Start a narrower watch to go on.
pub const MAX_CHANGES_PER_WATCH: i64 = 100_000;
/// Most stale watches one session is told to stop (an agent cannot make the controller queue
/// tasks without bound by naming made-up watches).
const MAX_UNWATCH_PER_SESSION: usize = 64;

/// Why a watch could not be created or stopped.
#[derive(Debug, Error)]
pub enum WatchError {
    #[error("no watch {0}")]
    UnknownWatch(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Derived from the watch and the state of its latest `Watch` task.
pub fn watch_status(watch: &WatchRecord, task: Option<&TaskRecord>) -> WatchStatus {
    if watch.stopped_at_ms.is_some() {
        return WatchStatus::Stopped;
    }
    match task.map(|t| t.state) {
        Some(TaskState::Done) => WatchStatus::Active,
        Some(TaskState::Failed | TaskState::Cancelled) => WatchStatus::Failed,
        // Expired: the agent was away; its next hello sends the watch again.
        None
        | Some(TaskState::Queued | TaskState::Sent | TaskState::Running)
        | Some(TaskState::Expired) => WatchStatus::Pending,
    }
}

/// The stored name of a change kind.
pub fn change_kind_name(kind: FileChangeKind) -> &'static str {
    match kind {
        FileChangeKind::Created => "created",
        FileChangeKind::Modified => "modified",
        FileChangeKind::Removed => "removed",
        FileChangeKind::Renamed => "renamed",
    }
}

/// Checks the paths of a new watch before anything is stored: 1 to [`MAX_PATHS`] absolute
/// paths without NUL or `..`. (The agent checks again, and whether they exist.)
pub fn check_paths(paths: &[String]) -> Result<(), WatchError> {
    if paths.is_empty() {
        return Err(WatchError::Invalid(
            "a watch needs at least one path".into(),
        ));
    }
    if paths.len() > MAX_PATHS {
        return Err(WatchError::Invalid(format!(
            "a watch may name at most {MAX_PATHS} paths, not {}",
            paths.len()
        )));
    }
    for path in paths {
        let why = if path.len() > MAX_PATH_LEN {
            Some(format!("longer than {MAX_PATH_LEN} bytes"))
        } else if path.contains('\0') {
            Some("contains a NUL byte".into())
        } else if !path.starts_with('/') {
            Some("must be absolute".into())
        } else if std::path::Path::new(path)
            .components()
            .any(|c| c == Component::ParentDir)
        {
            Some("must not contain `..`".into())
        } else {
            None
        };
        if let Some(why) = why {
            let shown: String = path.chars().take(200).collect();
            return Err(WatchError::Invalid(format!(
                "path {}: {why}",
                shown.escape_debug()
            )));
        }
    }
    Ok(())
}

impl Controller {
    /// Stores a watch for `agent_id` and queues the `Watch` task that starts it. Returns the
    /// watch (naming its task) and the task.
    pub async fn create_watch(
        &self,
        agent_id: &str,
        paths: Vec<String>,
        ttl: Duration,
        created_by: &str,
    ) -> Result<(WatchRecord, TaskRecord), WatchError> {
        check_paths(&paths)?;
        let agent = self
            .store
            .get_agent(agent_id)
            .await?
            .ok_or_else(|| TaskError::UnknownAgent(agent_id.to_string()))?;
        if agent.revoked_at_ms.is_some() {
            return Err(TaskError::RevokedAgent(agent_id.to_string()).into());
        }
        let id = uuid::Uuid::new_v4().to_string();
        self.store
            .insert_watch(&NewWatch {
                id: id.clone(),
                agent_id: agent_id.to_string(),
                paths: paths.clone(),
                created_at_ms: now_ms(),
                created_by: created_by.to_string(),
            })
            .await?;
        let kind = TaskKind::Watch {
            watch_id: id.clone(),
            paths,
        };
        let task = match self.create_task(agent_id, kind, ttl, created_by).await {
            Ok(task) => task,
            Err(e) => {
                // A watch no task will ever start must not be sent again at every hello.
                let _ = self.store.stop_watch(&id, created_by, now_ms()).await;
                return Err(e.into());
            }
        };
        self.store.set_watch_task(&id, &task.id).await?;
        tracing::info!(watch_id = %id, agent_id, task_id = %task.id, by = created_by, "watch created");
        let watch = self
            .store
            .get_watch(&id)
            .await?
            .ok_or(WatchError::UnknownWatch(id))?;
        Ok((watch, task))
    }

    /// Stops a watch: marks it stopped (changes seen after that are not stored) and queues the
    /// `Unwatch` task, which waits up to [`MAX_TASK_TTL`] for an agent that is away. Stopping a
    /// stopped watch changes nothing.
    pub async fn stop_watch(&self, id: &str, by: &str) -> Result<WatchRecord, WatchError> {
        let watch = self
            .store
            .get_watch(id)
            .await?
            .ok_or_else(|| WatchError::UnknownWatch(id.to_string()))?;
        if self.store.stop_watch(id, by, now_ms()).await? {
            let kind = TaskKind::Unwatch {
                watch_id: id.to_string(),
            };
            match self
                .create_task(&watch.agent_id, kind, MAX_TASK_TTL, by)
                .await
            {
                Ok(task) => {
                    tracing::info!(watch_id = id, agent_id = %watch.agent_id, task_id = %task.id, by, "watch stopped")
                }
                // A revoked agent has no session to stop it in; the watch is stopped here.
                Err(e) => {
                    tracing::warn!(watch_id = id, agent_id = %watch.agent_id, error = %e, "watch stopped, but the agent cannot be told")
                }
            }
        }
        self.store
            .get_watch(id)
            .await?
            .ok_or_else(|| WatchError::UnknownWatch(id.to_string()))
    }

    /// Sends an agent that just said hello its running watches again. Errors are logged: the
    /// next hello tries again.
    pub async fn resend_watches(&self, agent_id: &str) {
        let watches = match self.store.active_watches(agent_id).await {
            Ok(watches) => watches,
            Err(e) => {
                tracing::warn!(agent_id, error = %e, "cannot read watches to send again");
                return;
            }
        };
        for watch in watches {
            if let Some(task_id) = &watch.task_id {
                // Still waiting to be delivered: it goes out with the other queued tasks.
                match self.store.get_task(task_id).await {
                    Ok(Some(task)) if task.state == TaskState::Queued => continue,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(agent_id, watch_id = %watch.id, error = %e, "cannot read watch task");
                        continue;
                    }
                }
            }
            let kind = TaskKind::Watch {
                watch_id: watch.id.clone(),
                paths: watch.paths.clone(),
            };
            match self
                .create_task(agent_id, kind, RESEND_TTL, "controller")
                .await
            {
                Ok(task) => {
                    if let Err(e) = self.store.set_watch_task(&watch.id, &task.id).await {
                        tracing::warn!(watch_id = %watch.id, error = %e, "cannot record watch task");
                    }
                    tracing::debug!(agent_id, watch_id = %watch.id, task_id = %task.id, "watch sent again");
                }
                Err(e) => {
                    tracing::warn!(agent_id, watch_id = %watch.id, error = %e, "cannot send watch again")
                }
            }
        }
    }
}

/// Stores one session's file changes. Changes go through a bounded queue to a writer task,
/// started at the first change, that stores them in batches; the writer ends when the session
/// drops this, after storing what is queued.
pub struct ChangeWriter {
    controller: Shared,
    agent_id: String,
    tx: Option<mpsc::Sender<NewWatchEvent>>,
}

impl ChangeWriter {
    pub fn new(controller: &Shared, agent_id: &str) -> Self {
        Self {
            controller: controller.clone(),
            agent_id: agent_id.to_string(),
            tx: None,
        }
    }

    /// Queues a change the agent reported. Waits only when the writer is behind by
    /// [`CHANGE_QUEUE`] changes.
    pub async fn push(&mut self, event: AgentEvent) {
        let AgentEvent::FileChanged {
            watch_id,
            path,
            kind,
            at_ms,
        } = event;
        let change = NewWatchEvent {
            watch_id,
            agent_id: self.agent_id.clone(),
            path,
            kind: change_kind_name(kind).to_string(),
            changed_at_ms: at_ms,
            received_at_ms: now_ms(),
        };
        let tx = self.tx.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(CHANGE_QUEUE);
            tokio::spawn(write_changes(
                self.controller.clone(),
                self.agent_id.clone(),
                rx,
            ));
            tx
        });
        if tx.send(change).await.is_err() {
            tracing::error!(agent_id = %self.agent_id, "file-change writer is gone; change lost");
        }
    }
}

/// Stores a session's changes in batches. A change that is not kept means the agent runs a
/// watch the controller does not (stopped while the agent was away longer than the `Unwatch`
/// could wait, stopped at its change limit, or unknown here): the agent is told to stop it,
/// once per watch and session. A watch the batch took to [`MAX_CHANGES_PER_WATCH`] is stopped
/// on the agent at once.
async fn write_changes(
    controller: Shared,
    agent_id: String,
    mut rx: mpsc::Receiver<NewWatchEvent>,
) {
    let mut batch = Vec::with_capacity(CHANGE_BATCH);
    let mut told_to_stop: HashSet<String> = HashSet::new();
    while rx.recv_many(&mut batch, CHANGE_BATCH).await > 0 {
        let stored = match controller
            .store
            .insert_watch_events(
                &batch,
                controller
                    .watch_change_limit
                    .load(std::sync::atomic::Ordering::Relaxed),
                now_ms(),
            )
            .await
        {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!(agent_id, changes = batch.len(), error = %e, "cannot store file changes");
                batch.clear();
                continue;
            }
        };
        let mut to_stop: BTreeMap<&str, usize> = BTreeMap::new();
        for watch_id in &stored.limit_reached {
            tracing::warn!(
                agent_id,
                watch_id,
                "watch stopped: it reached its change limit"
            );
            to_stop.insert(watch_id.as_str(), 0);
        }
        for (change, kept) in batch.iter().zip(stored.kept) {
            if !kept {
                *to_stop.entry(change.watch_id.as_str()).or_default() += 1;
            }
        }
        for (watch_id, dropped) in to_stop {
            if dropped > 0 {
                tracing::info!(
                    agent_id,
                    watch_id,
                    count = dropped,
                    "file changes for an unknown, foreign or stopped watch dropped"
                );
            }
            if told_to_stop.len() >= MAX_UNWATCH_PER_SESSION || told_to_stop.contains(watch_id) {
                continue;
            }
            told_to_stop.insert(watch_id.to_string());
            let kind = TaskKind::Unwatch {
                watch_id: watch_id.to_string(),
            };
            if let Err(e) = controller
                .create_task(&agent_id, kind, RESEND_TTL, "controller")
                .await
            {
                tracing::warn!(agent_id, watch_id, error = %e, "cannot tell the agent to stop a stale watch");
            }
        }
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(stopped: bool) -> WatchRecord {
        WatchRecord {
            id: "w".into(),
            agent_id: "a".into(),
            paths: vec!["/etc".into()],
            created_at_ms: 0,
            created_by: "t".into(),
            task_id: Some("t".into()),
            stopped_at_ms: stopped.then_some(1),
            stopped_by: None,
            changes: 0,
        }
    }

    fn task(state: TaskState) -> TaskRecord {
        TaskRecord {
            id: "t".into(),
            agent_id: "a".into(),
            hunt_id: None,
            kind: "watch".into(),
            request: "{}".into(),
            state,
            created_by: "t".into(),
            created_at_ms: 0,
            expires_at_ms: 1,
            sent_at_ms: None,
            started_at_ms: None,
            finished_at_ms: None,
            result: None,
            error_code: None,
            error_message: None,
        }
    }

    #[test]
    fn watch_paths_are_checked_before_anything_is_stored() {
        assert!(check_paths(&["/etc".into(), "/srv/a b".into(), "/tmp/./x".into()]).is_ok());
        for (paths, why) in [
            (vec![], "at least one"),
            (vec!["etc".to_string()], "absolute"),
            (vec!["/tmp/../etc".to_string()], "`..`"),
            (vec!["/tmp/a\0b".to_string()], "NUL"),
            (vec![format!("/{}", "a".repeat(MAX_PATH_LEN))], "longer"),
            (vec!["/x".to_string(); MAX_PATHS + 1], "at most"),
        ] {
            let err = check_paths(&paths).unwrap_err();
            assert!(err.to_string().contains(why), "{paths:?}: {err}");
        }
    }

    #[test]
    fn status_follows_the_latest_watch_task() {
        let w = watch(false);
        assert_eq!(watch_status(&w, None), WatchStatus::Pending);
        assert_eq!(
            watch_status(&w, Some(&task(TaskState::Queued))),
            WatchStatus::Pending
        );
        assert_eq!(
            watch_status(&w, Some(&task(TaskState::Done))),
            WatchStatus::Active
        );
        assert_eq!(
            watch_status(&w, Some(&task(TaskState::Failed))),
            WatchStatus::Failed
        );
        assert_eq!(
            watch_status(&w, Some(&task(TaskState::Expired))),
            WatchStatus::Pending
        );
        assert_eq!(
            watch_status(&watch(true), Some(&task(TaskState::Done))),
            WatchStatus::Stopped
        );
        assert_eq!(change_kind_name(FileChangeKind::Renamed), "renamed");
    }
}
