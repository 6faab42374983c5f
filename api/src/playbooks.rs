//! Playbooks: `/api/v1/playbooks`, what the controller does when an incident enters a stage.

use serde::{Deserialize, Serialize};

/// One playbook as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlaybookView {
    pub name: String,
    pub description: String,
    /// Incident kinds; `*` for any.
    pub kinds: Vec<String>,
    pub file: String,
    /// Per stage: `stage`, and its `collect`, `hunts` and `propose` steps as written
    /// (templates such as `{alert.file.path}` unfilled).
    pub stages: Vec<serde_json::Value>,
}

/// `GET /api/v1/playbooks` and a reload's answer.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlaybookList {
    /// The directory they are read from.
    pub dir: String,
    pub playbooks: Vec<PlaybookView>,
}
