//! Hunts: one query run on many agents. A hunt is a row in `hunts` plus one ordinary task per
//! targeted agent carrying the hunt's id (`tasks.hunt_id`), so queueing, delivery, expiry and
//! results are the task machinery's; this module creates a hunt with all its tasks at once and
//! reads their progress back.

use std::collections::HashMap;

use cordon_api::tasks::TaskErrorCode;
use serde::{Deserialize, Serialize};
use sqlx::{any::AnyRow, Row};

use super::tasks::stored_code;

use super::{
    db_err,
    tasks::{insert_tasks, TaskRow, TaskShared, TaskState},
    Store, StoreError,
};
pub use cordon_api::hunts::TaskCounts;

/// A hunt to create.
#[derive(Debug, Clone)]
pub struct NewHunt {
    pub id: String,
    /// JSON of the protocol's `HuntQuery`.
    pub query: String,
    /// The `key=value` label that chose the agents; `None` for all agents.
    pub label: Option<String>,
    pub created_by: String,
    pub created_at_ms: i64,
    /// Its tasks expire then: offline agents are picked up until this instant.
    pub expires_at_ms: i64,
}

/// One agent a hunt targets, and its task.
#[derive(Debug, Clone)]
pub struct HuntTarget {
    pub task_id: String,
    pub agent_id: String,
    /// Stored as already `sent` (the caller hands it to the live session right after the
    /// commit) rather than `queued`.
    pub sent: bool,
}

/// A stored hunt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HuntRecord {
    pub id: String,
    pub query: String,
    pub label: Option<String>,
    pub created_by: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    /// How many agents it targeted (one task each).
    pub agent_count: i64,
}

/// One targeted agent's task, as a hunt's results list it.
#[derive(Debug, Clone)]
pub struct HuntTaskRow {
    pub task_id: String,
    pub agent_id: String,
    pub hostname: String,
    pub state: TaskState,
    /// The agent's answer (JSON), when done.
    pub result: Option<String>,
    pub error_code: Option<TaskErrorCode>,
    pub error_message: Option<String>,
    pub finished_at_ms: Option<i64>,
}

const HUNT_COLUMNS: &str = "id, query, label, created_by, created_at, expires_at, agent_count";

impl Store {
    /// Agents a hunt may target, as (id, labels): every agent not revoked, by id.
    pub async fn hunt_candidates(&self) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        let rows =
            sqlx::query("SELECT id, labels FROM agents WHERE revoked_at IS NULL ORDER BY id")
                .fetch_all(self.pool())
                .await
                .map_err(db_err("list hunt candidates"))?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("id").map_err(db_err("read agent"))?;
                let labels: String = row.try_get("labels").map_err(db_err("read agent"))?;
                let labels = serde_json::from_str(&labels).map_err(|source| StoreError::Json {
                    what: "agent labels",
                    source,
                })?;
                Ok((id, labels))
            })
            .collect()
    }

    /// Creates the hunt and one task per target, all in one transaction: a hunt is never seen
    /// with half its tasks. Every task carries `request` (JSON of the protocol's `TaskKind`).
    pub async fn create_hunt(
        &self,
        hunt: &NewHunt,
        request: &str,
        targets: &[HuntTarget],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write("begin hunt").await?;
        sqlx::query(&format!(
            "INSERT INTO hunts ({HUNT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .bind(&hunt.id)
        .bind(&hunt.query)
        .bind(&hunt.label)
        .bind(&hunt.created_by)
        .bind(hunt.created_at_ms)
        .bind(hunt.expires_at_ms)
        .bind(i64::try_from(targets.len()).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await
        .map_err(db_err("insert hunt"))?;
        let shared = TaskShared {
            hunt_id: Some(&hunt.id),
            kind: "hunt",
            request,
            created_by: &hunt.created_by,
            created_at_ms: hunt.created_at_ms,
            expires_at_ms: hunt.expires_at_ms,
        };
        let rows: Vec<TaskRow<'_>> = targets
            .iter()
            .map(|t| TaskRow {
                id: &t.task_id,
                agent_id: &t.agent_id,
                sent: t.sent,
            })
            .collect();
        insert_tasks(&mut tx, &shared, &rows).await?;
        tx.commit().await.map_err(db_err("commit hunt"))?;
        Ok(())
    }

    pub async fn get_hunt(&self, id: &str) -> Result<Option<HuntRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {HUNT_COLUMNS} FROM hunts WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(db_err("read hunt"))?;
        row.as_ref().map(hunt_from_row).transpose()
    }

    /// Newest first.
    pub async fn list_hunts(&self, limit: i64) -> Result<Vec<HuntRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {HUNT_COLUMNS} FROM hunts ORDER BY created_at DESC, id LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(db_err("list hunts"))?;
        rows.iter().map(hunt_from_row).collect()
    }

    /// Task states of one hunt.
    pub async fn hunt_counts(&self, hunt_id: &str) -> Result<TaskCounts, StoreError> {
        let rows = sqlx::query(
            "SELECT hunt_id, state, COUNT(*) AS n FROM tasks WHERE hunt_id = $1 \
             GROUP BY hunt_id, state",
        )
        .bind(hunt_id)
        .fetch_all(self.pool())
        .await
        .map_err(db_err("count hunt tasks"))?;
        Ok(counts_from_rows(&rows)?.remove(hunt_id).unwrap_or_default())
    }

    /// Task states of the `limit` newest hunts (those [`Store::list_hunts`] returns), by hunt.
    pub async fn recent_hunt_counts(
        &self,
        limit: i64,
    ) -> Result<HashMap<String, TaskCounts>, StoreError> {
        let rows = sqlx::query(
            "SELECT hunt_id, state, COUNT(*) AS n FROM tasks WHERE hunt_id IN \
             (SELECT id FROM hunts ORDER BY created_at DESC, id LIMIT $1) \
             GROUP BY hunt_id, state",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(db_err("count hunt tasks"))?;
        counts_from_rows(&rows)
    }

    /// Every task of a hunt with its agent's host name, by host name then agent id.
    pub async fn hunt_tasks(&self, hunt_id: &str) -> Result<Vec<HuntTaskRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.id, t.agent_id, a.hostname, t.state, t.result, t.error_code, \
             t.error_message, t.finished_at FROM tasks t JOIN agents a ON a.id = t.agent_id \
             WHERE t.hunt_id = $1 ORDER BY a.hostname, t.agent_id",
        )
        .bind(hunt_id)
        .fetch_all(self.pool())
        .await
        .map_err(db_err("read hunt tasks"))?;
        rows.iter()
            .map(|row| {
                let get = || db_err("read hunt task");
                let state: String = row.try_get("state").map_err(get())?;
                Ok(HuntTaskRow {
                    task_id: row.try_get("id").map_err(get())?,
                    agent_id: row.try_get("agent_id").map_err(get())?,
                    hostname: row.try_get("hostname").map_err(get())?,
                    state: parse_state(&state)?,
                    result: row.try_get("result").map_err(get())?,
                    error_code: stored_code(row.try_get("error_code").map_err(get())?),
                    error_message: row.try_get("error_message").map_err(get())?,
                    finished_at_ms: row.try_get("finished_at").map_err(get())?,
                })
            })
            .collect()
    }
}

fn counts_from_rows(rows: &[AnyRow]) -> Result<HashMap<String, TaskCounts>, StoreError> {
    let mut out: HashMap<String, TaskCounts> = HashMap::new();
    for row in rows {
        let get = || db_err("read hunt task counts");
        let hunt_id: String = row.try_get("hunt_id").map_err(get())?;
        let state: String = row.try_get("state").map_err(get())?;
        let n: i64 = row.try_get("n").map_err(get())?;
        out.entry(hunt_id).or_default().add(parse_state(&state)?, n);
    }
    Ok(out)
}

fn parse_state(s: &str) -> Result<TaskState, StoreError> {
    [
        TaskState::Queued,
        TaskState::Sent,
        TaskState::Running,
        TaskState::Done,
        TaskState::Failed,
        TaskState::Expired,
        TaskState::Cancelled,
    ]
    .into_iter()
    .find(|state| state.as_str() == s)
    .ok_or_else(|| StoreError::InvalidData {
        what: "task state",
        detail: s.to_owned(),
    })
}

fn hunt_from_row(row: &AnyRow) -> Result<HuntRecord, StoreError> {
    let get = || db_err("read hunt");
    Ok(HuntRecord {
        id: row.try_get("id").map_err(get())?,
        query: row.try_get("query").map_err(get())?,
        label: row.try_get("label").map_err(get())?,
        created_by: row.try_get("created_by").map_err(get())?,
        created_at_ms: row.try_get("created_at").map_err(get())?,
        expires_at_ms: row.try_get("expires_at").map_err(get())?,
        agent_count: row.try_get("agent_count").map_err(get())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{tasks::INSERT_BATCH, test_support::backend_tests, TaskEnd};

    const NOW: i64 = 1_700_000_000_000;

    fn hunt(id: &str, created_at_ms: i64) -> NewHunt {
        NewHunt {
            id: id.into(),
            query: r#"{"process_name":"sshd"}"#.into(),
            label: Some("env=prod".into()),
            created_by: "alice".into(),
            created_at_ms,
            expires_at_ms: created_at_ms + 60_000,
        }
    }

    fn target(task_id: &str, agent_id: &str, sent: bool) -> HuntTarget {
        HuntTarget {
            task_id: task_id.into(),
            agent_id: agent_id.into(),
            sent,
        }
    }

    /// Inserts many agents directly (enrolment per agent would make this test slow).
    async fn many_agents(store: &Store, n: usize) {
        let mut tx = store.begin_write("test agents").await.unwrap();
        for i in 0..n {
            sqlx::query("INSERT INTO agents (id, hostname, enrolled_at) VALUES ($1, $2, $3)")
                .bind(format!("bulk-{i:05}"))
                .bind(format!("host-{i:05}"))
                .bind(NOW)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }

    async fn a_hunt_is_created_with_its_tasks_and_counted(store: &Store) {
        for id in ["a1", "a2", "a3", "gone"] {
            crate::store::test_support::enrolled_agent(store, id, NOW).await;
        }
        store
            .set_agent_labels("a1", &["env=prod".into()])
            .await
            .unwrap();
        store.revoke_agent("gone", NOW).await.unwrap();
        let candidates = store.hunt_candidates().await.unwrap();
        let ids: Vec<&str> = candidates.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, vec!["a1", "a2", "a3"], "revoked agents are not hunted");
        assert_eq!(candidates[0].1, vec!["env=prod".to_string()]);

        let targets = [
            target("t1", "a1", true),
            target("t2", "a2", false),
            target("t3", "a3", true),
        ];
        store
            .create_hunt(&hunt("h1", NOW), "\"Ping\"", &targets)
            .await
            .unwrap();
        let record = store.get_hunt("h1").await.unwrap().unwrap();
        assert_eq!(record.agent_count, 3);
        assert_eq!(record.label.as_deref(), Some("env=prod"));
        assert_eq!(record.expires_at_ms, NOW + 60_000);
        let counts = store.hunt_counts("h1").await.unwrap();
        assert_eq!((counts.sent, counts.queued, counts.total()), (2, 1, 3));

        let t2 = store.get_task("t2").await.unwrap().unwrap();
        assert_eq!(t2.hunt_id.as_deref(), Some("h1"));
        assert_eq!(t2.kind, "hunt");
        assert_eq!(t2.state, TaskState::Queued);
        assert_eq!(t2.expires_at_ms, NOW + 60_000);
        let t1 = store.get_task("t1").await.unwrap().unwrap();
        assert_eq!((t1.state, t1.sent_at_ms), (TaskState::Sent, Some(NOW)));
        assert_eq!(store.queued_tasks("a2", NOW).await.unwrap().len(), 1);

        let done = TaskEnd::Done {
            result: r#"{"matched":true}"#.into(),
        };
        assert!(store
            .finish_task("t1", Some("a1"), &done, NOW + 5)
            .await
            .unwrap());
        assert_eq!(store.expire_tasks(NOW + 60_000).await.unwrap().len(), 2);
        let counts = store.hunt_counts("h1").await.unwrap();
        assert_eq!((counts.done, counts.expired, counts.finished()), (1, 2, 3));

        let rows = store.hunt_tasks("h1").await.unwrap();
        let hosts: Vec<&str> = rows.iter().map(|r| r.hostname.as_str()).collect();
        assert_eq!(hosts, vec!["a1", "a2", "a3"]);
        assert_eq!(rows[0].result.as_deref(), Some(r#"{"matched":true}"#));
        assert_eq!(rows[0].finished_at_ms, Some(NOW + 5));
        assert_eq!(rows[1].state, TaskState::Expired);
        assert_eq!(rows[1].error_code, Some(TaskErrorCode::Expired));
        assert!(store.get_hunt("nope").await.unwrap().is_none());
        assert_eq!(
            store.hunt_counts("nope").await.unwrap(),
            TaskCounts::default()
        );
    }

    async fn many_tasks_go_in_batches_and_hunts_list_newest_first(store: &Store) {
        let n = INSERT_BATCH * 2 + 7;
        many_agents(store, n).await;
        let targets: Vec<HuntTarget> = (0..n)
            .map(|i| target(&format!("task-{i}"), &format!("bulk-{i:05}"), i % 2 == 0))
            .collect();
        store
            .create_hunt(&hunt("big", NOW), "\"Ping\"", &targets)
            .await
            .unwrap();
        store
            .create_hunt(&hunt("small", NOW + 1), "\"Ping\"", &targets[..1])
            .await
            .unwrap_err();
        // Task ids are unique: the failed hunt left nothing behind.
        assert!(store.get_hunt("small").await.unwrap().is_none());
        store
            .create_hunt(
                &hunt("later", NOW + 1),
                "\"Ping\"",
                &[target("x", "bulk-00001", false)],
            )
            .await
            .unwrap();

        let counts = store.hunt_counts("big").await.unwrap();
        assert_eq!(counts.total(), n as i64);
        assert_eq!(counts.sent, (n as i64 + 1) / 2);
        assert_eq!(store.hunt_tasks("big").await.unwrap().len(), n);
        let listed: Vec<String> = store
            .list_hunts(10)
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.id)
            .collect();
        assert_eq!(listed, vec!["later", "big"]);
        let recent = store.recent_hunt_counts(1).await.unwrap();
        assert_eq!(recent.len(), 1);
        assert_eq!(recent["later"].queued, 1);
        assert_eq!(
            store.recent_hunt_counts(10).await.unwrap()["big"].total(),
            n as i64
        );
    }

    backend_tests!(
        a_hunt_is_created_with_its_tasks_and_counted,
        many_tasks_go_in_batches_and_hunts_list_newest_first
    );
}
