//! What the action API takes and shows: a signed request to submit, an action for the
//! automation key to sign, and an action as stored, with its signers and receipt.

use crate::store::{ActionRecord, StoreError};
pub use cordon_api::actions::{ActionView, AutomationAction, SubmitAction};
use cordon_api::actions::{ReceiptView, StoredReceipt};
use cordon_api::tasks::TaskErrorView;

impl TryFrom<ActionRecord> for ActionView {
    type Error = StoreError;

    fn try_from(a: ActionRecord) -> Result<Self, StoreError> {
        let json = |what: &'static str| move |source| StoreError::Json { what, source };
        Ok(ActionView {
            request: serde_json::from_str(&a.request).map_err(json("action request"))?,
            signatures: serde_json::from_str(&a.signatures).map_err(json("action signatures"))?,
            receipt: a
                .receipt
                .as_deref()
                .map(serde_json::from_str::<StoredReceipt>)
                .transpose()
                .map_err(json("action receipt"))?
                .as_ref()
                .map(ReceiptView::from),
            error: a.error_code.map(|code| TaskErrorView {
                code,
                message: a.error_message.unwrap_or_default(),
            }),
            required_signers: u32::try_from(a.required_signers).unwrap_or(u32::MAX),
            id: a.id,
            agent_id: a.agent_id,
            kind: a.kind,
            state: a.state,
            signing_bytes: a.signing_bytes,
            task_id: a.task_id,
            created_by: a.created_by,
            created_at_ms: a.created_at_ms,
            expires_at_ms: a.expires_at_ms,
            submitted_at_ms: a.submitted_at_ms,
            finished_at_ms: a.finished_at_ms,
        })
    }
}
