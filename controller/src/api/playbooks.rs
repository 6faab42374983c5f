//! `/api/v1/playbooks`: the playbooks in force (viewer), and reloading them from the data
//! dir (admin). A reload with any error answers 400 naming every file and line at fault and
//! keeps the playbooks in force.

use axum::{extract::State, Json};
use serde::{Deserialize, Serialize};

use crate::{
    api::{auth::Caller, error::ApiError, AppState},
    playbooks::{Playbook, PlaybookSet},
    store::Role,
};

/// One playbook as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

impl From<&Playbook> for PlaybookView {
    fn from(p: &Playbook) -> Self {
        Self {
            name: p.name.clone(),
            description: p.description.clone(),
            kinds: p.kinds.clone(),
            file: p.file.display().to_string(),
            stages: p
                .stages
                .iter()
                .map(|s| serde_json::to_value(s).unwrap_or(serde_json::Value::Null))
                .collect(),
        }
    }
}

/// `GET /api/v1/playbooks` and a reload's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlaybookList {
    /// The directory they are read from.
    pub dir: String,
    pub playbooks: Vec<PlaybookView>,
}

fn list_of(dir: &std::path::Path, set: &PlaybookSet) -> PlaybookList {
    PlaybookList {
        dir: dir.display().to_string(),
        playbooks: set.playbooks.iter().map(PlaybookView::from).collect(),
    }
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<PlaybookList>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(list_of(
        state.playbooks.dir(),
        &state.playbooks.current(),
    )))
}

pub async fn reload(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<PlaybookList>, ApiError> {
    caller.require(Role::Admin)?;
    // Blocking file reads (bounded in size and count), off the async workers.
    let reloading = state.clone();
    let set = tokio::task::spawn_blocking(move || reloading.playbooks.reload())
        .await
        .map_err(|e| ApiError::internal("reloading playbooks", e))?
        .map_err(|e| {
            ApiError::bad_request(format!(
                "playbooks not reloaded (the ones in force stay):\n{e}"
            ))
        })?;
    Ok(Json(list_of(state.playbooks.dir(), &set)))
}
