//! Group commit for the two writes every task's result makes: `→ running` when the agent
//! starts it and `→ done | failed | cancelled` when it ends.
//!
//! A hunt across 10,000 agents brings 20,000 such writes within a second or two. One transaction
//! each means one WAL sync each on SQLite (and a commit round trip each on PostgreSQL), queued
//! for a single write lock: about 7 s at 10,000 agents, with everything else waiting behind it.
//! Here every caller still awaits its own write's outcome, but the writes that arrive while one
//! transaction commits go together in the next: under load a few large transactions, when idle
//! a single write costs what it did. The flush runs in its own task, so a caller that gives up
//! waiting (a dropped HTTP request) never strands the others' writes.
//!
//! On PostgreSQL a batch is at most two statements, `UPDATE tasks … FROM (VALUES …) RETURNING
//! id`, one for the starts and one for the ends, so a batch costs two round trips, not one per
//! write (a 10,000-agent hunt: 2.4–4.1 s to all results, against 5.8–8.1 s write by write). A batch never holds two writes for one task, so applying its starts before its ends is
//! the order the writes came in. SQLite runs in-process, with no round trips to save, and there
//! the same statements measured slower than one `UPDATE` per write (a 10,000-agent hunt: 3.3 s
//! against 3.4–4.8 s to all results), so it gets those, still in one transaction.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, MutexGuard},
};

use sqlx::{AnyConnection, Row};
use tokio::sync::oneshot;

use super::{db_err, tasks::TaskEnd, touched, Store, StoreError};

/// Most writes in one transaction (8 parameters each at most, under both databases' limits).
const MAX_BATCH: usize = 1000;

/// A task state change.
#[derive(Debug, Clone)]
pub(crate) enum TaskWrite {
    /// `queued | sent → running`, only for the agent the task belongs to.
    Running {
        id: String,
        agent_id: String,
        at_ms: i64,
    },
    /// Ends an unfinished task; with an agent id, only that agent's. `started_at_ms` is when
    /// the agent reported it started, if that was not written yet (a task that ends quickly
    /// never gets a `running` write of its own); an earlier start stays.
    Finish {
        id: String,
        agent_id: Option<String>,
        end: TaskEnd,
        started_at_ms: Option<i64>,
        at_ms: i64,
    },
}

type Reply = oneshot::Sender<Result<bool, StoreError>>;

/// Writes waiting for the next transaction.
#[derive(Default)]
pub(crate) struct TaskWrites {
    state: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    queue: Vec<(TaskWrite, Reply)>,
    /// A flush task is running and will pick up what is queued.
    flushing: bool,
}

impl std::fmt::Debug for TaskWrites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskWrites")
            .field("pending", &self.lock().queue.len())
            .finish()
    }
}

impl TaskWrites {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl TaskWrite {
    fn task_id(&self) -> &str {
        match self {
            TaskWrite::Running { id, .. } | TaskWrite::Finish { id, .. } => id,
        }
    }

    /// Runs the write on `conn`; whether it changed the task.
    pub(crate) async fn apply(&self, conn: &mut AnyConnection) -> Result<bool, StoreError> {
        let result = match self {
            TaskWrite::Running {
                id,
                agent_id,
                at_ms,
            } => sqlx::query(
                "UPDATE tasks SET state = 'running', started_at = $3 \
                 WHERE id = $1 AND agent_id = $2 AND state IN ('queued', 'sent')",
            )
            .bind(id)
            .bind(agent_id)
            .bind(*at_ms)
            .execute(conn)
            .await
            .map_err(db_err("mark task running"))?,
            TaskWrite::Finish {
                id,
                agent_id,
                end,
                started_at_ms,
                at_ms,
            } => {
                let (state, result, code, message) = end.columns();
                sqlx::query(
                    "UPDATE tasks SET state = $2, finished_at = $3, result = $4, \
                     error_code = $5, error_message = $6, started_at = COALESCE(started_at, $8) \
                     WHERE id = $1 AND ($7 = '' OR agent_id = $7) \
                     AND state IN ('queued', 'sent', 'running')",
                )
                .bind(id)
                .bind(state)
                .bind(*at_ms)
                .bind(result)
                .bind(code)
                .bind(message)
                .bind(agent_id.as_deref().unwrap_or(""))
                .bind(*started_at_ms)
                .execute(conn)
                .await
                .map_err(db_err("finish task"))?
            }
        };
        Ok(touched(&result))
    }
}

impl Store {
    /// Applies `write` together with whatever other task writes are waiting; returns whether
    /// it changed the task.
    pub(crate) async fn write_task_state(&self, write: TaskWrite) -> Result<bool, StoreError> {
        let (reply, outcome) = oneshot::channel();
        let start_flush = {
            let mut pending = self.task_writes.lock();
            pending.queue.push((write, reply));
            !std::mem::replace(&mut pending.flushing, true)
        };
        if start_flush {
            let store = self.clone();
            tokio::spawn(async move { store.flush_task_writes().await });
        }
        outcome.await.map_err(|_| StoreError::Database {
            op: "write task state",
            source: sqlx::Error::WorkerCrashed,
        })?
    }

    /// Several writes queued at once (so they go in one transaction when nothing else is
    /// flushing); each its own outcome, in order.
    pub(crate) async fn write_task_states(
        &self,
        writes: Vec<TaskWrite>,
    ) -> Vec<Result<bool, StoreError>> {
        let mut outcomes = Vec::with_capacity(writes.len());
        let start_flush = {
            let mut pending = self.task_writes.lock();
            for write in writes {
                let (reply, outcome) = oneshot::channel();
                pending.queue.push((write, reply));
                outcomes.push(outcome);
            }
            !outcomes.is_empty() && !std::mem::replace(&mut pending.flushing, true)
        };
        if start_flush {
            let store = self.clone();
            tokio::spawn(async move { store.flush_task_writes().await });
        }
        let mut results = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            results.push(outcome.await.unwrap_or_else(|_| {
                Err(StoreError::Database {
                    op: "write task state",
                    source: sqlx::Error::WorkerCrashed,
                })
            }));
        }
        results
    }

    /// Writes batches until nothing is waiting.
    async fn flush_task_writes(&self) {
        loop {
            let batch: Vec<(TaskWrite, Reply)> = {
                let mut pending = self.task_writes.lock();
                if pending.queue.is_empty() {
                    pending.flushing = false;
                    return;
                }
                // Up to the first write for a task already in the batch.
                let mut ids = HashSet::new();
                let n = pending
                    .queue
                    .iter()
                    .take(MAX_BATCH)
                    .take_while(|(write, _)| ids.insert(write.task_id().to_string()))
                    .count();
                pending.queue.drain(..n).collect()
            };
            match self.apply_together(&batch).await {
                Ok(outcomes) => {
                    for ((_, reply), outcome) in batch.into_iter().zip(outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                // Rolled back: one at a time instead, so each caller gets its own outcome.
                Err(e) => {
                    tracing::warn!(writes = batch.len(), error = %e, "batched task writes failed; retrying one by one");
                    for (write, reply) in batch {
                        let outcome = match self.pool().acquire().await {
                            Ok(mut conn) => write.apply(&mut conn).await,
                            Err(e) => Err(db_err("write task state")(e)),
                        };
                        let _ = reply.send(outcome);
                    }
                }
            }
        }
    }

    /// The batch in one transaction: on SQLite write by write; on PostgreSQL its starts, then
    /// its ends (each task appears once).
    async fn apply_together(&self, batch: &[(TaskWrite, Reply)]) -> Result<Vec<bool>, StoreError> {
        let mut tx = self.begin_write("begin task writes").await?;
        if self.backend() == super::Backend::Sqlite {
            let mut outcomes = Vec::with_capacity(batch.len());
            for (write, _) in batch {
                outcomes.push(write.apply(&mut tx).await?);
            }
            tx.commit().await.map_err(db_err("commit task writes"))?;
            return Ok(outcomes);
        }
        let running: Vec<&TaskWrite> = batch
            .iter()
            .map(|(w, _)| w)
            .filter(|w| matches!(w, TaskWrite::Running { .. }))
            .collect();
        let finish: Vec<&TaskWrite> = batch
            .iter()
            .map(|(w, _)| w)
            .filter(|w| matches!(w, TaskWrite::Finish { .. }))
            .collect();
        let mut touched = mark_running(&mut tx, &running).await?;
        touched.extend(finish_all(&mut tx, &finish).await?);
        tx.commit().await.map_err(db_err("commit task writes"))?;
        Ok(batch
            .iter()
            .map(|(w, _)| touched.contains(w.task_id()))
            .collect())
    }
}

/// `(VALUES ($1, $2, …), (…), …)` for `rows` rows of `width` parameters.
fn values(rows: usize, width: usize) -> String {
    let tuples: Vec<String> = (0..rows)
        .map(|r| {
            let params: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
            format!("({})", params.join(", "))
        })
        .collect();
    format!("(VALUES {})", tuples.join(", "))
}

/// The ids an `UPDATE … RETURNING id` changed.
fn returned_ids(rows: &[sqlx::any::AnyRow]) -> Result<HashSet<String>, StoreError> {
    rows.iter()
        .map(|r| r.try_get("id").map_err(db_err("read written task id")))
        .collect()
}

/// The starts of a batch; the ids that changed. (VALUES columns are `column1`… on both
/// SQLite and PostgreSQL.)
async fn mark_running(
    conn: &mut AnyConnection,
    writes: &[&TaskWrite],
) -> Result<HashSet<String>, StoreError> {
    if writes.is_empty() {
        return Ok(HashSet::new());
    }
    let sql = format!(
        "UPDATE tasks SET state = 'running', started_at = v.column3 FROM {} AS v \
         WHERE tasks.id = v.column1 AND tasks.agent_id = v.column2 \
         AND tasks.state IN ('queued', 'sent') RETURNING id",
        values(writes.len(), 3)
    );
    let mut query = sqlx::query(&sql);
    for write in writes {
        if let TaskWrite::Running {
            id,
            agent_id,
            at_ms,
        } = write
        {
            query = query.bind(id).bind(agent_id).bind(*at_ms);
        }
    }
    let rows = query
        .fetch_all(conn)
        .await
        .map_err(db_err("mark tasks running"))?;
    returned_ids(&rows)
}

/// The ends of a batch; the ids that changed.
async fn finish_all(
    conn: &mut AnyConnection,
    writes: &[&TaskWrite],
) -> Result<HashSet<String>, StoreError> {
    if writes.is_empty() {
        return Ok(HashSet::new());
    }
    let sql = format!(
        "UPDATE tasks SET state = v.column2, finished_at = v.column3, result = v.column4, \
         error_code = v.column5, error_message = v.column6, \
         started_at = COALESCE(tasks.started_at, v.column8) FROM {} AS v \
         WHERE tasks.id = v.column1 AND (v.column7 = '' OR tasks.agent_id = v.column7) \
         AND tasks.state IN ('queued', 'sent', 'running') RETURNING id",
        values(writes.len(), 8)
    );
    let mut query = sqlx::query(&sql);
    for write in writes {
        if let TaskWrite::Finish {
            id,
            agent_id,
            end,
            started_at_ms,
            at_ms,
        } = write
        {
            let (state, result, code, message) = end.columns();
            query = query
                .bind(id)
                .bind(state)
                .bind(*at_ms)
                .bind(result)
                .bind(code)
                .bind(message)
                .bind(agent_id.clone().unwrap_or_default())
                .bind(*started_at_ms);
        }
    }
    let rows = query
        .fetch_all(conn)
        .await
        .map_err(db_err("finish tasks"))?;
    returned_ids(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{test_support::backend_tests, NewTask, TaskState};
    use cordon_api::tasks::TaskErrorCode;

    const NOW: i64 = 1_700_000_000_000;

    async fn concurrent_writes_each_get_their_own_outcome(store: &Store) {
        crate::store::test_support::enrolled_agent(store, "a1", NOW).await;
        crate::store::test_support::enrolled_agent(store, "a2", NOW).await;
        let n = 300;
        for i in 0..n {
            store
                .insert_task(&NewTask {
                    id: format!("t{i}"),
                    agent_id: "a1".into(),
                    hunt_id: None,
                    kind: "ping".into(),
                    request: "\"Ping\"".into(),
                    created_by: "t".into(),
                    created_at_ms: NOW,
                    expires_at_ms: NOW + 60_000,
                })
                .await
                .unwrap();
        }
        // Many at once, as sessions deliver them: each a start then an end, and some from the
        // wrong agent, which must change nothing.
        let mut writes = tokio::task::JoinSet::new();
        for i in 0..n {
            let store = store.clone();
            writes.spawn(async move {
                let agent = if i % 10 == 0 { "a2" } else { "a1" };
                let id = format!("t{i}");
                let started = store.mark_task_running(&id, agent, NOW + 1).await.unwrap();
                let end = TaskEnd::Done {
                    result: format!("{{\"i\":{i}}}"),
                };
                let ended = store
                    .finish_task(&id, Some(agent), &end, NOW + 2)
                    .await
                    .unwrap();
                (i, started, ended)
            });
        }
        while let Some(joined) = writes.join_next().await {
            let (i, started, ended) = joined.unwrap();
            assert_eq!((started, ended), (i % 10 != 0, i % 10 != 0), "task {i}");
            let task = store.get_task(&format!("t{i}")).await.unwrap().unwrap();
            if i % 10 == 0 {
                assert_eq!(task.state, TaskState::Queued);
            } else {
                assert_eq!(task.state, TaskState::Done);
                assert_eq!(task.started_at_ms, Some(NOW + 1));
                assert_eq!(task.result, Some(format!("{{\"i\":{i}}}")));
            }
        }
        // A start reported but not written yet is written with the end; one written stays.
        let done = TaskEnd::Done {
            result: "{}".into(),
        };
        assert!(store
            .finish_started_task("t0", Some("a1"), &done, Some(NOW + 7), NOW + 8)
            .await
            .unwrap());
        assert_eq!(
            store.get_task("t0").await.unwrap().unwrap().started_at_ms,
            Some(NOW + 7)
        );
        let again = TaskEnd::Cancelled {
            message: "late".into(),
        };
        assert!(!store
            .finish_task("t1", None, &again, NOW + 3)
            .await
            .unwrap());

        // Two ends for one task at once (a cancel racing the result): exactly one counts.
        let fail = TaskEnd::Failed {
            code: TaskErrorCode::Internal,
            message: "x".into(),
        };
        let (a, b) = tokio::join!(
            store.finish_task("t10", None, &again, NOW + 4),
            store.finish_task("t10", Some("a1"), &fail, NOW + 4),
        );
        assert!(a.unwrap() ^ b.unwrap(), "one of them ends it");
        assert!(store
            .get_task("t10")
            .await
            .unwrap()
            .unwrap()
            .state
            .is_final());
    }

    backend_tests!(concurrent_writes_each_get_their_own_outcome);
}
