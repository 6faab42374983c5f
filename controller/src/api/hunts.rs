//! `/api/v1/hunts`: start a hunt across agents (responder), follow its progress and read the
//! per-agent results, optionally waiting for it to complete (viewer), list hunts (viewer).

use std::time::Duration;

use axum::{
    extract::{
        rejection::{JsonRejection, QueryRejection},
        Path, Query, State,
    },
    http::StatusCode,
    Json,
};
use serde::Deserialize;

use crate::{
    api::{auth::Caller, error::ApiError, tasks::MAX_WAIT, AppState},
    hunts::{CreateHunt, HuntError, HuntView, ResultsFilter, DEFAULT_HUNT_TTL},
    store::Role,
};

impl From<HuntError> for ApiError {
    fn from(e: HuntError) -> Self {
        match e {
            HuntError::Invalid(_) => ApiError::bad_request(e.to_string()),
            HuntError::NoAgents(_) | HuntError::UnknownHunt(_) => {
                ApiError::not_found(e.to_string())
            }
            HuntError::Store(e) => ApiError::from(e),
        }
    }
}

/// `POST /api/v1/hunts`: 201 with the hunt's id and initial progress.
#[utoipa::path(
    post,
    path = "/api/v1/hunts",
    operation_id = "hunts_create",
    tag = "hunts",
    summary = "Start a hunt: one query on many agents",
    description = "Needs a token with the responder role (or one that includes it).",
    request_body = cordon_api::hunts::CreateHunt,
    responses(
        (status = 201, description = "Done", body = cordon_api::hunts::HuntView),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<CreateHunt>, JsonRejection>,
) -> Result<(StatusCode, Json<HuntView>), ApiError> {
    caller.require(Role::Responder)?;
    let Json(body) = body?;
    let ttl = body
        .ttl_secs
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_HUNT_TTL);
    let hunt = state
        .create_hunt(body.query.into(), body.label, ttl, &caller.name)
        .await?;
    Ok((StatusCode::CREATED, Json(hunt)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ShowQuery {
    /// Seconds to wait for the hunt to complete before answering.
    #[serde(default)]
    wait: Option<u64>,
    /// Which agents to list: `all` (default, also `true`), `matched`, `none` (also `false`).
    #[serde(default)]
    results: Option<String>,
}

/// `GET /api/v1/hunts/{id}?wait=SECS&results=all|matched|none`.
#[utoipa::path(
    get,
    path = "/api/v1/hunts/{id}",
    operation_id = "hunts_show",
    tag = "hunts",
    summary = "One hunt with its progress and, as asked, each agent's answer",
    description = "Needs a token with the viewer role (or one that includes it).",
    params(("id" = String, Path, description = "The id"), ShowQuery),
    responses(
        (status = 200, description = "Done", body = cordon_api::hunts::HuntView),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<ShowQuery>, QueryRejection>,
    busy: Option<axum::Extension<crate::listen::idle::Busy>>,
) -> Result<Json<HuntView>, ApiError> {
    caller.require(Role::Viewer)?;
    let Query(query) = query?;
    let filter = match query.results.as_deref() {
        None | Some("all" | "true") => ResultsFilter::All,
        Some("matched") => ResultsFilter::Matched,
        Some("none" | "false") => ResultsFilter::None,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "results={:?}: expected all, matched or none",
                other.chars().take(40).collect::<String>()
            )))
        }
    };
    let view = match query.wait {
        Some(secs) if secs > 0 => {
            let timeout = Duration::from_secs(secs).min(MAX_WAIT);
            // The connection is busy while this waits, not idle.
            let _waiting = crate::api::waiting(busy);
            state.wait_for_hunt(&id, timeout, filter).await?
        }
        _ => state.hunt_view(&id, filter).await?,
    };
    Ok(Json(view))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[serde(default)]
    limit: Option<i64>,
}

/// `GET /api/v1/hunts?limit=N`: newest first, with progress (no per-agent results).
#[utoipa::path(
    get,
    path = "/api/v1/hunts",
    operation_id = "hunts_list",
    tag = "hunts",
    summary = "Hunts, newest first",
    description = "Needs a token with the viewer role (or one that includes it).",
    params(ListQuery),
    responses(
        (status = 200, description = "Done", body = Vec<cordon_api::hunts::HuntView>),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<HuntView>>, ApiError> {
    caller.require(Role::Viewer)?;
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    Ok(Json(state.list_hunts(limit).await?))
}
