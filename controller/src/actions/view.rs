//! What the action API takes and shows: a signed request to submit, an action for the
//! automation key to sign, and an action as stored, with its signers and receipt.

use cordon_protocol::action::{Action, ActionRequest};
use serde::{Deserialize, Serialize};

use super::{SignatureSpec, StoredReceipt, StoredSignature};
use crate::{
    api::types::TaskErrorView,
    store::{ActionRecord, ActionState, StoreError},
};

/// `POST /api/v1/actions`: a request and its signatures, made by the signers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitAction {
    pub request: ActionRequest,
    pub signatures: Vec<SignatureSpec>,
}

impl SubmitAction {
    /// The envelope as agents take it: each signature named by its key's id.
    pub fn into_signed(self) -> Result<cordon_protocol::action::SignedAction, String> {
        let signatures = self
            .signatures
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let public: [u8; 32] = hex::decode(&s.public_key)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| format!("signatures[{i}].public_key: not 64 hex digits"))?;
                let signature = hex::decode(&s.signature)
                    .map_err(|e| format!("signatures[{i}].signature: not hex ({e})"))?;
                Ok(cordon_protocol::action::ActionSignature {
                    key_id: cordon_protocol::action::key_id(&public),
                    signature,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(cordon_protocol::action::SignedAction {
            request: self.request,
            signatures,
        })
    }
}

/// `POST /api/v1/actions/automation`: an action for the controller to sign with its
/// automation key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutomationAction {
    pub agent_id: String,
    pub action: Action,
    /// How long the action stays valid (default 300 s).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// An action as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionView {
    pub id: String,
    pub agent_id: String,
    pub kind: String,
    pub state: ActionState,
    /// What was signed.
    pub request: ActionRequest,
    /// Hex of `signing_bytes(request)`; an approver recomputes it rather than trusting this.
    pub signing_bytes: String,
    /// Distinct signers so far.
    pub signatures: Vec<StoredSignature>,
    /// Distinct signers the agent's policy asks for.
    pub required_signers: u32,
    /// The task that delivers it, once submitted.
    pub task_id: Option<String>,
    /// The agent's receipt, verified under its pinned key, when done.
    pub receipt: Option<StoredReceipt>,
    /// Why it failed or expired (`unauthorized` and `policy_denied` are the agent's refusals).
    pub error: Option<TaskErrorView>,
    pub created_by: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub submitted_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
}

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
                .map(serde_json::from_str)
                .transpose()
                .map_err(json("action receipt"))?,
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
