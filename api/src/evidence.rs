//! Evidence: `/api/v1/evidence`, what collections stored and whether it still verifies.

use serde::{Deserialize, Serialize};

/// A stored collection, as the API and a task's result show it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EvidenceView {
    pub sha256: String,
    pub size: i64,
    pub kind: String,
    pub agent_id: String,
    pub task_id: String,
    pub source_path: Option<String>,
    pub received_at_ms: i64,
    /// The manifest as the agent signed it, parsed.
    pub manifest: serde_json::Value,
}

/// One check of a verification.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Check {
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

/// The outcome of re-verifying stored evidence.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Verification {
    pub sha256: String,
    pub ok: bool,
    pub checks: Vec<Check>,
}

/// A collection with its manifest exactly as signed.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignedRecord {
    #[serde(flatten)]
    pub view: EvidenceView,
    /// Hex of the manifest's bytes exactly as signed (the signature covers these bytes; the
    /// parsed manifest is `manifest`).
    pub manifest_hex: String,
    pub agent_public_key: String,
    pub signature: String,
}
