//! `/api/v1/alerts`: alerts from SIEMs and scripts open incidents or join the open one they
//! repeat (see [`crate::alerts`] for the formats, host matching and fingerprints); the alerts
//! taken in can be listed and read back, with the payload exactly as received.

use axum::{
    body::Bytes,
    extract::{
        rejection::{BytesRejection, QueryRejection},
        Path, Query, State,
    },
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use cordon_api::error::ErrorCode;
use serde::Deserialize;

use crate::{
    alerts::{AlertError, Received},
    api::{auth::Caller, error::ApiError, recorder::AuditNote, AppState},
    store::{AlertRecord, Role},
};
use cordon_api::alerts::AlertView;

/// Most alerts one list returns.
pub const MAX_LIST: i64 = 1000;

impl From<AlertError> for ApiError {
    fn from(e: AlertError) -> Self {
        match e {
            AlertError::Field { .. } | AlertError::Format(_) => {
                ApiError::bad_request(e.to_string())
            }
            AlertError::TooLarge(_) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                e.to_string(),
            ),
            AlertError::Incident(e) => ApiError::from(e),
            AlertError::Store(e) => ApiError::from(e),
        }
    }
}

/// `POST /api/v1/alerts?format=generic|wazuh|ecs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReceiveQuery {
    /// The alert's format; detected from the body when left out.
    #[serde(default)]
    format: Option<String>,
}

/// Takes an alert: 201 with the incident it opened, or 200 with the open one it joined.
#[utoipa::path(
    post,
    path = "/api/v1/alerts",
    operation_id = "alerts_receive",
    tag = "alerts",
    summary = "Take an alert in (Wazuh, ECS or Cordon's own JSON): it opens or joins an incident",
    description = "Needs a token with the automation role (or one that includes it).",
    params(ReceiveQuery),
    request_body(content = serde_json::Value, content_type = "application/json", description = "The alert as its source sends it, at most 256 KiB; kept byte for byte"),
    responses(
        (status = 201, description = "Done", body = cordon_api::alerts::Received),
        (status = 200, description = "The alert joined an open incident", body = cordon_api::alerts::Received),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn receive(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ReceiveQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require(Role::Automation)?;
    let Query(query) = query?;
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        let error = if status == StatusCode::PAYLOAD_TOO_LARGE {
            ErrorCode::PayloadTooLarge
        } else {
            ErrorCode::BadRequest
        };
        ApiError::new(status, error, rejection.body_text())
    })?;
    let format = query
        .format
        .as_deref()
        .map(crate::alerts::parse_source)
        .transpose()?;
    let received = state.receive_alert(&body, format, &caller.name).await?;
    let status = if received.opened {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let note = AuditNote {
        target: Some(received.alert_id.clone()),
        detail: serde_json::json!({
            "incident_id": received.incident_id,
            "outcome": received.outcome,
            "source": received.source,
        }),
    };
    let mut response = (status, Json::<Received>(received)).into_response();
    response.extensions_mut().insert(note);
    Ok(response)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only the alerts of this incident.
    #[serde(default)]
    incident_id: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

/// `GET /api/v1/alerts?incident_id=…&limit=N`: newest first, without their payloads.
#[utoipa::path(
    get,
    path = "/api/v1/alerts",
    operation_id = "alerts_list",
    tag = "alerts",
    summary = "Alerts taken in, newest first",
    description = "Needs a token with the viewer role (or one that includes it).",
    params(ListQuery),
    responses(
        (status = 200, description = "Done", body = Vec<cordon_api::alerts::AlertRecord>),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<AlertRecord>>, ApiError> {
    caller.require(Role::Viewer)?;
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_LIST);
    Ok(Json(
        state
            .store
            .list_alerts(query.incident_id.as_deref(), limit)
            .await?,
    ))
}

/// `GET /api/v1/alerts/{id}`.
#[utoipa::path(
    get,
    path = "/api/v1/alerts/{id}",
    operation_id = "alerts_show",
    tag = "alerts",
    summary = "One alert with the payload it came in",
    description = "Needs a token with the viewer role (or one that includes it).",
    params(("id" = String, Path, description = "The id")),
    responses(
        (status = 200, description = "Done", body = cordon_api::alerts::AlertView),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<AlertView>, ApiError> {
    caller.require(Role::Viewer)?;
    let not_found = || ApiError::not_found(format!("no alert {id}"));
    let alert = state.store.get_alert(&id).await?.ok_or_else(not_found)?;
    let raw = state.store.alert_raw(&id).await?.ok_or_else(not_found)?;
    // It was JSON when it came in; should it somehow not parse now, show the text.
    let raw = serde_json::from_str(&raw).unwrap_or(serde_json::Value::String(raw));
    Ok(Json(AlertView { alert, raw }))
}

/// `GET /api/v1/alerts/{id}/raw`: the payload byte for byte, as it came in.
#[utoipa::path(
    get,
    path = "/api/v1/alerts/{id}/raw",
    operation_id = "alerts_raw",
    tag = "alerts",
    summary = "An alert's payload exactly as received: its SHA-256 is the alert's `raw_sha256`",
    description = "Needs a token with the viewer role (or one that includes it).",
    params(("id" = String, Path, description = "The id")),
    responses(
        (status = 200, description = "The bytes as received", content_type = "application/json"),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn raw(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    let raw = state
        .store
        .alert_raw(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no alert {id}")))?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        raw,
    )
        .into_response())
}
