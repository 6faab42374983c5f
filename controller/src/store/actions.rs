//! Signed containment actions: the request as signed, the signatures collected so far, and how
//! it ended (the agent's receipt, or why not).
//!
//! States: `pending` (fewer distinct signers than the agent's policy asks for) → `submitted`
//! (enough: handed to the agent as a task) → `done` (a verified receipt) | `failed` (refused,
//! or the agent could not do it); `pending | submitted → expired` once `expires_at` passes. A
//! receipt always wins: one arriving after the sweeper expired the action still records it as
//! done, because the agent did act.

use cordon_api::tasks::TaskErrorCode;
use serde::{Deserialize, Serialize};
use sqlx::{any::AnyRow, Row};

use super::tasks::{insert_tasks, stored_code};

use super::{
    db_err, parse_stored, task_writes::TaskWrite, touched, AuditEntry, NewAuditEntry, NewTask,
    Store, StoreError, TaskEnd,
};
pub use cordon_api::actions::ActionState;

/// An action to record.
#[derive(Debug, Clone)]
pub struct NewAction {
    /// The request's action id.
    pub id: String,
    pub agent_id: String,
    /// Action name, e.g. "kill".
    pub kind: String,
    /// The `ActionRequest` as JSON.
    pub request: String,
    /// Hex of `signing_bytes(request)`: what every signature covers.
    pub signing_bytes: String,
    /// JSON list of the signatures so far.
    pub signatures: String,
    pub required_signers: i64,
    pub created_by: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// A stored action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionRecord {
    pub id: String,
    pub agent_id: String,
    pub kind: String,
    pub request: String,
    pub signing_bytes: String,
    pub signatures: String,
    pub required_signers: i64,
    pub state: ActionState,
    pub task_id: Option<String>,
    /// JSON of the verified receipt, when done.
    pub receipt: Option<String>,
    pub error_code: Option<TaskErrorCode>,
    pub error_message: Option<String>,
    pub created_by: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub submitted_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
}

/// How an action ended.
#[derive(Debug, Clone)]
pub enum ActionEnd {
    /// A receipt that verified under the agent's pinned key (JSON).
    Done { receipt: String },
    /// The agent refused or failed, or its answer did not check out.
    Failed {
        code: TaskErrorCode,
        message: String,
    },
    /// Its task ended without an answer before the action expired.
    Expired { message: String },
}

const COLUMNS: &str = "id, agent_id, kind, request, signing_bytes, signatures, required_signers, \
    state, task_id, receipt, error_code, error_message, created_by, created_at, expires_at, \
    submitted_at, finished_at";

/// How the task that delivers an action starts out.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub task: &'a NewTask,
    /// `sent` (the caller hands it to the agent's live session right after the commit, and
    /// puts it back to `queued` if that fails) rather than `queued` for the dispatcher: one
    /// write less on the way to an online agent.
    pub send_now: bool,
}

/// The task that delivers an action, inside the action's own transaction so an action is never
/// submitted without its task.
async fn insert_task(
    conn: &mut sqlx::AnyConnection,
    delivery: Delivery<'_>,
) -> Result<(), StoreError> {
    let task = delivery.task;
    insert_tasks(conn, &task.shared(), &[task.row(delivery.send_now)]).await
}

impl Store {
    /// Records a new action: `pending`, or with `delivery` (its task) `submitted`, both in one
    /// transaction.
    pub async fn insert_action(
        &self,
        action: &NewAction,
        delivery: Option<Delivery<'_>>,
    ) -> Result<(), StoreError> {
        self.insert_action_audited(action, delivery, None)
            .await
            .map(|_| ())
    }

    /// [`Store::insert_action`], with `audit` (the API call's `attempt` entry) appended to the
    /// audit log in the same transaction: the entry is durable before anything it announces
    /// is, and it costs no commit of its own. Returns the appended entry.
    pub async fn insert_action_audited(
        &self,
        action: &NewAction,
        delivery: Option<Delivery<'_>>,
        audit: Option<&NewAuditEntry>,
    ) -> Result<Option<AuditEntry>, StoreError> {
        let task = delivery.map(|d| d.task);
        let mut tx = self.begin_write("begin insert action").await?;
        let appended = match audit {
            Some(entry) => Some(self.append_audit_on(&mut tx, entry).await.map_err(|e| {
                StoreError::AuditUnavailable {
                    source: Box::new(e),
                }
            })?),
            None => None,
        };
        let state = match task {
            Some(_) => ActionState::Submitted,
            None => ActionState::Pending,
        };
        sqlx::query(
            "INSERT INTO actions (id, agent_id, kind, request, signing_bytes, signatures, \
             required_signers, state, task_id, created_by, created_at, expires_at, submitted_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&action.id)
        .bind(&action.agent_id)
        .bind(&action.kind)
        .bind(&action.request)
        .bind(&action.signing_bytes)
        .bind(&action.signatures)
        .bind(action.required_signers)
        .bind(state.as_str())
        .bind(task.map(|t| t.id.as_str()))
        .bind(&action.created_by)
        .bind(action.created_at_ms)
        .bind(action.expires_at_ms)
        .bind(task.map(|t| t.created_at_ms))
        .execute(&mut *tx)
        .await
        .map_err(db_err("insert action"))?;
        if let Some(delivery) = delivery {
            insert_task(&mut tx, delivery).await?;
        }
        tx.commit().await.map_err(db_err("commit insert action"))?;
        Ok(appended)
    }

    /// Replaces a pending action's signatures, if they are still `expected` (so two approvals
    /// racing never lose one), and with `delivery` submits it. False if the action is no
    /// longer pending or its signatures changed meanwhile.
    pub async fn update_action_signatures(
        &self,
        id: &str,
        expected: &str,
        signatures: &str,
        required_signers: i64,
        delivery: Option<Delivery<'_>>,
    ) -> Result<bool, StoreError> {
        let task = delivery.map(|d| d.task);
        let mut tx = self.begin_write("begin add signature").await?;
        let state = match task {
            Some(_) => ActionState::Submitted,
            None => ActionState::Pending,
        };
        let result = sqlx::query(
            "UPDATE actions SET signatures = $3, required_signers = $4, state = $5, \
             task_id = $6, submitted_at = $7 \
             WHERE id = $1 AND state = 'pending' AND signatures = $2",
        )
        .bind(id)
        .bind(expected)
        .bind(signatures)
        .bind(required_signers)
        .bind(state.as_str())
        .bind(task.map(|t| t.id.as_str()))
        .bind(task.map(|t| t.created_at_ms))
        .execute(&mut *tx)
        .await
        .map_err(db_err("add action signature"))?;
        if !touched(&result) {
            tx.rollback()
                .await
                .map_err(db_err("roll back add signature"))?;
            return Ok(false);
        }
        if let Some(delivery) = delivery {
            insert_task(&mut tx, delivery).await?;
        }
        tx.commit().await.map_err(db_err("commit add signature"))?;
        Ok(true)
    }

    pub async fn get_action(&self, id: &str) -> Result<Option<ActionRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM actions WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(db_err("read action"))?;
        row.as_ref().map(action_from_row).transpose()
    }

    /// The action a task delivers, if it delivers one.
    pub async fn action_for_task(&self, task_id: &str) -> Result<Option<ActionRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM actions WHERE task_id = $1"))
            .bind(task_id)
            .fetch_optional(self.pool())
            .await
            .map_err(db_err("read action by task"))?;
        row.as_ref().map(action_from_row).transpose()
    }

    /// Newest first, optionally for one agent.
    pub async fn list_actions(
        &self,
        agent_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ActionRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM actions WHERE ($1 = '' OR agent_id = $1) \
             ORDER BY created_at DESC, id LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(agent_id.unwrap_or(""))
            .bind(limit)
            .fetch_all(self.pool())
            .await
            .map_err(db_err("list actions"))?;
        rows.iter().map(action_from_row).collect()
    }

    /// Records how an action ended. A receipt ends a submitted or expired action (the agent
    /// acted, whatever the clock says); a failure or an expiry only an unfinished one. False
    /// if nothing changed.
    pub async fn finish_action(
        &self,
        id: &str,
        end: &ActionEnd,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut conn = self
            .pool()
            .acquire()
            .await
            .map_err(db_err("finish action"))?;
        finish_action_on(&mut conn, id, None, end, now_ms).await
    }

    /// Agent `agent_id`'s answer to an action's task: ends the action (as
    /// [`Store::finish_action`]) and its task `task_id` in one transaction, each only if it is
    /// that agent's (`task_started_ms`: the task's start, if not written yet, as
    /// [`Store::finish_started_task`]), with `audit` (the receipt's audit entry) appended in
    /// the same transaction. Returns whether the task changed.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_action_and_task(
        &self,
        id: &str,
        end: &ActionEnd,
        task_id: &str,
        agent_id: &str,
        task_end: &TaskEnd,
        task_started_ms: Option<i64>,
        now_ms: i64,
        audit: Option<&NewAuditEntry>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write("begin finish action").await?;
        if let Some(entry) = audit {
            // First: on PostgreSQL it takes the log's lock, which every writer takes first.
            self.append_audit_on(&mut tx, entry).await?;
        }
        finish_action_on(&mut tx, id, Some(agent_id), end, now_ms).await?;
        let task = TaskWrite::Finish {
            id: task_id.to_string(),
            agent_id: Some(agent_id.to_string()),
            end: task_end.clone(),
            started_at_ms: task_started_ms,
            at_ms: now_ms,
        };
        let changed = task.apply(&mut tx).await?;
        tx.commit().await.map_err(db_err("commit finish action"))?;
        Ok(changed)
    }

    /// Expires every unfinished action past its expiry; returns their ids.
    pub async fn expire_actions(&self, now_ms: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "UPDATE actions SET state = 'expired', finished_at = $1, error_code = 'expired', \
             error_message = CASE WHEN state = 'pending' \
                 THEN 'expired before enough distinct keys signed it' \
                 ELSE 'expired before the agent answered' END \
             WHERE state IN ('pending', 'submitted') AND expires_at <= $1 RETURNING id",
        )
        .bind(now_ms)
        .fetch_all(self.pool())
        .await
        .map_err(db_err("expire actions"))?;
        rows.iter()
            .map(|r| r.try_get("id").map_err(db_err("read action id")))
            .collect()
    }
}

async fn finish_action_on(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    agent_id: Option<&str>,
    end: &ActionEnd,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let (state, receipt, code, message, from) = match end {
        ActionEnd::Done { receipt } => (
            ActionState::Done,
            Some(receipt.as_str()),
            None,
            None,
            // Only an action that was delivered can have been acted on.
            "('submitted', 'expired') AND task_id IS NOT NULL",
        ),
        ActionEnd::Failed { code, message } => (
            ActionState::Failed,
            None,
            Some(code.as_str()),
            Some(message.as_str()),
            "('submitted')",
        ),
        ActionEnd::Expired { message } => (
            ActionState::Expired,
            None,
            Some("expired"),
            Some(message.as_str()),
            "('pending', 'submitted')",
        ),
    };
    let result = sqlx::query(&format!(
        "UPDATE actions SET state = $2, receipt = $3, error_code = $4, error_message = $5, \
         finished_at = $6 WHERE id = $1 AND ($7 = '' OR agent_id = $7) AND state IN {from}"
    ))
    .bind(id)
    .bind(state.as_str())
    .bind(receipt)
    .bind(code)
    .bind(message)
    .bind(now_ms)
    .bind(agent_id.unwrap_or(""))
    .execute(conn)
    .await
    .map_err(db_err("finish action"))?;
    Ok(touched(&result))
}

fn action_from_row(row: &AnyRow) -> Result<ActionRecord, StoreError> {
    let get = || db_err("read action");
    let state: String = row.try_get("state").map_err(get())?;
    Ok(ActionRecord {
        id: row.try_get("id").map_err(get())?,
        agent_id: row.try_get("agent_id").map_err(get())?,
        kind: row.try_get("kind").map_err(get())?,
        request: row.try_get("request").map_err(get())?,
        signing_bytes: row.try_get("signing_bytes").map_err(get())?,
        signatures: row.try_get("signatures").map_err(get())?,
        required_signers: row.try_get("required_signers").map_err(get())?,
        state: parse_stored("action state", &state)?,
        task_id: row.try_get("task_id").map_err(get())?,
        receipt: row.try_get("receipt").map_err(get())?,
        error_code: stored_code(row.try_get("error_code").map_err(get())?),
        error_message: row.try_get("error_message").map_err(get())?,
        created_by: row.try_get("created_by").map_err(get())?,
        created_at_ms: row.try_get("created_at").map_err(get())?,
        expires_at_ms: row.try_get("expires_at").map_err(get())?,
        submitted_at_ms: row.try_get("submitted_at").map_err(get())?,
        finished_at_ms: row.try_get("finished_at").map_err(get())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{test_support::backend_tests, TaskState};

    const NOW: i64 = 1_700_000_000_000;

    fn action(id: &str, agent_id: &str, expires_at_ms: i64) -> NewAction {
        NewAction {
            id: id.into(),
            agent_id: agent_id.into(),
            kind: "kill".into(),
            request: "{\"action_id\":\"x\"}".into(),
            signing_bytes: "00ff".into(),
            signatures: "[\"alice\"]".into(),
            required_signers: 2,
            created_by: "alice".into(),
            created_at_ms: NOW,
            expires_at_ms,
        }
    }

    fn task(id: &str, agent_id: &str, expires_at_ms: i64) -> NewTask {
        NewTask {
            id: id.into(),
            agent_id: agent_id.into(),
            hunt_id: None,
            kind: "action".into(),
            request: "\"Ping\"".into(),
            created_by: "alice".into(),
            created_at_ms: NOW + 5,
            expires_at_ms,
        }
    }

    async fn pending_then_approved_then_done(store: &Store) {
        crate::store::test_support::enrolled_agent(store, "a1", NOW).await;
        store
            .insert_action(&action("act1", "a1", NOW + 60_000), None)
            .await
            .unwrap();
        let a = store.get_action("act1").await.unwrap().unwrap();
        assert_eq!(a.state, ActionState::Pending);
        assert_eq!(a.task_id, None);
        assert_eq!(a.required_signers, 2);

        // A second approval computed from stale signatures changes nothing.
        let stale = store
            .update_action_signatures("act1", "[]", "[\"x\",\"y\"]", 2, None)
            .await
            .unwrap();
        assert!(!stale);
        let t = task("t1", "a1", NOW + 60_000);
        assert!(store
            .update_action_signatures(
                "act1",
                "[\"alice\"]",
                "[\"alice\",\"bob\"]",
                2,
                Some(Delivery {
                    task: &t,
                    send_now: false,
                }),
            )
            .await
            .unwrap());
        let a = store.get_action("act1").await.unwrap().unwrap();
        assert_eq!(a.state, ActionState::Submitted);
        assert_eq!(a.task_id.as_deref(), Some("t1"));
        assert_eq!(a.submitted_at_ms, Some(NOW + 5));
        assert_eq!(a.signatures, "[\"alice\",\"bob\"]");
        // The delivering task went in with it.
        let queued = store.get_task("t1").await.unwrap().unwrap();
        assert_eq!(queued.state, TaskState::Queued);
        assert_eq!(queued.kind, "action");
        // Not pending any more: no further signature lands.
        assert!(!store
            .update_action_signatures("act1", "[\"alice\",\"bob\"]", "[]", 2, None)
            .await
            .unwrap());

        assert_eq!(
            store.action_for_task("t1").await.unwrap().unwrap().id,
            "act1"
        );
        assert!(store.action_for_task("t2").await.unwrap().is_none());
        let done = ActionEnd::Done {
            receipt: "{\"done\":\"killed\"}".into(),
        };
        assert!(store.finish_action("act1", &done, NOW + 9).await.unwrap());
        assert!(
            !store.finish_action("act1", &done, NOW + 10).await.unwrap(),
            "ends once"
        );
        let fail = ActionEnd::Failed {
            code: TaskErrorCode::Unauthorized,
            message: "late".into(),
        };
        assert!(!store.finish_action("act1", &fail, NOW + 10).await.unwrap());
        let a = store.get_action("act1").await.unwrap().unwrap();
        assert_eq!(a.state, ActionState::Done);
        assert_eq!(a.receipt.as_deref(), Some("{\"done\":\"killed\"}"));
        assert_eq!(a.finished_at_ms, Some(NOW + 9));
    }

    async fn submitted_at_once_and_failures_keep_their_reason(store: &Store) {
        crate::store::test_support::enrolled_agent(store, "a1", NOW).await;
        crate::store::test_support::enrolled_agent(store, "a2", NOW).await;
        let t = task("t1", "a1", NOW + 60_000);
        store
            .insert_action(
                &action("act1", "a1", NOW + 60_000),
                Some(Delivery {
                    task: &t,
                    send_now: true,
                }),
            )
            .await
            .unwrap();
        store
            .insert_action(&action("act2", "a2", NOW + 60_000), None)
            .await
            .unwrap();
        // The same id again is a unique violation, which the service reports as "exists".
        match store
            .insert_action(&action("act2", "a2", NOW + 60_000), None)
            .await
        {
            Err(StoreError::Database {
                source: sqlx::Error::Database(e),
                ..
            }) => assert!(e.is_unique_violation(), "{e}"),
            other => panic!("expected a unique violation, got {other:?}"),
        }
        let a = store.get_action("act1").await.unwrap().unwrap();
        assert_eq!(a.state, ActionState::Submitted);
        // Handed to a live session at once: the task starts out sent.
        let sent = store.get_task("t1").await.unwrap().unwrap();
        assert_eq!(sent.state, TaskState::Sent);
        assert_eq!(sent.sent_at_ms, Some(NOW + 5));
        let fail = ActionEnd::Failed {
            code: TaskErrorCode::Unauthorized,
            message: "untrusted key: key abc".into(),
        };
        assert!(
            !store.finish_action("act2", &fail, NOW).await.unwrap(),
            "a pending action has no answer to fail"
        );
        let task_fail = TaskEnd::Failed {
            code: TaskErrorCode::Unauthorized,
            message: "untrusted key: key abc".into(),
        };
        // Another agent answering for a1's task changes neither.
        assert!(!store
            .finish_action_and_task("act1", &fail, "t1", "a2", &task_fail, None, NOW, None)
            .await
            .unwrap());
        assert_eq!(
            store.get_task("t1").await.unwrap().unwrap().state,
            TaskState::Sent
        );
        assert_eq!(
            store.get_action("act1").await.unwrap().unwrap().state,
            ActionState::Submitted
        );
        assert!(store
            .finish_action_and_task("act1", &fail, "t1", "a1", &task_fail, None, NOW + 1, None)
            .await
            .unwrap());
        let a = store.get_action("act1").await.unwrap().unwrap();
        assert_eq!(a.state, ActionState::Failed);
        assert_eq!(a.error_code, Some(TaskErrorCode::Unauthorized));
        assert_eq!(a.error_message.as_deref(), Some("untrusted key: key abc"));
        let t = store.get_task("t1").await.unwrap().unwrap();
        assert_eq!(t.state, TaskState::Failed);
        assert_eq!(t.error_code, Some(TaskErrorCode::Unauthorized));

        let listed = store.list_actions(Some("a2"), 10).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, "act2");
        assert_eq!(store.list_actions(None, 10).await.unwrap().len(), 2);
        assert_eq!(store.list_actions(None, 1).await.unwrap().len(), 1);
    }

    async fn expiry_ends_unfinished_actions_but_a_receipt_wins(store: &Store) {
        crate::store::test_support::enrolled_agent(store, "a1", NOW).await;
        store
            .insert_action(&action("pending", "a1", NOW + 1000), None)
            .await
            .unwrap();
        let t = task("t1", "a1", NOW + 1000);
        store
            .insert_action(
                &action("sent", "a1", NOW + 1000),
                Some(Delivery {
                    task: &t,
                    send_now: false,
                }),
            )
            .await
            .unwrap();
        store
            .insert_action(&action("later", "a1", NOW + 5000), None)
            .await
            .unwrap();
        let mut expired = store.expire_actions(NOW + 1000).await.unwrap();
        expired.sort();
        assert_eq!(expired, vec!["pending", "sent"]);
        let p = store.get_action("pending").await.unwrap().unwrap();
        assert_eq!(p.state, ActionState::Expired);
        assert!(p
            .error_message
            .unwrap()
            .contains("before enough distinct keys"));
        let s = store.get_action("sent").await.unwrap().unwrap();
        assert!(s
            .error_message
            .unwrap()
            .contains("before the agent answered"));
        assert_eq!(
            store.get_action("later").await.unwrap().unwrap().state,
            ActionState::Pending
        );
        // The agent acted just before the deadline; its receipt arrives after the sweep.
        let done = ActionEnd::Done {
            receipt: "{}".into(),
        };
        assert!(store
            .finish_action("sent", &done, NOW + 1001)
            .await
            .unwrap());
        assert!(!store
            .finish_action("pending", &done, NOW + 1001)
            .await
            .unwrap());
        let s = store.get_action("sent").await.unwrap().unwrap();
        assert_eq!(s.state, ActionState::Done);
        assert!(store.expire_actions(NOW + 2000).await.unwrap().is_empty());
    }

    backend_tests!(
        pending_then_approved_then_done,
        submitted_at_once_and_failures_keep_their_reason,
        expiry_ends_unfinished_actions_but_a_receipt_wins
    );
}
