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
use serde::Deserialize;

use crate::{
    api::{auth::Caller, error::ApiError, recorder::AuditNote, AppState},
    store::{
        webhooks::{DeliveryRecord, WebhookRecord},
        Role,
    },
    webhooks::{CreateWebhook, WebhookCreated, WebhookError},
};
pub use cordon_api::webhooks::TestQueued;

/// Most deliveries one list returns.
pub const MAX_DELIVERIES: i64 = 1000;

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::Invalid { .. } => ApiError::bad_request(e.to_string()),
            WebhookError::UnknownWebhook(_) => ApiError::not_found(e.to_string()),
            WebhookError::Removed(_) | WebhookError::TooMany => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            WebhookError::Store(e) => ApiError::from(e),
        }
    }
}

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Include removed webhooks.
    #[serde(default)]
    all: Option<bool>,
}

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

pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WebhookRecord>, ApiError> {
    caller.require(Role::Admin)?;
    Ok(Json(state.webhook(&id).await?))
}

pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WebhookRecord>, ApiError> {
    caller.require(Role::Admin)?;
    Ok(Json(state.remove_webhook(&id, &caller.name).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    #[serde(default)]
    limit: Option<i64>,
}

/// Newest first.
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
