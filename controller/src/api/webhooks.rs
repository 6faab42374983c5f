//! `/api/v1/webhooks` (admin): add an outgoing webhook (its secret is shown once, in the
//! answer), list and show them (never with the secret), remove one, see its deliveries with
//! their state, attempts and last error, and queue a test delivery. See [`crate::webhooks`]
//! for the signature and the retry policy.

use axum::{
    extract::{
        rejection::{JsonRejection, QueryRejection},
        Path, Query, State,
    },
    http::StatusCode,
    Extension, Json,
};
use cordon_api::error::ErrorCode;
use serde::Deserialize;

use crate::{
    api::{auth::Caller, error::ApiError, recorder::AuditNote, AppState},
    store::{
        webhooks::{DeliveryRecord, WebhookRecord},
        Role,
    },
    webhooks::{CreateWebhook, WebhookCreated, WebhookError},
};
use cordon_api::webhooks::TestQueued;

/// Most deliveries one list returns.
pub const MAX_DELIVERIES: i64 = 1000;

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::Invalid { .. } => ApiError::bad_request(e.to_string()),
            WebhookError::UnknownWebhook(_) => ApiError::not_found(e.to_string()),
            WebhookError::Removed(_) | WebhookError::TooMany => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::Conflict, e.to_string())
            }
            WebhookError::Store(e) => ApiError::from(e),
        }
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/webhooks",
    operation_id = "webhooks_create",
    tag = "webhooks",
    summary = "Add a webhook; its secret is shown once",
    description = "Needs a token with the admin role (or one that includes it).",
    request_body = cordon_api::webhooks::CreateWebhook,
    responses(
        (status = 201, description = "Done", body = cordon_api::webhooks::WebhookCreated),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<CreateWebhook>, JsonRejection>,
) -> Result<(StatusCode, Extension<AuditNote>, Json<WebhookCreated>), ApiError> {
    caller.require(Role::Admin)?;
    let Json(body) = body?;
    let created = state.create_webhook(body, &caller.name).await?;
    // The URL may carry a token of its own: the audit log names the host only.
    let host = reqwest::Url::parse(&created.webhook.url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned));
    let note = AuditNote {
        target: Some(created.webhook.id.clone()),
        detail: serde_json::json!({
            "name": created.webhook.name,
            "host": host,
            "events": created.webhook.events,
        }),
    };
    Ok((StatusCode::CREATED, Extension(note), Json(created)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Include removed webhooks.
    #[serde(default)]
    all: Option<bool>,
}

#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    operation_id = "webhooks_list",
    tag = "webhooks",
    summary = "Webhooks",
    description = "Needs a token with the admin role (or one that includes it).",
    params(ListQuery),
    responses(
        (status = 200, description = "Done", body = Vec<cordon_api::webhooks::WebhookRecord>),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<WebhookRecord>>, ApiError> {
    caller.require(Role::Admin)?;
    let Query(query) = query?;
    Ok(Json(
        state
            .store
            .list_webhooks(query.all.unwrap_or(false))
            .await?,
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}",
    operation_id = "webhooks_show",
    tag = "webhooks",
    summary = "One webhook",
    description = "Needs a token with the admin role (or one that includes it).",
    params(("id" = String, Path, description = "The id")),
    responses(
        (status = 200, description = "Done", body = cordon_api::webhooks::WebhookRecord),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WebhookRecord>, ApiError> {
    caller.require(Role::Admin)?;
    Ok(Json(state.webhook(&id).await?))
}

#[utoipa::path(
    delete,
    path = "/api/v1/webhooks/{id}",
    operation_id = "webhooks_remove",
    tag = "webhooks",
    summary = "Disable a webhook",
    description = "Needs a token with the admin role (or one that includes it).",
    params(("id" = String, Path, description = "The id")),
    responses(
        (status = 200, description = "Done", body = cordon_api::webhooks::WebhookRecord),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WebhookRecord>, ApiError> {
    caller.require(Role::Admin)?;
    Ok(Json(state.remove_webhook(&id, &caller.name).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    #[serde(default)]
    limit: Option<i64>,
}

/// Newest first.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}/deliveries",
    operation_id = "webhooks_deliveries",
    tag = "webhooks",
    summary = "A webhook's deliveries, newest first",
    description = "Needs a token with the admin role (or one that includes it).",
    params(("id" = String, Path, description = "The id"), DeliveriesQuery),
    responses(
        (status = 200, description = "Done", body = Vec<cordon_api::webhooks::DeliveryRecord>),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Json<Vec<DeliveryRecord>>, ApiError> {
    caller.require(Role::Admin)?;
    let Query(query) = query?;
    state.webhook(&id).await?;
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_DELIVERIES);
    Ok(Json(state.store.webhook_deliveries(&id, limit).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/webhooks/{id}/test",
    operation_id = "webhooks_test",
    tag = "webhooks",
    summary = "Queue a test delivery",
    description = "Needs a token with the admin role (or one that includes it).",
    params(("id" = String, Path, description = "The id")),
    responses(
        (status = 202, description = "Queued", body = cordon_api::webhooks::TestQueued),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn test(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<TestQueued>), ApiError> {
    caller.require(Role::Admin)?;
    let delivery_id = state.test_webhook(&id, &caller.name).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(TestQueued {
            webhook_id: id,
            delivery_id,
        }),
    ))
}
