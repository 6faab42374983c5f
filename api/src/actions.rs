//! Signed containment actions: `/api/v1/actions`.

use cordon_protocol::action::{Action, ActionRequest};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::tasks::TaskErrorView;

/// A signature as a signer submits it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignatureSpec {
    /// Hex of the signer's 32-byte Ed25519 public key.
    pub public_key: String,
    /// Hex of the 64-byte signature over the request's signing bytes.
    pub signature: String,
}

/// A signature as stored and shown: checked, with the name the agent's policy gives its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredSignature {
    pub key_id: String,
    pub public_key: String,
    pub signature: String,
    /// The signer's name in the agent's policy.
    pub signer: String,
    /// The API token that added it.
    pub added_by: String,
    pub added_at_ms: i64,
}

/// `POST /api/v1/actions`: a request and its signatures, made by the signers.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutomationAction {
    pub agent_id: String,
    pub action: Action,
    /// How long the action stays valid (default 300 s).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// An action as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
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
    pub receipt: Option<ReceiptView>,
    /// Why it failed or expired (`unauthorized` and `policy_denied` are the agent's refusals).
    pub error: Option<TaskErrorView>,
    pub created_by: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub submitted_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
}

/// Where an action is in its life.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
    strum::VariantArray,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum ActionState {
    Pending,
    Submitted,
    Done,
    Failed,
    Expired,
}

impl ActionState {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether the action has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ActionState::Done | ActionState::Failed | ActionState::Expired
        )
    }
}

/// A receipt as stored and shown: every signed field as the agent sent it, keys and signature
/// in hex, so anyone can verify it again ([`cordon_protocol::receipt::ReceiptText::verify`]).
pub type StoredReceipt = cordon_protocol::receipt::ReceiptText;

/// The agent's signed receipt for an action, as the API shows it: what it found before and saw
/// after are JSON, exactly the text the agent signed (so [`ReceiptView::to_text`] gives back what
/// [`ReceiptText::verify`](cordon_protocol::receipt::ReceiptText::verify) checks).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReceiptView {
    pub action_id: String,
    pub agent_id: String,
    pub at_ms: i64,
    /// What the agent found before acting.
    #[schema(value_type = Object)]
    pub before: Box<RawValue>,
    /// What it did.
    pub done: String,
    /// What it saw after.
    #[schema(value_type = Object)]
    pub after: Box<RawValue>,
    /// Hex of the agent's Ed25519 public key and of its signature.
    pub agent_public_key: String,
    pub signature: String,
}

/// `text` as JSON: as it is when it is JSON (it always is from a Cordon agent), else as a
/// JSON string.
fn raw(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_owned()).unwrap_or_else(|_| {
        serde_json::value::to_raw_value(text)
            .unwrap_or_else(|_| RawValue::from_string("null".to_owned()).unwrap_or_default())
    })
}

impl From<&StoredReceipt> for ReceiptView {
    fn from(r: &StoredReceipt) -> Self {
        Self {
            action_id: r.action_id.clone(),
            agent_id: r.agent_id.clone(),
            at_ms: r.at_ms,
            before: raw(&r.before),
            done: r.done.clone(),
            after: raw(&r.after),
            agent_public_key: r.agent_public_key.clone(),
            signature: r.signature.clone(),
        }
    }
}

impl ReceiptView {
    /// The receipt as signed, to check again.
    pub fn to_text(&self) -> StoredReceipt {
        StoredReceipt {
            action_id: self.action_id.clone(),
            agent_id: self.agent_id.clone(),
            at_ms: self.at_ms,
            before: self.before.get().to_owned(),
            done: self.done.clone(),
            after: self.after.get().to_owned(),
            agent_public_key: self.agent_public_key.clone(),
            signature: self.signature.clone(),
        }
    }
}

crate::eq_name!(ActionState);
