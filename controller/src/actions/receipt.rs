//! How an action's end is recorded: the agent's receipt, checked against the agent's pinned
//! signing key before it is kept, or the agent's refusal, or expiry. [`Controller::settle_action`]
//! derives the same end from the delivering task when the direct path was missed (a controller
//! restart, another replica's session), so the action and its task always agree in the end.

use cordon_api::tasks::TaskErrorCode;
use cordon_protocol::message::Receipt;

use crate::{
    now_ms,
    state::Controller,
    store::{ActionEnd, ActionRecord, ActionState, NewAuditEntry, StoreError, TaskEnd, TaskState},
};
pub use cordon_api::actions::StoredReceipt;

/// The audit entry recording an agent's receipt for `action`, appended with it: actor
/// `agent:ID`, action `action.receipt`, outcome `done` or, for a receipt that did not check
/// out, `refused` with the reason. The detail names the receipt by SHA-256 of its stored JSON
/// (the action row keeps the receipt itself), so the chain pins what was stored.
fn receipt_audit_entry(
    action: &ActionRecord,
    task_id: &str,
    receipt: &StoredReceipt,
    json: &str,
    refused: Option<&String>,
) -> NewAuditEntry {
    use sha2::{Digest, Sha256};
    let mut detail = serde_json::json!({
        "agent_id": action.agent_id,
        "kind": action.kind,
        "task_id": task_id,
        "receipt_sha256": hex::encode(Sha256::digest(json.as_bytes())),
        "receipt_at_ms": receipt.at_ms,
        "done": receipt.done,
    });
    let outcome = match refused {
        None => "done",
        Some(reason) => {
            detail["refused_because"] = reason.clone().into();
            crate::audit::REFUSED
        }
    };
    crate::audit::new_entry(
        &format!("agent:{}", action.agent_id),
        "action.receipt",
        &action.id,
        outcome,
        detail,
    )
}

impl Controller {
    /// The agent answered an action's task with a receipt: keep it on the action if it checks
    /// out under the agent's pinned key, otherwise fail the action (`integrity`), and end the
    /// task the same way — both in one transaction, then wake the task's waiters.
    /// `started_at_ms`: when the agent said it started the task, if not written yet.
    pub async fn accept_receipt(
        &self,
        agent_id: &str,
        task_id: &str,
        receipt: &Receipt,
        started_at_ms: Option<i64>,
    ) {
        let stored = StoredReceipt::from(receipt);
        let json = match serde_json::to_string(&stored) {
            Ok(json) => json,
            Err(e) => {
                let end = failed(
                    TaskErrorCode::Internal,
                    format!("cannot encode the receipt: {e}"),
                );
                return self.end_task(task_id, Some(agent_id), end).await;
            }
        };
        let action = match self.store.action_for_task(task_id).await {
            Ok(Some(action)) if action.agent_id == agent_id => action,
            Ok(_) => {
                let end = failed(TaskErrorCode::Integrity,
                    format!("agent {agent_id} sent a receipt for task {task_id}, which delivers none of its actions"),
                );
                return self.end_task(task_id, Some(agent_id), end).await;
            }
            Err(e) => {
                let end = failed(
                    TaskErrorCode::Internal,
                    format!("cannot read the action: {e}"),
                );
                return self.end_task(task_id, Some(agent_id), end).await;
            }
        };
        let checked = self.check_receipt(&action, &stored).await;
        let audit = receipt_audit_entry(&action, task_id, &stored, &json, checked.as_ref().err());
        let (end, task_end) = match checked {
            Ok(()) => {
                tracing::info!(action_id = %action.id, agent_id, task_id, kind = %action.kind, "action done; receipt verified");
                // The task's result is the receipt as the API shows it: before and after are
                // JSON, not JSON inside strings.
                let result =
                    serde_json::to_string(&cordon_api::actions::ReceiptView::from(&stored))
                        .unwrap_or_else(|_| json.clone());
                let end = ActionEnd::Done {
                    receipt: json.clone(),
                };
                (end, TaskEnd::Done { result })
            }
            Err(message) => {
                tracing::warn!(action_id = %action.id, agent_id, task_id, %message, "receipt refused");
                let message = format!("receipt refused: {message}");
                let end = ActionEnd::Failed {
                    code: TaskErrorCode::Integrity,
                    message: message.clone(),
                };
                (end, failed(TaskErrorCode::Integrity, message))
            }
        };
        let now = now_ms();
        match self
            .store
            .finish_action_and_task(
                &action.id,
                &end,
                task_id,
                agent_id,
                &task_end,
                started_at_ms,
                now,
                Some(&audit),
            )
            .await
        {
            Ok(true) => {
                let _ = self.task_events.send(task_id.to_string());
                use crate::events::kind;
                let (task_kind, action_kind) = match &end {
                    ActionEnd::Done { .. } => (kind::TASK_DONE, kind::ACTION_DONE),
                    _ => (kind::TASK_FAILED, kind::ACTION_FAILED),
                };
                self.publish_task_end(task_id, task_kind).await;
                self.publish_action(&action.id, action_kind).await;
            }
            Ok(false) => tracing::debug!(task_id, agent_id, "receipt for an ended task"),
            Err(e) => {
                tracing::error!(
                    action_id = %action.id,
                    error = %e,
                    audit_action = %audit.action,
                    audit_detail = %audit.detail,
                    "cannot record the receipt; ending the task alone. AUDIT LOG WRITE FAILED: \
                     this receipt is not in the audit log"
                );
                self.end_started_task(task_id, Some(agent_id), started_at_ms, task_end)
                    .await;
            }
        }
    }

    /// Checks a receipt against the action it answers and the agent's pinned key.
    async fn check_receipt(
        &self,
        action: &ActionRecord,
        receipt: &StoredReceipt,
    ) -> Result<(), String> {
        let pinned = self
            .store
            .agent_signing_key(&action.agent_id)
            .await
            .map_err(|e| format!("reading the agent's signing key: {e}"))?
            .ok_or_else(|| format!("agent {} has no pinned signing key", action.agent_id))?;
        receipt.verify(&action.id, &action.agent_id, &pinned)?;
        // The API shows before and after as JSON, exactly as signed: text that is not plain
        // JSON (or that no ordinary parser could read back) would show otherwise than signed.
        for (what, text) in [("before", &receipt.before), ("after", &receipt.after)] {
            let exact = serde_json::value::RawValue::from_string(text.clone())
                .is_ok_and(|raw| raw.get() == text.as_str());
            if !exact || serde_json::from_str::<serde_json::Value>(text).is_err() {
                return Err(format!(
                    "the receipt's {what} is not JSON as agents write it"
                ));
            }
        }
        Ok(())
    }

    /// A task ended otherwise than with a receipt (refused, failed, cancelled): if it delivers
    /// an action, the action fails with the same reason. Called for every task that ends
    /// that way, so it costs one indexed read when the task is not an action's.
    pub(crate) async fn action_task_ended(&self, task_id: &str, end: &TaskEnd) {
        let (code, message) = match end {
            // Receipts are recorded by `accept_receipt`; any other success is settled on read.
            TaskEnd::Done { .. } => return,
            TaskEnd::Failed { code, message } => (*code, message.clone()),
            TaskEnd::Cancelled { message } => (TaskErrorCode::Cancelled, message.clone()),
        };
        let action = match self.store.action_for_task(task_id).await {
            Ok(Some(action)) => action,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(task_id, error = %e, "cannot look up the task's action");
                return;
            }
        };
        tracing::info!(action_id = %action.id, agent_id = %action.agent_id, task_id, %code, %message, "action failed");
        let detail = serde_json::json!({
            "agent_id": action.agent_id,
            "kind": action.kind,
            "task_id": task_id,
            "code": code,
            "message": message,
        });
        let end = ActionEnd::Failed { code, message };
        match self.store.finish_action(&action.id, &end, now_ms()).await {
            Ok(true) => {
                // The agent's refusal is part of the action's record: best effort, as the
                // action has ended whatever happens here (a failure is logged by `audit`).
                let actor = format!("agent:{}", action.agent_id);
                let _ = self
                    .audit(&actor, "action.failed", &action.id, "failed", detail)
                    .await;
                self.publish_action(&action.id, crate::events::kind::ACTION_FAILED)
                    .await;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(action_id = %action.id, error = %e, "cannot record the action's failure")
            }
        }
    }

    /// Expires actions past their expiry (the sweeper calls this with the tasks' expiry).
    pub async fn expire_actions(&self) {
        match self.store.expire_actions(now_ms()).await {
            Ok(ids) => {
                for id in ids {
                    tracing::info!(action_id = %id, "action expired");
                    self.publish_action(&id, crate::events::kind::ACTION_EXPIRED)
                        .await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot expire actions"),
        }
    }

    /// The action, brought up to date with its task if the direct path missed the end (the
    /// controller restarted, or another replica held the session), and expired if it is past
    /// its time.
    pub async fn settle_action(&self, action: ActionRecord) -> Result<ActionRecord, StoreError> {
        let now = now_ms();
        let end = match action.state {
            ActionState::Pending if action.expires_at_ms <= now => ActionEnd::Expired {
                message: "expired before enough distinct keys signed it".into(),
            },
            ActionState::Submitted => match self.task_end_of(&action).await? {
                Some(end) => end,
                None => return Ok(action),
            },
            _ => return Ok(action),
        };
        if self.store.finish_action(&action.id, &end, now).await? {
            self.publish_action(&action.id, crate::events::action_end_kind(&end))
                .await;
        }
        Ok(self.store.get_action(&action.id).await?.unwrap_or(action))
    }

    /// How a submitted action ended, judged from its task; `None` while the task runs.
    async fn task_end_of(&self, action: &ActionRecord) -> Result<Option<ActionEnd>, StoreError> {
        let Some(task_id) = &action.task_id else {
            return Ok(None);
        };
        let Some(task) = self.store.get_task(task_id).await? else {
            return Ok(Some(ActionEnd::Failed {
                code: TaskErrorCode::Internal,
                message: format!("the action's task {task_id} is missing"),
            }));
        };
        let message = || task.error_message.clone().unwrap_or_default();
        Ok(match task.state {
            TaskState::Done => {
                let receipt = task.result.as_deref().and_then(|text| {
                    let parsed = serde_json::from_str::<StoredReceipt>(text).ok()?;
                    Some((text.to_string(), parsed))
                });
                Some(match receipt {
                    Some((text, receipt)) => match self.check_receipt(action, &receipt).await {
                        Ok(()) => ActionEnd::Done { receipt: text },
                        Err(message) => ActionEnd::Failed {
                            code: TaskErrorCode::Integrity,
                            message: format!("receipt refused: {message}"),
                        },
                    },
                    None => ActionEnd::Failed {
                        code: TaskErrorCode::Integrity,
                        message: "the agent answered without a receipt".into(),
                    },
                })
            }
            TaskState::Failed | TaskState::Cancelled => Some(ActionEnd::Failed {
                code: task.error_code.unwrap_or(TaskErrorCode::Internal),
                message: message(),
            }),
            TaskState::Expired => Some(ActionEnd::Expired {
                message: "expired before the agent answered".into(),
            }),
            TaskState::Queued | TaskState::Sent | TaskState::Running => None,
        })
    }
}

fn failed(code: TaskErrorCode, message: String) -> TaskEnd {
    TaskEnd::Failed { code, message }
}
