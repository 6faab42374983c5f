//! `/api/v1/watches`: start a file watch on an agent, list and show watches, stop one, and page
//! through the changes it reported (`after=` the last event id seen, so a client can poll).

use cordon_api::tasks::TaskErrorView;
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
    api::{auth::Caller, error::ApiError, AppState},
    store::{Role, WatchEventRecord, WatchRecord},
    watches::{watch_status, WatchError},
};
use cordon_api::watches::{CreateWatch, WatchEventView, WatchEventsPage, WatchView};

/// Default time the `Watch` task may wait for an offline agent.
pub const DEFAULT_WATCH_TTL: Duration = Duration::from_secs(3600);
/// Most events one page returns.
pub const MAX_EVENTS_PAGE: i64 = 1000;

impl From<WatchError> for ApiError {
    fn from(e: WatchError) -> Self {
        match e {
            WatchError::UnknownWatch(_) => ApiError::not_found(e.to_string()),
            WatchError::Invalid(_) => ApiError::bad_request(e.to_string()),
            WatchError::Task(e) => ApiError::from(e),
            WatchError::Store(e) => ApiError::from(e),
        }
    }
}

/// A watch with the state of its latest task.
async fn view(state: &AppState, watch: WatchRecord) -> Result<WatchView, ApiError> {
    let task = match &watch.task_id {
        Some(id) => state.store.get_task(id).await?,
        None => None,
    };
    let status = watch_status(&watch, task.as_ref());
    let error = task.as_ref().and_then(|t| {
        t.error_code.map(|code| TaskErrorView {
            code,
            message: t.error_message.clone().unwrap_or_default(),
        })
    });
    Ok(WatchView {
        status,
        task_state: task.map(|t| t.state),
        error,
        id: watch.id,
        agent_id: watch.agent_id,
        paths: watch.paths,
        created_at_ms: watch.created_at_ms,
        created_by: watch.created_by,
        stopped_at_ms: watch.stopped_at_ms,
        stopped_by: watch.stopped_by,
        changes: watch.changes,
        task_id: watch.task_id,
    })
}

async fn find(state: &AppState, id: &str) -> Result<WatchRecord, ApiError> {
    state
        .store
        .get_watch(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no watch {id}")))
}

#[utoipa::path(
    post,
    path = "/api/v1/watches",
    operation_id = "watches_create",
    tag = "watches",
    summary = "Start a file watch on an agent",
    description = "Needs a token with the responder role (or one that includes it).",
    request_body = cordon_api::watches::CreateWatch,
    responses(
        (status = 201, description = "Done", body = cordon_api::watches::WatchView),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<CreateWatch>, JsonRejection>,
) -> Result<(StatusCode, Json<WatchView>), ApiError> {
    caller.require(Role::Responder)?;
    let Json(body) = body?;
    let ttl = body
        .ttl_secs
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_WATCH_TTL);
    let (watch, _task) = state
        .create_watch(&body.agent_id, body.paths, ttl, &caller.name)
        .await?;
    Ok((StatusCode::CREATED, Json(view(&state, watch).await?)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[serde(default)]
    agent_id: Option<String>,
    /// Only watches that are not stopped.
    #[serde(default)]
    active: Option<bool>,
    #[serde(default)]
    limit: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/watches",
    operation_id = "watches_list",
    tag = "watches",
    summary = "File watches, newest first",
    description = "Needs a token with the viewer role (or one that includes it).",
    params(ListQuery),
    responses(
        (status = 200, description = "Done", body = Vec<cordon_api::watches::WatchView>),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<WatchView>>, ApiError> {
    caller.require(Role::Viewer)?;
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let watches = state
        .store
        .list_watches(
            query.agent_id.as_deref(),
            query.active.unwrap_or(false),
            limit,
        )
        .await?;
    let mut views = Vec::with_capacity(watches.len());
    for watch in watches {
        views.push(view(&state, watch).await?);
    }
    Ok(Json(views))
}

#[utoipa::path(
    get,
    path = "/api/v1/watches/{id}",
    operation_id = "watches_show",
    tag = "watches",
    summary = "One watch",
    description = "Needs a token with the viewer role (or one that includes it).",
    params(("id" = String, Path, description = "The id")),
    responses(
        (status = 200, description = "Done", body = cordon_api::watches::WatchView),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WatchView>, ApiError> {
    caller.require(Role::Viewer)?;
    let watch = find(&state, &id).await?;
    Ok(Json(view(&state, watch).await?))
}

/// `POST /api/v1/watches/{id}/stop`: [`stop`], for clients that cannot send `DELETE`.
#[utoipa::path(
    post,
    path = "/api/v1/watches/{id}/stop",
    operation_id = "watches_stop_by_post",
    tag = "watches",
    summary = "Stop a watch (what it recorded stays); the same as `DELETE`",
    description = "Needs a token with the responder role (or one that includes it).",
    params(("id" = String, Path, description = "The id")),
    responses(
        (status = 200, description = "Done", body = cordon_api::watches::WatchView),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn stop_by_post(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
) -> Result<Json<WatchView>, ApiError> {
    stop(state, caller, id).await
}

#[utoipa::path(
    delete,
    path = "/api/v1/watches/{id}",
    operation_id = "watches_stop",
    tag = "watches",
    summary = "Stop a watch (what it recorded stays)",
    description = "Needs a token with the responder role (or one that includes it).",
    params(("id" = String, Path, description = "The id")),
    responses(
        (status = 200, description = "Done", body = cordon_api::watches::WatchView),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn stop(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WatchView>, ApiError> {
    caller.require(Role::Responder)?;
    let watch = state.stop_watch(&id, &caller.name).await?;
    Ok(Json(view(&state, watch).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events with a larger id.
    #[serde(default)]
    after: Option<i64>,
    #[serde(default)]
    limit: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/watches/{id}/events",
    operation_id = "watches_events",
    tag = "watches",
    summary = "One page of the changes a watch reported",
    description = "Needs a token with the viewer role (or one that includes it).",
    params(("id" = String, Path, description = "The id"), EventsQuery),
    responses(
        (status = 200, description = "Done", body = cordon_api::watches::WatchEventsPage),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<WatchEventsPage>, ApiError> {
    caller.require(Role::Viewer)?;
    let Query(query) = query?;
    let after = query.after.unwrap_or(0).max(0);
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_EVENTS_PAGE);
    let watch = find(&state, &id).await?;
    let events = state.store.watch_events(&id, after, limit).await?;
    let last_id = events.last().map_or(after, |e| e.id);
    Ok(Json(WatchEventsPage {
        watch_id: watch.id,
        events: events.into_iter().map(WatchEventView::from).collect(),
        last_id,
        stopped: watch.stopped_at_ms.is_some(),
    }))
}

impl From<WatchEventRecord> for WatchEventView {
    fn from(e: WatchEventRecord) -> Self {
        Self {
            id: e.id,
            watch_id: e.watch_id,
            path: e.path,
            kind: e.kind,
            changed_at_ms: e.changed_at_ms,
            received_at_ms: e.received_at_ms,
        }
    }
}
