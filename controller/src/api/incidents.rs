//! `/api/v1/incidents`: open incidents by hand, list and show them with their timeline, move
//! them through the stages, assign, escalate, comment, add hosts, attach tasks, hunts, actions
//! and evidence, and close them, and report on them (JSON or Markdown). Alerts open incidents
//! through `/api/v1/alerts`.

use axum::{
    extract::{
        rejection::{JsonRejection, QueryRejection},
        Path, Query, State,
    },
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use cordon_api::error::ErrorCode;
use serde::Deserialize;

use crate::{
    api::{auth::Caller, error::ApiError, AppState},
    incidents::{report, CreateIncident, Created, IncidentError, Stage},
    store::{IncidentFilter, Role},
};
use cordon_api::incidents::{
    AddHosts, Assign, Close, Comment, Escalate, IncidentSummary, IncidentView, Link, MoveStage,
    SetSeverity,
};

/// Most incidents one list returns.
pub const MAX_LIST: i64 = 1000;

impl From<IncidentError> for ApiError {
    fn from(e: IncidentError) -> Self {
        match e {
            IncidentError::UnknownIncident(_) | IncidentError::UnknownLinked(..) => {
                ApiError::not_found(e.to_string())
            }
            IncidentError::UnknownAgent(_)
            | IncidentError::AmbiguousHost(..)
            | IncidentError::Invalid(_) => ApiError::bad_request(e.to_string()),
            IncidentError::Refused(_) => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::Refused, e.to_string())
            }
            IncidentError::Conflict(_) => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::Conflict, e.to_string())
            }
            IncidentError::Store(e) => ApiError::from(e),
        }
    }
}

/// Everything about an incident, for `show` and reports.
pub async fn incident_view(state: &AppState, id: &str) -> Result<IncidentView, ApiError> {
    let incident = state.incident(id).await?;
    Ok(IncidentView {
        hosts: state.store.incident_hosts(id).await?,
        links: state.store.incident_links(id).await?,
        active_containment: state.active_containment(id).await?,
        stages: state.store.stage_entries(id).await?,
        timeline: state.incident_timeline(id).await?,
        similar: state.shown_similar(id).await,
        incident,
    })
}

#[utoipa::path(
    post,
    path = "/api/v1/incidents",
    operation_id = "incidents_create",
    tag = "incidents",
    summary = "Open an incident (or answer the open one with the same fingerprint)",
    description = "Needs a token with the responder role (or one that includes it).",
    request_body = cordon_api::incidents::CreateIncident,
    responses(
        (status = 201, description = "Done", body = cordon_api::incidents::IncidentView),
        (status = 200, description = "An open incident has this fingerprint: that one is the answer", body = cordon_api::incidents::IncidentView),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<CreateIncident>, JsonRejection>,
) -> Result<(StatusCode, Json<IncidentView>), ApiError> {
    caller.require(Role::Responder)?;
    let Json(body) = body?;
    let (status, incident) = match state.create_incident(body, &caller.name).await? {
        Created::New(incident) => (StatusCode::CREATED, incident),
        // The fingerprint belongs to an open incident: that one is the answer.
        Created::Existing(incident) => (StatusCode::OK, incident),
    };
    Ok((status, Json(incident_view(&state, &incident.id).await?)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    stage: Option<String>,
    /// Only incidents not closed or false positive.
    #[serde(default)]
    open: Option<bool>,
    /// Only those involving this agent (id).
    #[serde(default)]
    agent_id: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/incidents",
    operation_id = "incidents_list",
    tag = "incidents",
    summary = "Incidents, newest first",
    description = "Needs a token with the viewer role (or one that includes it).",
    params(ListQuery),
    responses(
        (status = 200, description = "Done", body = Vec<cordon_api::incidents::IncidentSummary>),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<IncidentSummary>>, ApiError> {
    caller.require(Role::Viewer)?;
    let Query(query) = query?;
    let stage = match &query.stage {
        Some(s) => Some(
            s.parse::<Stage>()
                .map_err(|e| ApiError::bad_request(e.to_string()))?
                .as_str()
                .to_owned(),
        ),
        None => None,
    };
    let filter = IncidentFilter {
        stage,
        open_only: query.open.unwrap_or(false),
        agent_id: query.agent_id,
        limit: query.limit.unwrap_or(100).clamp(1, MAX_LIST),
    };
    let mut out = Vec::new();
    for incident in state.list_incidents(&filter).await? {
        let hosts = state
            .store
            .incident_hosts(&incident.id)
            .await?
            .into_iter()
            .map(|h| h.agent_id)
            .collect();
        out.push(IncidentSummary { incident, hosts });
    }
    Ok(Json(out))
}

#[utoipa::path(
    get,
    path = "/api/v1/incidents/{id}",
    operation_id = "incidents_show",
    tag = "incidents",
    summary = "One incident with its hosts, links, stages, containment and timeline",
    description = "Needs a token with the viewer role (or one that includes it).",
    params(("id" = String, Path, description = "The id")),
    responses(
        (status = 200, description = "Done", body = cordon_api::incidents::IncidentView),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<IncidentView>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(incident_view(&state, &id).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/incidents/{id}/stage",
    operation_id = "incidents_stage",
    tag = "incidents",
    summary = "Move an incident to another stage (the move rules apply)",
    description = "Needs a token with the responder role (or one that includes it).",
    params(("id" = String, Path, description = "The id")),
    request_body = cordon_api::incidents::MoveStage,
    responses(
        (status = 200, description = "Done", body = cordon_api::incidents::IncidentView),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn stage(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<MoveStage>, JsonRejection>,
) -> Result<Json<IncidentView>, ApiError> {
    caller.require(Role::Responder)?;
    let Json(body) = body?;
    let to: Stage = body
        .stage
        .parse()
        .map_err(|e: crate::incidents::stage::UnknownStage| ApiError::bad_request(e.to_string()))?;
    state
        .move_incident(&id, to, body.force, body.reason.as_deref(), &caller.name)
        .await?;
    Ok(Json(incident_view(&state, &id).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/incidents/{id}/close",
    operation_id = "incidents_close",
    tag = "incidents",
    summary = "Close an incident, or mark it a false positive",
    description = "Needs a token with the responder role (or one that includes it).",
    params(("id" = String, Path, description = "The id")),
    request_body = cordon_api::incidents::Close,
    responses(
        (status = 200, description = "Done", body = cordon_api::incidents::IncidentView),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn close(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<Close>, JsonRejection>,
) -> Result<Json<IncidentView>, ApiError> {
    caller.require(Role::Responder)?;
    let Json(body) = body?;
    let to = match body.resolution.as_deref().unwrap_or("closed") {
        "closed" => Stage::Closed,
        "false_positive" | "false-positive" => Stage::FalsePositive,
        other => {
            return Err(ApiError::bad_request(format!(
                "resolution {other:?}: expected closed or false_positive"
            )))
        }
    };
    state
        .move_incident(&id, to, body.force, body.reason.as_deref(), &caller.name)
        .await?;
    Ok(Json(incident_view(&state, &id).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/incidents/{id}/assign",
    operation_id = "incidents_assign",
    tag = "incidents",
    summary = "Assign an incident (or unassign it)",
    description = "Needs a token with the responder role (or one that includes it).",
    params(("id" = String, Path, description = "The id")),
    request_body = cordon_api::incidents::Assign,
    responses(
        (status = 200, description = "Done", body = cordon_api::incidents::IncidentView),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn assign(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<Assign>, JsonRejection>,
) -> Result<Json<IncidentView>, ApiError> {
    caller.require(Role::Responder)?;
    let Json(body) = body?;
    state
        .assign_incident(&id, body.assignee.as_deref(), &caller.name)
        .await?;
    Ok(Json(incident_view(&state, &id).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/incidents/{id}/escalate",
    operation_id = "incidents_escalate",
    tag = "incidents",
    summary = "Escalate an incident to a tier and team",
    description = "Needs a token with the responder role (or one that includes it).",
    params(("id" = String, Path, description = "The id")),
    request_body = cordon_api::incidents::Escalate,
    responses(
        (status = 200, description = "Done", body = cordon_api::incidents::IncidentView),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn escalate(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<Escalate>, JsonRejection>,
) -> Result<Json<IncidentView>, ApiError> {
    caller.require(Role::Responder)?;
    let Json(body) = body?;
    let tier = match body.tier {
        Some(tier) => tier,
        None => state.incident(&id).await?.tier.saturating_add(1),
    };
    state
        .escalate_incident(
            &id,
            tier,
            body.to.as_deref(),
            body.reason.as_deref(),
            &caller.name,
        )
        .await?;
    Ok(Json(incident_view(&state, &id).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/incidents/{id}/severity",
    operation_id = "incidents_severity",
    tag = "incidents",
    summary = "Change an incident's severity",
    description = "Needs a token with the responder role (or one that includes it).",
    params(("id" = String, Path, description = "The id")),
    request_body = cordon_api::incidents::SetSeverity,
    responses(
        (status = 200, description = "Done", body = cordon_api::incidents::IncidentView),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn severity(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<SetSeverity>, JsonRejection>,
) -> Result<Json<IncidentView>, ApiError> {
    caller.require(Role::Responder)?;
    let Json(body) = body?;
    let severity = crate::incidents::parse_severity(&body.severity)?;
    state
        .set_incident_severity(&id, severity, &caller.name)
        .await?;
    Ok(Json(incident_view(&state, &id).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/incidents/{id}/comments",
    operation_id = "incidents_comment",
    tag = "incidents",
    summary = "Comment on an incident",
    description = "Needs a token with the responder role (or one that includes it).",
    params(("id" = String, Path, description = "The id")),
    request_body = cordon_api::incidents::Comment,
    responses(
        (status = 201, description = "Done", body = cordon_api::incidents::IncidentView),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn comment(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<Comment>, JsonRejection>,
) -> Result<(StatusCode, Json<IncidentView>), ApiError> {
    caller.require(Role::Responder)?;
    let Json(body) = body?;
    state
        .comment_incident(&id, &body.text, &caller.name)
        .await?;
    Ok((StatusCode::CREATED, Json(incident_view(&state, &id).await?)))
}

#[utoipa::path(
    post,
    path = "/api/v1/incidents/{id}/hosts",
    operation_id = "incidents_add_hosts",
    tag = "incidents",
    summary = "Add hosts to an incident",
    description = "Needs a token with the responder role (or one that includes it).",
    params(("id" = String, Path, description = "The id")),
    request_body = cordon_api::incidents::AddHosts,
    responses(
        (status = 200, description = "Done", body = cordon_api::incidents::IncidentView),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn add_hosts(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<AddHosts>, JsonRejection>,
) -> Result<Json<IncidentView>, ApiError> {
    caller.require(Role::Responder)?;
    let Json(body) = body?;
    state
        .add_incident_hosts(&id, &body.agents, &caller.name)
        .await?;
    Ok(Json(incident_view(&state, &id).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/incidents/{id}/links",
    operation_id = "incidents_link",
    tag = "incidents",
    summary = "Attach a task, hunt, action or evidence to an incident",
    description = "Needs a token with the responder role (or one that includes it).",
    params(("id" = String, Path, description = "The id")),
    request_body = cordon_api::incidents::Link,
    responses(
        (status = 201, description = "Done", body = cordon_api::incidents::IncidentView),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn link(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<Link>, JsonRejection>,
) -> Result<(StatusCode, Json<IncidentView>), ApiError> {
    caller.require(Role::Responder)?;
    let Json(body) = body?;
    let linked = state
        .link_incident(&id, body.kind, &body.id, &caller.name)
        .await?;
    let status = if linked {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(incident_view(&state, &id).await?)))
}

/// `GET /api/v1/incidents/{id}/report?format=json|markdown`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// `json` (default) or `markdown` (also `md`).
    #[serde(default)]
    format: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/incidents/{id}/report",
    operation_id = "incidents_report",
    tag = "incidents",
    summary = "An incident's report, as JSON or Markdown",
    description = "Needs a token with the viewer role (or one that includes it).",
    params(("id" = String, Path, description = "The id"), ReportQuery),
    responses(
        (status = 200, description = "The report (`format=json`, the default) or Markdown (`format=markdown`)", content((cordon_api::incidents::report::IncidentReport = "application/json"), (String = "text/markdown"))),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn report(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<ReportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    let Query(query) = query?;
    let markdown = match query.format.as_deref().unwrap_or("json") {
        "json" => false,
        "markdown" | "md" => true,
        other => {
            return Err(ApiError::bad_request(format!(
                "format {other:?}: expected json or markdown"
            )))
        }
    };
    let report = state.incident_report(&id).await?;
    Ok(if markdown {
        (
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            report::render_markdown(&report),
        )
            .into_response()
    } else {
        Json(report).into_response()
    })
}
