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

const COLUMNS: &str = "id, agent_id, hunt_id, kind, request, state, created_by, created_at, \
    expires_at, sent_at, started_at, finished_at, result, error_code, error_message";

impl Store {
    pub async fn insert_task(&self, task: &NewTask) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tasks (id, agent_id, hunt_id, kind, request, state, created_by, \
             created_at, expires_at) VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $8)",
        )
        .bind(&task.id)
        .bind(&task.agent_id)
        .bind(&task.hunt_id)
        .bind(&task.kind)
        .bind(&task.request)
        .bind(&task.created_by)
        .bind(task.created_at_ms)
        .bind(task.expires_at_ms)
        .execute(self.pool())
        .await
        .map_err(db_err("insert task"))?;
        Ok(())
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
