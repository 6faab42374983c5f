//! The audit log: `/api/v1/audit`, a hash chain of every state change, and its verification.

use serde::{Deserialize, Serialize};

/// An entry as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub seq: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    /// The stored detail; a row edited into something that is not JSON shows as a string.
    pub detail: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// Why the chain breaks at an entry.
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
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum BreakReason {
    /// The entry's fields do not hash to its stored hash: the row was edited.
    HashMismatch,
    /// The entry does not point at the hash of the one before it: a row before it was replaced,
    /// or it was moved.
    PrevHashMismatch,
    /// The entry with this seq is missing: deleted.
    Gap,
}

impl BreakReason {
    /// The reason as written in the API and CLI.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The first place the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BrokenLink {
    /// The seq of the entry that is wrong (or missing, for a gap).
    pub seq: i64,
    pub reason: BreakReason,
    /// What was expected and what was found.
    pub detail: String,
}

/// The last entry of an intact chain: record it elsewhere to detect later truncation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditHead {
    pub seq: i64,
    pub hash: String,
}

/// One page of the audit log, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// The seq of the last entry returned (or `after` when none): pass it as `after` next time.
    pub last_seq: i64,
}

/// `GET /api/v1/audit/verify`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditVerifyView {
    /// Whether the whole chain is intact.
    pub ok: bool,
    /// How many entries were checked and found intact.
    pub entries: i64,
    /// Where the chain first breaks: the entry's seq, why (`hash_mismatch`,
    /// `prev_hash_mismatch`, `gap`) and what was found.
    pub first_broken: Option<BrokenLink>,
    /// The last intact entry: keep it elsewhere to detect entries later cut off the end.
    pub head: Option<AuditHead>,
}
