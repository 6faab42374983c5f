//! A signed receipt as text, for keeping and showing: the agent journals it, the controller
//! stores and serves it. Every signed field as the agent sent it, keys and signature in hex, so
//! anyone can check it again with [`ReceiptText::verify`].

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::message::Receipt;

/// A [`Receipt`] with its key and signature in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReceiptText {
    pub action_id: String,
    pub agent_id: String,
    pub at_ms: i64,
    /// JSON text: what the agent found before acting.
    pub before: String,
    /// What it did.
    pub done: String,
    /// JSON text: what it saw after.
    pub after: String,
    /// Hex of the agent's Ed25519 public key and of its signature.
    pub agent_public_key: String,
    pub signature: String,
}

impl From<&Receipt> for ReceiptText {
    fn from(r: &Receipt) -> Self {
        ReceiptText {
            action_id: r.action_id.clone(),
            agent_id: r.agent_id.clone(),
            at_ms: r.at_ms,
            before: r.before.clone(),
            done: r.done.clone(),
            after: r.after.clone(),
            agent_public_key: hex::encode(&r.agent_public_key),
            signature: hex::encode(&r.signature),
        }
    }
}

impl ReceiptText {
    /// The receipt as it was sent; `None` if the hex is damaged.
    pub fn to_receipt(&self) -> Option<Receipt> {
        Some(Receipt {
            action_id: self.action_id.clone(),
            agent_id: self.agent_id.clone(),
            at_ms: self.at_ms,
            before: self.before.clone(),
            done: self.done.clone(),
            after: self.after.clone(),
            agent_public_key: hex::decode(&self.agent_public_key).ok()?,
            signature: hex::decode(&self.signature).ok()?,
        })
    }

    /// Checks that this is a receipt for `action_id` from `agent_id`, signed (`verify_strict`)
    /// by `pinned_key_hex`, the key pinned for that agent.
    pub fn verify(
        &self,
        action_id: &str,
        agent_id: &str,
        pinned_key_hex: &str,
    ) -> Result<(), String> {
        if self.action_id != action_id {
            return Err(format!(
                "the receipt is for action {}, not {action_id}",
                self.action_id
            ));
        }
        if self.agent_id != agent_id {
            return Err(format!(
                "the receipt names agent {}, not {agent_id}",
                self.agent_id
            ));
        }
        if !self.agent_public_key.eq_ignore_ascii_case(pinned_key_hex) {
            return Err(format!(
                "the receipt is signed by key {}, not agent {agent_id}'s pinned key {pinned_key_hex}",
                self.agent_public_key
            ));
        }
        let receipt = self
            .to_receipt()
            .ok_or("the receipt's key or signature is not hex")?;
        let public: [u8; 32] = receipt
            .agent_public_key
            .as_slice()
            .try_into()
            .map_err(|_| "the receipt's public key is not 32 bytes")?;
        let key = VerifyingKey::from_bytes(&public)
            .map_err(|_| "the receipt's public key is not an Ed25519 key".to_string())?;
        let signature: [u8; 64] = receipt
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| "the receipt's signature is not 64 bytes")?;
        let bytes = receipt
            .signing_bytes()
            .map_err(|e| format!("cannot encode the receipt: {e}"))?;
        key.verify_strict(&bytes, &Signature::from_bytes(&signature))
            .map_err(|_| "the receipt's signature does not verify".to_string())
    }
}
