//! `/api/v1/enrollment-tokens`: one-time tokens for `cordon-agent enroll`.

use axum::{extract::State, http::StatusCode, Json};

use crate::{
    api::{
        auth::Caller,
        error::ApiError,
        types::{CreateEnrollmentToken, EnrollmentTokenCreated},
        AppState,
    },
    now_ms, secret,
    store::{EnrollmentTokenRecord, NewEnrollmentToken, Role},
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
