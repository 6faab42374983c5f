//! `/api/v1/api-tokens`: bearer tokens for people and machines, each with a role (admin).

use axum::{extract::State, http::StatusCode, Extension, Json};

use crate::{
    api::{auth::Caller, error::ApiError, recorder::AuditNote, AppState},
    now_ms, secret,
    store::{ApiTokenRecord, Role},
};
use cordon_api::tokens::{ApiTokenCreated, CreateApiToken};

/// Longest token name.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest lifetime an API token may be given (it may also have none).
pub const MAX_API_TTL_SECS: u64 = 365 * 24 * 3600;

#[utoipa::path(
    post,
    path = "/api/v1/api-tokens",
    operation_id = "api_tokens_create",
    tag = "tokens",
    summary = "An API token with a role, shown once",
    description = "Needs a token with the admin role (or one that includes it).",
    request_body = cordon_api::tokens::CreateApiToken,
    responses(
        (status = 201, description = "Done", body = cordon_api::tokens::ApiTokenCreated),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<CreateApiToken>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Extension<AuditNote>, Json<ApiTokenCreated>), ApiError> {
    caller.require(Role::Admin)?;
    let Json(body) = body?;
    let name = body.name.trim().to_owned();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(format!(
            "name must be 1-{MAX_NAME_CHARS} characters without control characters"
        )));
    }
    let now = now_ms();
    let expires_at_ms = match body.ttl_secs {
        None => None,
        Some(ttl) if ttl == 0 || ttl > MAX_API_TTL_SECS => {
            return Err(ApiError::bad_request(format!(
                "ttl_secs must be between 1 and {MAX_API_TTL_SECS} (365 days), got {ttl}"
            )))
        }
        // ttl <= 365 days, so the product fits.
        Some(ttl) => Some(now + i64::try_from(ttl).unwrap_or(0) * 1000),
    };
    let id = uuid::Uuid::new_v4().to_string();
    let token = secret::new_token(secret::API_TOKEN_PREFIX);
    state
        .store
        .create_api_token(
            &id,
            &secret::hash_token(&token),
            &name,
            body.role,
            now,
            expires_at_ms,
        )
        .await?;
    tracing::info!(token_id = %id, %name, role = %body.role, by = %caller.name, "API token created");
    let note = AuditNote {
        target: Some(id.clone()),
        detail: serde_json::json!({ "name": name, "role": body.role, "expires_at_ms": expires_at_ms }),
    };
    Ok((
        StatusCode::CREATED,
        Extension(note),
        Json(ApiTokenCreated {
            id,
            name,
            role: body.role,
            token,
            expires_at_ms,
        }),
    ))
}

/// `GET /api/v1/api-tokens`.
#[utoipa::path(
    get,
    path = "/api/v1/api-tokens",
    operation_id = "api_tokens_list",
    tag = "tokens",
    summary = "Every API token: id, name, role, expiry, revocation (never the token or its hash)",
    description = "Needs a token with the admin role (or one that includes it).",
    responses(
        (status = 200, description = "Done", body = Vec<cordon_api::tokens::ApiTokenRecord>),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ApiTokenRecord>>, ApiError> {
    caller.require(Role::Admin)?;
    Ok(Json(state.store.list_api_tokens().await?))
}

/// `POST /api/v1/api-tokens/{id}/revoke`.
#[utoipa::path(
    post,
    path = "/api/v1/api-tokens/{id}/revoke",
    operation_id = "api_tokens_revoke",
    tag = "tokens",
    summary = "Revoke an API token: from now on it is refused (an earlier revocation time is kept)",
    description = "Needs a token with the admin role (or one that includes it). A token cannot revoke itself.",
    params(("id" = String, Path, description = "The token's id, as `GET /api/v1/api-tokens` shows it")),
    responses(
        (status = 200, description = "Done", body = cordon_api::tokens::ApiTokenRecord),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<ApiTokenRecord>, ApiError> {
    caller.require(Role::Admin)?;
    if caller.token_id == id {
        return Err(ApiError::bad_request(format!(
            "token {id} is the one making this request; revoke it with another admin token"
        )));
    }
    if !state.store.revoke_api_token(&id, now_ms()).await? {
        return Err(ApiError::not_found(format!("no API token {id}")));
    }
    let token = state
        .store
        .get_api_token(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no API token {id}")))?;
    tracing::info!(token_id = %id, by = %caller.name, "API token revoked");
    Ok(Json(token))
}
