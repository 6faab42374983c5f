//! An incident's timeline as shown: its stored entries, plus what happened to the things
//! attached to it, read from those things now — a task's end, the evidence it stored, an
//! action's end with its signers and receipt. Ordered by time, then stored entries first.

use crate::{actions::view::ActionView, state::Controller, store::TaskState};

use super::{IncidentError, LinkKind};
pub use cordon_api::incidents::TimelineItem;

/// Most stored entries read for one timeline.
pub const MAX_ENTRIES: i64 = 10_000;

impl Controller {
    /// The whole timeline of an incident, oldest first.
    pub async fn incident_timeline(&self, id: &str) -> Result<Vec<TimelineItem>, IncidentError> {
        self.incident(id).await?;
        let mut items: Vec<TimelineItem> = self
            .store
            .incident_timeline(id, 0, MAX_ENTRIES)
            .await?
            .into_iter()
            .map(TimelineItem::from)
            .collect();
        for link in self.store.incident_links(id).await? {
            match link.kind.as_str() {
                k if k == LinkKind::Task.as_str() => {
                    self.task_items(&link.ref_id, &mut items).await?
                }
                k if k == LinkKind::Action.as_str() => {
                    self.action_items(&link.ref_id, &mut items).await?
                }
                _ => {}
            }
        }
        items.sort_by_key(|item| (item.at_ms, item.entry_id.is_none(), item.entry_id));
        Ok(items)
    }

    async fn task_items(
        &self,
        task_id: &str,
        items: &mut Vec<TimelineItem>,
    ) -> Result<(), IncidentError> {
        let Some(task) = self.store.get_task(task_id).await? else {
            return Ok(());
        };
        if task.state.is_final() {
            let at = task.finished_at_ms.unwrap_or(task.expires_at_ms);
            let mut summary = format!("task {} {}", task.kind, task.state.as_str());
            if let Some(message) = &task.error_message {
                summary.push_str(&format!(": {message}"));
            }
            let actor = match task.state {
                TaskState::Done | TaskState::Failed => task.agent_id.clone(),
                _ => "controller".to_owned(),
            };
            items.push(TimelineItem {
                at_ms: at,
                actor,
                kind: format!("task.{}", task.state.as_str()),
                summary,
                detail: serde_json::json!({
                    "task_id": task.id,
                    "agent_id": task.agent_id,
                    "task_kind": task.kind,
                    "error_code": task.error_code,
                }),
                entry_id: None,
            });
        }
        if let Some(evidence) = self.store.evidence_for_task(task_id).await? {
            let mut summary = format!(
                "evidence stored: {} {} ({} bytes)",
                evidence.kind, evidence.sha256, evidence.size
            );
            if let Some(path) = &evidence.source_path {
                summary.push_str(&format!(" from {path}"));
            }
            items.push(TimelineItem {
                at_ms: evidence.received_at_ms,
                actor: evidence.agent_id.clone(),
                kind: "evidence.stored".into(),
                summary,
                detail: serde_json::json!({
                    "sha256": evidence.sha256,
                    "size": evidence.size,
                    "evidence_kind": evidence.kind,
                    "source_path": evidence.source_path,
                    "task_id": evidence.task_id,
                    "agent_public_key": evidence.agent_public_key,
                }),
                entry_id: None,
            });
        }
        Ok(())
    }

    async fn action_items(
        &self,
        action_id: &str,
        items: &mut Vec<TimelineItem>,
    ) -> Result<(), IncidentError> {
        let Some(record) = self.store.get_action(action_id).await? else {
            return Ok(());
        };
        let view = ActionView::try_from(record)?;
        if !view.state.is_final() {
            return Ok(());
        }
        let signers: Vec<String> = view
            .signatures
            .iter()
            .map(|s| format!("{} ({})", s.signer, s.key_id))
            .collect();
        let mut summary = format!(
            "action {} {} (signed by {})",
            view.kind,
            view.state.as_str(),
            signers.join(", ")
        );
        if let Some(error) = &view.error {
            summary.push_str(&format!(": {}: {}", error.code, error.message));
        }
        if let Some(receipt) = &view.receipt {
            summary.push_str(&format!("; receipt: {}", receipt.done));
        }
        items.push(TimelineItem {
            at_ms: view.finished_at_ms.unwrap_or(view.expires_at_ms),
            actor: match view.state {
                crate::store::ActionState::Expired => "controller".to_owned(),
                _ => view.agent_id.clone(),
            },
            kind: format!("action.{}", view.state.as_str()),
            summary,
            detail: serde_json::json!({
                "action_id": view.id,
                "agent_id": view.agent_id,
                "action": view.request.action,
                "signatures": view.signatures,
                "receipt": view.receipt,
                "error": view.error,
            }),
            entry_id: None,
        });
        Ok(())
    }
}
