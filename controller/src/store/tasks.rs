//! Collection tasks: queued per agent, sent when the agent is connected, finished with a result
//! or an error, expired when nobody ran them in time.
//!
//! States move forward only: `queued → sent → running → done | failed | cancelled`, and any
//! unfinished state → `expired`. The one way back is [`Store::requeue_unfinished`]: when an
//! agent's connection drops, what it was sent may never have run, so it is queued again (tasks
//! are collections, safe to repeat; signed actions carry their own replay protection).

use cordon_api::tasks::TaskErrorCode;
use serde::{Deserialize, Serialize};
use sqlx::{any::AnyRow, Row};

use super::{db_err, parse_stored, task_writes::TaskWrite, touched, Store, StoreError};
pub use cordon_api::tasks::TaskState;

/// A task to create.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub id: String,
    pub agent_id: String,
    pub hunt_id: Option<String>,
    /// Short name, e.g. "processes".
    pub kind: String,
    /// JSON of the protocol's `TaskKind`.
    pub request: String,
    pub created_by: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// A stored task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: String,
    pub agent_id: String,
    pub hunt_id: Option<String>,
    pub kind: String,
    pub request: String,
    pub state: TaskState,
    pub created_by: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub sent_at_ms: Option<i64>,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    /// JSON result of a successful task.
    pub result: Option<String>,
    pub error_code: Option<TaskErrorCode>,
    pub error_message: Option<String>,
}

/// How a task ended.
#[derive(Debug, Clone)]
pub enum TaskEnd {
    Done {
        result: String,
    },
    Failed {
        code: TaskErrorCode,
        message: String,
    },
    Cancelled {
        message: String,
    },
}

impl NewTask {
    /// What this task shares with others created with it (nothing: it is a batch of one).
    pub(super) fn shared(&self) -> TaskShared<'_> {
        TaskShared {
            hunt_id: self.hunt_id.as_deref(),
            kind: &self.kind,
            request: &self.request,
            created_by: &self.created_by,
            created_at_ms: self.created_at_ms,
            expires_at_ms: self.expires_at_ms,
        }
    }

    pub(super) fn row(&self, sent: bool) -> TaskRow<'_> {
        TaskRow {
            id: &self.id,
            agent_id: &self.agent_id,
            sent,
        }
    }
}

/// The columns tasks created together have in common: all of them for a hunt's tasks.
pub(super) struct TaskShared<'a> {
    pub hunt_id: Option<&'a str>,
    pub kind: &'a str,
    pub request: &'a str,
    pub created_by: &'a str,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// What each task of a batch has of its own.
pub(super) struct TaskRow<'a> {
    pub id: &'a str,
    pub agent_id: &'a str,
    /// Stored as already `sent` (the caller hands it to the live session right after the
    /// commit, and puts it back to `queued` if that fails) rather than `queued`.
    pub sent: bool,
}

/// Rows per multi-row `INSERT`: 4 parameters each plus 6 shared, well under SQLite's and
/// PostgreSQL's parameter limits.
pub(super) const INSERT_BATCH: usize = 500;

/// The one way tasks are written, on `conn` (the pool, or the transaction of the hunt or
/// action they belong to): one multi-row `INSERT` per [`INSERT_BATCH`] rows.
pub(super) async fn insert_tasks(
    conn: &mut sqlx::AnyConnection,
    shared: &TaskShared<'_>,
    rows: &[TaskRow<'_>],
) -> Result<(), StoreError> {
    for batch in rows.chunks(INSERT_BATCH) {
        // $1–$6 are the same for every row; each row adds its own four.
        let values: Vec<String> = (0..batch.len())
            .map(|i| {
                let p = 7 + 4 * i;
                format!(
                    "(${p}, ${}, $1, $2, $3, ${}, $4, $5, $6, ${})",
                    p + 1,
                    p + 2,
                    p + 3
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO tasks (id, agent_id, hunt_id, kind, request, state, created_by, \
             created_at, expires_at, sent_at) VALUES {}",
            values.join(", ")
        );
        let mut insert = sqlx::query(&sql)
            .bind(shared.hunt_id)
            .bind(shared.kind)
            .bind(shared.request)
            .bind(shared.created_by)
            .bind(shared.created_at_ms)
            .bind(shared.expires_at_ms);
        for row in batch {
            let (state, sent_at) = match row.sent {
                true => (TaskState::Sent, Some(shared.created_at_ms)),
                false => (TaskState::Queued, None),
            };
            insert = insert
                .bind(row.id)
                .bind(row.agent_id)
                .bind(state.as_str())
                .bind(sent_at);
        }
        insert
            .execute(&mut *conn)
            .await
            .map_err(db_err("insert tasks"))?;
    }
    Ok(())
}

const COLUMNS: &str = "id, agent_id, hunt_id, kind, request, state, created_by, created_at, \
    expires_at, sent_at, started_at, finished_at, result, error_code, error_message";

impl Store {
    pub async fn insert_task(&self, task: &NewTask) -> Result<(), StoreError> {
        let mut conn = self.pool().acquire().await.map_err(db_err("insert task"))?;
        insert_tasks(&mut conn, &task.shared(), &[task.row(false)]).await
    }

    pub async fn get_task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM tasks WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(db_err("read task"))?;
        row.as_ref().map(task_from_row).transpose()
    }

    /// Newest first, optionally for one agent.
    pub async fn list_tasks(
        &self,
        agent_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        // One query for both cases: an empty agent filter matches every agent.
        let sql = format!(
            "SELECT {COLUMNS} FROM tasks WHERE ($1 = '' OR agent_id = $1) \
             ORDER BY created_at DESC, id LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(agent_id.unwrap_or(""))
            .bind(limit)
            .fetch_all(self.pool())
            .await
            .map_err(db_err("list tasks"))?;
        rows.iter().map(task_from_row).collect()
    }

    /// Queued, unexpired tasks of an agent, oldest first.
    pub async fn queued_tasks(
        &self,
        agent_id: &str,
        now_ms: i64,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM tasks WHERE agent_id = $1 AND state = 'queued' \
             AND expires_at > $2 ORDER BY created_at, id"
        ))
        .bind(agent_id)
        .bind(now_ms)
        .fetch_all(self.pool())
        .await
        .map_err(db_err("read queued tasks"))?;
        rows.iter().map(task_from_row).collect()
    }

    /// Agents that have queued, unexpired tasks.
    pub async fn agents_with_queued_tasks(&self, now_ms: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT agent_id FROM tasks WHERE state = 'queued' AND expires_at > $1",
        )
        .bind(now_ms)
        .fetch_all(self.pool())
        .await
        .map_err(db_err("read agents with queued tasks"))?;
        rows.iter()
            .map(|r| r.try_get("agent_id").map_err(db_err("read agent id")))
            .collect()
    }

    /// `queued → sent`. False if the task was no longer queued.
    pub async fn mark_task_sent(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE tasks SET state = 'sent', sent_at = $2 WHERE id = $1 AND state = 'queued'",
        )
        .bind(id)
        .bind(now_ms)
        .execute(self.pool())
        .await
        .map_err(db_err("mark task sent"))?;
        Ok(touched(&result))
    }

    /// `sent → running`, only for the agent the task belongs to. Committed together with other
    /// task writes arriving at the same time ([`super::task_writes`]).
    pub async fn mark_task_running(
        &self,
        id: &str,
        agent_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.write_task_state(TaskWrite::Running {
            id: id.to_string(),
            agent_id: agent_id.to_string(),
            at_ms: now_ms,
        })
        .await
    }

    /// [`Store::mark_task_running`] for several tasks of one agent, `(id, started at)`, in one
    /// commit; each its own outcome.
    pub async fn mark_tasks_running(
        &self,
        agent_id: &str,
        started: Vec<(String, i64)>,
    ) -> Vec<Result<bool, StoreError>> {
        let writes = started
            .into_iter()
            .map(|(id, at_ms)| TaskWrite::Running {
                id,
                agent_id: agent_id.to_string(),
                at_ms,
            })
            .collect();
        self.write_task_states(writes).await
    }

    /// Ends an unfinished task. `agent_id` guards against an agent answering for another's
    /// task; `None` (the controller itself, e.g. cancelling a queued task) skips that check.
    /// False if the task is unknown, someone else's, or already ended. Committed together with
    /// other task writes arriving at the same time ([`super::task_writes`]).
    pub async fn finish_task(
        &self,
        id: &str,
        agent_id: Option<&str>,
        end: &TaskEnd,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.finish_started_task(id, agent_id, end, None, now_ms)
            .await
    }

    /// [`Store::finish_task`], also recording `started_at_ms`, when the agent reported the start,
    /// if no start was written (a task that ends quickly gets no `running` write of its own).
    pub async fn finish_started_task(
        &self,
        id: &str,
        agent_id: Option<&str>,
        end: &TaskEnd,
        started_at_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.write_task_state(TaskWrite::Finish {
            id: id.to_string(),
            agent_id: agent_id.map(str::to_string),
            end: end.clone(),
            started_at_ms,
            at_ms: now_ms,
        })
        .await
    }

    /// `sent → queued` for one task that could not be handed to its session after all.
    pub async fn requeue_task(&self, id: &str) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE tasks SET state = 'queued', sent_at = NULL WHERE id = $1 AND state = 'sent'",
        )
        .bind(id)
        .execute(self.pool())
        .await
        .map_err(db_err("requeue task"))?;
        Ok(touched(&result))
    }

    /// `sent | running → queued` for an agent whose connection dropped.
    pub async fn requeue_unfinished(&self, agent_id: &str) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "UPDATE tasks SET state = 'queued', sent_at = NULL, started_at = NULL \
             WHERE agent_id = $1 AND state IN ('sent', 'running')",
        )
        .bind(agent_id)
        .execute(self.pool())
        .await
        .map_err(db_err("requeue tasks"))?;
        Ok(result.rows_affected())
    }

    /// Marks every unfinished task past its expiry as expired; returns their ids.
    pub async fn expire_tasks(&self, now_ms: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "UPDATE tasks SET state = 'expired', finished_at = $1, error_code = 'expired', \
             error_message = 'the task expired before the agent finished it' \
             WHERE state IN ('queued', 'sent', 'running') AND expires_at <= $1 RETURNING id",
        )
        .bind(now_ms)
        .fetch_all(self.pool())
        .await
        .map_err(db_err("expire tasks"))?;
        rows.iter()
            .map(|r| r.try_get("id").map_err(db_err("read task id")))
            .collect()
    }
}

fn task_from_row(row: &AnyRow) -> Result<TaskRecord, StoreError> {
    let get = |name: &'static str| db_err(name);
    let state: String = row.try_get("state").map_err(get("read task state"))?;
    Ok(TaskRecord {
        id: row.try_get("id").map_err(get("read task"))?,
        agent_id: row.try_get("agent_id").map_err(get("read task"))?,
        hunt_id: row.try_get("hunt_id").map_err(get("read task"))?,
        kind: row.try_get("kind").map_err(get("read task"))?,
        request: row.try_get("request").map_err(get("read task"))?,
        state: parse_stored("task state", &state)?,
        created_by: row.try_get("created_by").map_err(get("read task"))?,
        created_at_ms: row.try_get("created_at").map_err(get("read task"))?,
        expires_at_ms: row.try_get("expires_at").map_err(get("read task"))?,
        sent_at_ms: row.try_get("sent_at").map_err(get("read task"))?,
        started_at_ms: row.try_get("started_at").map_err(get("read task"))?,
        finished_at_ms: row.try_get("finished_at").map_err(get("read task"))?,
        result: row.try_get("result").map_err(get("read task"))?,
        error_code: stored_code(row.try_get("error_code").map_err(get("read task"))?),
        error_message: row.try_get("error_message").map_err(get("read task"))?,
    })
}

impl TaskEnd {
    /// The row's columns for this end: state, result, error code, error message.
    pub(crate) fn columns(
        &self,
    ) -> (
        &'static str,
        Option<&str>,
        Option<&'static str>,
        Option<&str>,
    ) {
        match self {
            TaskEnd::Done { result } => ("done", Some(result), None, None),
            TaskEnd::Failed { code, message } => {
                ("failed", None, Some(code.as_str()), Some(message))
            }
            TaskEnd::Cancelled { message } => (
                "cancelled",
                None,
                Some(TaskErrorCode::Cancelled.as_str()),
                Some(message),
            ),
        }
    }
}

/// A stored error code, typed.
pub(crate) fn stored_code(code: Option<String>) -> Option<TaskErrorCode> {
    code.as_deref().map(TaskErrorCode::from_stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::backend_tests;

    const NOW: i64 = 1_700_000_000_000;

    async fn agent(store: &Store, id: &str) {
        crate::store::test_support::enrolled_agent(store, id, NOW).await;
    }

    fn task(id: &str, agent_id: &str, expires_at_ms: i64) -> NewTask {
        NewTask {
            id: id.into(),
            agent_id: agent_id.into(),
            hunt_id: None,
            kind: "ping".into(),
            request: "\"Ping\"".into(),
            created_by: "tester".into(),
            created_at_ms: NOW,
            expires_at_ms,
        }
    }

    async fn lifecycle(store: &Store) {
        agent(store, "a1").await;
        agent(store, "a2").await;
        store
            .insert_task(&task("t1", "a1", NOW + 1000))
            .await
            .unwrap();
        assert_eq!(store.queued_tasks("a1", NOW).await.unwrap().len(), 1);
        assert_eq!(
            store.agents_with_queued_tasks(NOW).await.unwrap(),
            vec!["a1"]
        );
        assert!(store.mark_task_sent("t1", NOW + 1).await.unwrap());
        assert!(
            !store.mark_task_sent("t1", NOW + 1).await.unwrap(),
            "sent once"
        );
        assert!(
            !store.mark_task_running("t1", "a2", NOW + 2).await.unwrap(),
            "not a2's task"
        );
        assert!(store.mark_task_running("t1", "a1", NOW + 2).await.unwrap());
        let done = TaskEnd::Done {
            result: "{\"ok\":true}".into(),
        };
        assert!(!store
            .finish_task("t1", Some("a2"), &done, NOW + 3)
            .await
            .unwrap());
        assert!(store
            .finish_task("t1", Some("a1"), &done, NOW + 3)
            .await
            .unwrap());
        assert!(
            !store
                .finish_task("t1", Some("a1"), &done, NOW + 4)
                .await
                .unwrap(),
            "ends once"
        );
        let t = store.get_task("t1").await.unwrap().unwrap();
        assert_eq!(t.state, TaskState::Done);
        assert_eq!(t.result.as_deref(), Some("{\"ok\":true}"));
        assert_eq!(t.finished_at_ms, Some(NOW + 3));
    }

    async fn disconnect_requeues_and_expiry_ends(store: &Store) {
        agent(store, "a1").await;
        store
            .insert_task(&task("t1", "a1", NOW + 1000))
            .await
            .unwrap();
        store
            .insert_task(&task("t2", "a1", NOW + 5000))
            .await
            .unwrap();
        store.mark_task_sent("t1", NOW).await.unwrap();
        store.mark_task_sent("t2", NOW).await.unwrap();
        assert_eq!(store.requeue_unfinished("a1").await.unwrap(), 2);
        assert_eq!(store.queued_tasks("a1", NOW).await.unwrap().len(), 2);
        let expired = store.expire_tasks(NOW + 1000).await.unwrap();
        assert_eq!(expired, vec!["t1"]);
        let t1 = store.get_task("t1").await.unwrap().unwrap();
        assert_eq!(t1.state, TaskState::Expired);
        assert_eq!(store.queued_tasks("a1", NOW + 1000).await.unwrap().len(), 1);
        let listed = store.list_tasks(Some("a1"), 10).await.unwrap();
        assert_eq!(listed.len(), 2);
    }

    async fn cancelled_and_failed_keep_their_reason(store: &Store) {
        agent(store, "a1").await;
        store
            .insert_task(&task("t1", "a1", NOW + 1000))
            .await
            .unwrap();
        store
            .insert_task(&task("t2", "a1", NOW + 1000))
            .await
            .unwrap();
        let cancel = TaskEnd::Cancelled {
            message: "by alice".into(),
        };
        assert!(store.finish_task("t1", None, &cancel, NOW).await.unwrap());
        let fail = TaskEnd::Failed {
            code: TaskErrorCode::NotFound,
            message: "no such file /x".into(),
        };
        assert!(store
            .finish_task("t2", Some("a1"), &fail, NOW)
            .await
            .unwrap());
        let t1 = store.get_task("t1").await.unwrap().unwrap();
        assert_eq!(t1.state, TaskState::Cancelled);
        assert_eq!(t1.error_message.as_deref(), Some("by alice"));
        let t2 = store.get_task("t2").await.unwrap().unwrap();
        assert_eq!(t2.state, TaskState::Failed);
        assert_eq!(t2.error_code, Some(TaskErrorCode::NotFound));
        assert!(store.queued_tasks("a1", NOW).await.unwrap().is_empty());
    }

    backend_tests!(
        lifecycle,
        disconnect_requeues_and_expiry_ends,
        cancelled_and_failed_keep_their_reason
    );
}
