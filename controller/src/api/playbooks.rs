//! `/api/v1/playbooks`: the playbooks in force (viewer), and reloading them from the data
//! dir (admin). A reload with any error answers 400 naming every file and line at fault and
//! keeps the playbooks in force.

use axum::{extract::State, Json};

use crate::{
    api::{auth::Caller, error::ApiError, AppState},
    playbooks::{Playbook, PlaybookSet},
    store::Role,
};
use cordon_api::playbooks::{PlaybookList, PlaybookView};

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

fn list_of(dir: &std::path::Path, set: &PlaybookSet) -> PlaybookList {
    PlaybookList {
        dir: dir.display().to_string(),
        playbooks: set.playbooks.iter().map(PlaybookView::from).collect(),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/playbooks",
    operation_id = "playbooks_list",
    tag = "playbooks",
    summary = "The playbooks in force",
    description = "Needs a token with the viewer role (or one that includes it).",
    responses(
        (status = 200, description = "Done", body = cordon_api::playbooks::PlaybookList),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
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

#[utoipa::path(
    post,
    path = "/api/v1/playbooks/reload",
    operation_id = "playbooks_reload",
    tag = "playbooks",
    summary = "Read the playbook files again; on any error the ones in force stay",
    description = "Needs a token with the admin role (or one that includes it).",
    responses(
        (status = 200, description = "Done", body = cordon_api::playbooks::PlaybookList),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
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
