//! `/api/v1/actions`: submit containment actions signed by responders' own keys (or by the
//! controller's automation key on request), add approvals, follow them to the agent's receipt.
//!
//! Responders and automation submit and approve (what counts is who *signed*, not the token);
//! viewers read.

use cordon_api::agents::AgentListQuery;
use cordon_api::error::ErrorCode;
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
    actions::{ActionError, ActionView, AutomationAction, SignatureSpec, SubmitAction},
    api::{auth::Caller, error::ApiError, tasks::MAX_WAIT, AppState},
    audit::DeferredAttempt,
    store::Role,
};

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> Self {
        match e {
            ActionError::Check(check) => {
                let status = if check.is_trust() {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::BAD_REQUEST
                };
                ApiError::new(status, check.code(), check.to_string())
            }
            ActionError::UnknownAgent(_) | ActionError::UnknownAction(_) => {
                ApiError::not_found(e.to_string())
            }
            ActionError::RevokedAgent(_)
            | ActionError::NoPolicy(_)
            | ActionError::Exists(_)
            | ActionError::NotPending { .. } => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::Conflict, e.to_string())
            }
            ActionError::AlreadySigned { .. } => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::AlreadySigned,
                e.to_string(),
            ),
            ActionError::Invalid(_) => ApiError::bad_request(e.to_string()),
            ActionError::AutomationKey(_) => ApiError::internal("automation key unavailable", e),
            ActionError::Store(e) => ApiError::from(e),
        }
    }
}

/// Submitting and approving need a role that may order containment: responder or automation
/// (admin covers both). The signatures decide what runs.
fn require_signer_role(caller: &Caller) -> Result<(), ApiError> {
    if caller.role.allows(Role::Responder) || caller.role.allows(Role::Automation) {
        Ok(())
    } else {
        caller.require(Role::Responder)
    }
}

/// `POST /api/v1/actions` `{"request": {…}, "signatures": [{"public_key", "signature"}]}`.
/// The call's audit `attempt` is appended with the action, in one transaction.
#[utoipa::path(
    post,
    path = "/api/v1/actions",
    operation_id = "actions_submit",
    tag = "actions",
    summary = "Submit a signed containment action (or the first signatures of one)",
    description = "Needs a token with the responder or automation role (the signer's own key signed it; the agent checks that key against its policy).",
    request_body = cordon_api::actions::SubmitAction,
    responses(
        (status = 201, description = "Done", body = cordon_api::actions::ActionView),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    attempt: Option<Extension<DeferredAttempt>>,
    body: Result<Json<SubmitAction>, JsonRejection>,
) -> Result<(StatusCode, Json<ActionView>), ApiError> {
    require_signer_role(&caller)?;
    let Json(body) = body?;
    let attempt = attempt.map(|Extension(attempt)| attempt);
    let view = state
        .submit_action_audited(body, &caller.name, attempt.as_ref())
        .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// `POST /api/v1/actions/{id}/signatures` `{"public_key", "signature"}`.
#[utoipa::path(
    post,
    path = "/api/v1/actions/{id}/signatures",
    operation_id = "actions_approve",
    tag = "actions",
    summary = "Add a signature to a pending action",
    description = "Needs a token with the responder or automation role (the signer's own key signed it; the agent checks that key against its policy).",
    params(("id" = String, Path, description = "The id")),
    request_body = cordon_api::actions::SignatureSpec,
    responses(
        (status = 200, description = "Done", body = cordon_api::actions::ActionView),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<SignatureSpec>, JsonRejection>,
) -> Result<Json<ActionView>, ApiError> {
    require_signer_role(&caller)?;
    let Json(body) = body?;
    Ok(Json(
        state.add_action_signature(&id, body, &caller.name).await?,
    ))
}

/// `POST /api/v1/actions/automation` `{"agent_id", "action", "ttl_secs"}`: signed by the
/// controller's automation key (automation or admin).
#[utoipa::path(
    post,
    path = "/api/v1/actions/automation",
    operation_id = "actions_automation",
    tag = "actions",
    summary = "An action signed by the controller's automation key",
    description = "Needs a token with the automation role (or one that includes it).",
    request_body = cordon_api::actions::AutomationAction,
    responses(
        (status = 201, description = "Done", body = cordon_api::actions::ActionView),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn automation(
    State(state): State<AppState>,
    caller: Caller,
    attempt: Option<Extension<DeferredAttempt>>,
    body: Result<Json<AutomationAction>, JsonRejection>,
) -> Result<(StatusCode, Json<ActionView>), ApiError> {
    caller.require(Role::Automation)?;
    let Json(body) = body?;
    let attempt = attempt.map(|Extension(attempt)| attempt);
    let view = state
        .submit_automation_action(body, &caller.name, attempt.as_ref())
        .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ShowQuery {
    /// Seconds to wait for the action to end before answering.
    #[serde(default)]
    wait: Option<u64>,
}

/// `GET /api/v1/actions/{id}?wait=SECS`.
#[utoipa::path(
    get,
    path = "/api/v1/actions/{id}",
    operation_id = "actions_show",
    tag = "actions",
    summary = "One action with its signers and receipt; with `wait`, once it ends",
    description = "Needs a token with the viewer role (or one that includes it).",
    params(("id" = String, Path, description = "The id"), ShowQuery),
    responses(
        (status = 200, description = "Done", body = cordon_api::actions::ActionView),
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
) -> Result<Json<ActionView>, ApiError> {
    caller.require(Role::Viewer)?;
    let Query(query) = query?;
    let view = match query.wait {
        Some(secs) if secs > 0 => {
            // The connection is busy while this waits, not idle.
            let _waiting = crate::api::waiting(busy);
            state
                .wait_for_action(&id, Duration::from_secs(secs).min(MAX_WAIT))
                .await?
        }
        _ => state.action_view(&id).await?,
    };
    Ok(Json(view))
}

/// `GET /api/v1/actions?agent_id=…&limit=…`, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/actions",
    operation_id = "actions_list",
    tag = "actions",
    summary = "Actions, newest first",
    description = "Needs a token with the viewer role (or one that includes it).",
    params(cordon_api::agents::AgentListQuery),
    responses(
        (status = 200, description = "Done", body = Vec<cordon_api::actions::ActionView>),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<AgentListQuery>, QueryRejection>,
) -> Result<Json<Vec<ActionView>>, ApiError> {
    caller.require(Role::Viewer)?;
    let Query(query) = query?;
    let views = state
        .list_action_views(query.agent_id.as_deref(), query.limit())
        .await?;
    Ok(Json(views))
}
