//! `/api/v1/enrollment-tokens`: one-time tokens for `cordon-agent enroll`.

use axum::{extract::State, http::StatusCode, Json};
use cordon_api::error::ErrorCode;
use cordon_api::tokens::{CreateEnrollmentToken, EnrollmentTokenCreated};

use crate::{
    api::{auth::Caller, error::ApiError, AppState},
    now_ms, secret,
    store::{EnrollmentRevocation, EnrollmentTokenRecord, NewEnrollmentToken, Role},
};

/// Longest lifetime an enrolment token may have.
pub const MAX_ENROLL_TTL_SECS: u64 = 30 * 24 * 3600;

#[utoipa::path(
    post,
    path = "/api/v1/enrollment-tokens",
    operation_id = "tokens_create",
    tag = "tokens",
    summary = "A one-time enrolment token, shown once",
    description = "Needs a token with the admin role (or one that includes it).",
    request_body = cordon_api::tokens::CreateEnrollmentToken,
    responses(
        (status = 201, description = "Done", body = cordon_api::tokens::EnrollmentTokenCreated),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<CreateEnrollmentToken>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<EnrollmentTokenCreated>), ApiError> {
    caller.require(Role::Admin)?;
    let Json(body) = body?;
    if body.ttl_secs == 0 || body.ttl_secs > MAX_ENROLL_TTL_SECS {
        return Err(ApiError::bad_request(format!(
            "ttl_secs must be between 1 and {MAX_ENROLL_TTL_SECS} (30 days), got {}",
            body.ttl_secs
        )));
    }
    let token = secret::new_token(secret::ENROLL_TOKEN_PREFIX);
    let now = now_ms();
    // ttl_secs <= 30 days, so the product fits.
    let expires_at_ms = now + i64::try_from(body.ttl_secs).unwrap_or(0) * 1000;
    state
        .store
        .create_enrollment_token(&NewEnrollmentToken {
            token_hash: secret::hash_token(&token),
            created_at_ms: now,
            expires_at_ms,
            created_by: caller.name.clone(),
            note: body.note,
        })
        .await?;
    tracing::info!(by = %caller.name, expires_at_ms, "enrolment token created");
    Ok((
        StatusCode::CREATED,
        Json(EnrollmentTokenCreated {
            token,
            expires_at_ms,
            ca_fingerprint: state.ca.fingerprint(),
        }),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/enrollment-tokens",
    operation_id = "tokens_list",
    tag = "tokens",
    summary = "Enrolment tokens (hash prefixes only)",
    description = "Needs a token with the admin role (or one that includes it).",
    responses(
        (status = 200, description = "Done", body = Vec<cordon_api::tokens::EnrollmentTokenRecord>),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<EnrollmentTokenRecord>>, ApiError> {
    caller.require(Role::Admin)?;
    Ok(Json(state.store.list_enrollment_tokens().await?))
}

/// `POST /api/v1/enrollment-tokens/{prefix}/revoke`.
#[utoipa::path(
    post,
    path = "/api/v1/enrollment-tokens/{prefix}/revoke",
    operation_id = "tokens_revoke",
    tag = "tokens",
    summary = "Revoke an unused enrolment token: it expires now and can enrol nothing",
    description = "Needs a token with the admin role (or one that includes it). A token that \
                   enrolled an agent already is refused (409): revoke the agent instead.",
    params(("prefix" = String, Path, description = "The start of the token's hash, as `GET /api/v1/enrollment-tokens` shows it (at least 6 hex digits)")),
    responses(
        (status = 200, description = "Done", body = cordon_api::tokens::EnrollmentTokenRecord),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    axum::extract::Path(prefix): axum::extract::Path<String>,
) -> Result<Json<EnrollmentTokenRecord>, ApiError> {
    caller.require(Role::Admin)?;
    let prefix = prefix.trim().to_ascii_lowercase();
    if prefix.len() < 6 || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(format!(
            "{prefix:?} is not the start of a token hash: give at least 6 hex digits as \
             `cordon tokens list` shows them"
        )));
    }
    match state
        .store
        .revoke_enrollment_token(&prefix, now_ms())
        .await?
    {
        EnrollmentRevocation::Revoked(token) => {
            tracing::info!(token = %token.token_hash_prefix, by = %caller.name, "enrolment token revoked");
            Ok(Json(token))
        }
        EnrollmentRevocation::NotFound => Err(ApiError::not_found(format!(
            "no enrolment token whose hash starts with {prefix}"
        ))),
        EnrollmentRevocation::Ambiguous(candidates) => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Ambiguous,
            format!(
                "{prefix} starts several tokens' hashes ({}); give more of it",
                candidates.join(", ")
            ),
        )),
        EnrollmentRevocation::AlreadyUsed(token) => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Conflict,
            format!(
                "enrolment token {} already enrolled agent {}; revoke the agent instead",
                token.token_hash_prefix,
                token.used_by_agent.as_deref().unwrap_or("?")
            ),
        )),
    }
}
