//! `/api/v1/agents`: list, show, revoke, label.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    Json,
};
use cordon_api::agents::{AgentStatus, AgentView, SetLabels};

use crate::{
    api::{auth::Caller, error::ApiError, AppState},
    store::{AgentRecord, Role},
};

/// Longest label and most labels an agent may carry.
const MAX_LABEL_LEN: usize = 64;
const MAX_LABELS: usize = 32;

fn view(state: &AppState, record: AgentRecord) -> AgentView {
    let session = state.registry.session_info(&record.id);
    let status = if record.revoked_at_ms.is_some() {
        AgentStatus::Revoked
    } else if session.is_some() {
        AgentStatus::Online
    } else {
        AgentStatus::Offline
    };
    AgentView {
        id: record.id,
        hostname: record.hostname,
        status,
        enrolled_at_ms: record.enrolled_at_ms,
        last_seen_at_ms: record.last_seen_at_ms,
        revoked_at_ms: record.revoked_at_ms,
        labels: record.labels,
        inventory: record.inventory,
        peer: session.as_ref().map(|s| s.peer.clone()),
        connected_at_ms: session.map(|s| s.connected_at_ms),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/agents",
    operation_id = "agents_list",
    tag = "agents",
    summary = "Every agent, with its status",
    description = "Needs a token with the viewer role (or one that includes it).",
    responses(
        (status = 200, description = "Done", body = Vec<cordon_api::agents::AgentView>),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<AgentView>>, ApiError> {
    caller.require(Role::Viewer)?;
    let agents = state.store.list_agents().await?;
    Ok(Json(agents.into_iter().map(|a| view(&state, a)).collect()))
}

#[utoipa::path(
    get,
    path = "/api/v1/agents/{id}",
    operation_id = "agents_show",
    tag = "agents",
    summary = "One agent: inventory, session, labels",
    description = "Needs a token with the viewer role (or one that includes it).",
    params(("id" = String, Path, description = "The id")),
    responses(
        (status = 200, description = "Done", body = cordon_api::agents::AgentView),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<AgentView>, ApiError> {
    caller.require(Role::Viewer)?;
    let agent = state
        .store
        .get_agent(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no agent {id}")))?;
    Ok(Json(view(&state, agent)))
}

#[utoipa::path(
    post,
    path = "/api/v1/agents/{id}/revoke",
    operation_id = "agents_revoke",
    tag = "agents",
    summary = "Revoke an agent: its session ends and its certificate is refused",
    description = "Needs a token with the admin role (or one that includes it).",
    params(("id" = String, Path, description = "The id")),
    responses(
        (status = 200, description = "Done", body = cordon_api::agents::AgentView),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<AgentView>, ApiError> {
    caller.require(Role::Admin)?;
    let found = state
        .revoke_agent(&id)
        .await
        .map_err(|e| ApiError::internal("revoking agent", e))?;
    if !found {
        return Err(ApiError::not_found(format!("no agent {id}")));
    }
    tracing::info!(agent_id = %id, by = %caller.name, "agent revoked");
    show(State(state), caller, Path(id)).await
}

#[utoipa::path(
    put,
    path = "/api/v1/agents/{id}/labels",
    operation_id = "agents_set_labels",
    tag = "agents",
    summary = "Replace an agent's labels",
    description = "Needs a token with the admin role (or one that includes it).",
    params(("id" = String, Path, description = "The id")),
    request_body = cordon_api::agents::SetLabels,
    responses(
        (status = 200, description = "Done", body = cordon_api::agents::AgentView),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn set_labels(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<SetLabels>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<AgentView>), ApiError> {
    caller.require(Role::Admin)?;
    let Json(body) = body?;
    if body.labels.len() > MAX_LABELS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_LABELS} labels per agent"
        )));
    }
    for label in &body.labels {
        let ok = !label.is_empty()
            && label.len() <= MAX_LABEL_LEN
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:=/".contains(c));
        if !ok {
            return Err(ApiError::bad_request(format!(
                "label {label:?}: use 1-{MAX_LABEL_LEN} characters from a-z, A-Z, 0-9 and -_.:=/"
            )));
        }
    }
    if !state.store.set_agent_labels(&id, &body.labels).await? {
        return Err(ApiError::not_found(format!("no agent {id}")));
    }
    let Json(view) = show(State(state), caller, Path(id)).await?;
    Ok((StatusCode::OK, Json(view)))
}
