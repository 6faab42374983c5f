//! `/api/v1/tasks`: queue a collection on an agent, read its state and result (optionally
//! waiting for it), list, cancel. Responders queue any collection; automation tokens only the
//! kinds some loaded playbook collects (see [`crate::playbooks`]).

use cordon_api::error::ErrorCode;
use cordon_api::{
    agents::AgentListQuery,
    tasks::{CreateTask, TaskView},
};
use std::time::Duration;

use axum::{
    extract::{
        rejection::{JsonRejection, QueryRejection},
        Path, Query, State,
    },
    http::StatusCode,
    Extension, Json,
};
use serde::Deserialize;

use crate::{
    api::{auth::Caller, error::ApiError, recorder::AuditNote, AppState},
    store::Role,
    tasks::{TaskError, DEFAULT_TASK_TTL},
};

/// Longest a `?wait=` may hold a request.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

impl From<TaskError> for ApiError {
    fn from(e: TaskError) -> Self {
        match e {
            TaskError::UnknownAgent(_) | TaskError::UnknownTask(_) => {
                ApiError::not_found(e.to_string())
            }
            TaskError::RevokedAgent(_) | TaskError::AlreadyEnded { .. } => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::Conflict, e.to_string())
            }
            TaskError::Invalid(_) => ApiError::bad_request(e.to_string()),
            TaskError::Store(e) => ApiError::from(e),
        }
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/tasks",
    operation_id = "tasks_create",
    tag = "tasks",
    summary = "Queue a collection task for one agent",
    description = "Needs a token with the responder role (or one that includes it).",
    request_body = cordon_api::tasks::CreateTask,
    responses(
        (status = 201, description = "Done", body = cordon_api::tasks::TaskView),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<CreateTask>, JsonRejection>,
) -> Result<(StatusCode, Extension<AuditNote>, Json<TaskView>), ApiError> {
    // Automation may queue the collections some loaded playbook lists, and nothing else.
    if caller.role != Role::Automation {
        caller.require(Role::Responder)?;
    }
    let Json(body) = body?;
    let ttl = body
        .ttl_secs
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TASK_TTL);
    let kind = cordon_protocol::message::TaskKind::try_from(body.task)
        .map_err(|e| ApiError::bad_request(format!("task.authorization: {e}")))?;
    if caller.role == Role::Automation {
        let name = kind.name();
        if !state.playbooks.current().collects(name) {
            return Err(ApiError::forbidden(format!(
                "the automation token {:?} may queue only collections a playbook lists; no \
                 loaded playbook collects {name} (GET /api/v1/playbooks)",
                caller.name
            )));
        }
    }
    let task = state
        .create_task(&body.agent_id, kind, ttl, &caller.name)
        .await?;
    let view = TaskView::from(task);
    let note = AuditNote {
        target: Some(view.id.clone()),
        detail: serde_json::json!({
            "agent_id": view.agent_id,
            "kind": view.kind,
            "request": view.request,
        }),
    };
    Ok((StatusCode::CREATED, Extension(note), Json(view)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ShowQuery {
    /// Seconds to wait for the task to end before answering.
    #[serde(default)]
    wait: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}",
    operation_id = "tasks_show",
    tag = "tasks",
    summary = "One task; with `wait`, once it ends (or the wait runs out)",
    description = "Needs a token with the viewer role (or one that includes it).",
    params(("id" = String, Path, description = "The id"), ShowQuery),
    responses(
        (status = 200, description = "Done", body = cordon_api::tasks::TaskView),
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
) -> Result<Json<TaskView>, ApiError> {
    caller.require(Role::Viewer)?;
    let Query(query) = query?;
    let task = match query.wait {
        Some(secs) if secs > 0 => {
            // The connection is busy while this waits, not idle.
            let _waiting = crate::api::waiting(busy);
            state
                .wait_for_task(&id, Duration::from_secs(secs).min(MAX_WAIT))
                .await?
        }
        _ => state
            .store
            .get_task(&id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no task {id}")))?,
    };
    Ok(Json(task.into()))
}

#[utoipa::path(
    get,
    path = "/api/v1/tasks",
    operation_id = "tasks_list",
    tag = "tasks",
    summary = "Tasks, newest first",
    description = "Needs a token with the viewer role (or one that includes it).",
    params(cordon_api::agents::AgentListQuery),
    responses(
        (status = 200, description = "Done", body = Vec<cordon_api::tasks::TaskView>),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<AgentListQuery>, QueryRejection>,
) -> Result<Json<Vec<TaskView>>, ApiError> {
    caller.require(Role::Viewer)?;
    let Query(query) = query?;
    let tasks = state
        .store
        .list_tasks(query.agent_id.as_deref(), query.limit())
        .await?;
    Ok(Json(tasks.into_iter().map(TaskView::from).collect()))
}

#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/cancel",
    operation_id = "tasks_cancel",
    tag = "tasks",
    summary = "Cancel a task that has not ended",
    description = "Needs a token with the responder role (or one that includes it).",
    params(("id" = String, Path, description = "The id")),
    responses(
        (status = 200, description = "Done", body = cordon_api::tasks::TaskView),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    caller.require(Role::Responder)?;
    Ok(Json(state.cancel_task(&id, &caller.name).await?.into()))
}
