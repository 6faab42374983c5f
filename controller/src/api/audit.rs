//! `/api/v1/audit`: read the audit log and verify its hash chain (admin).

use axum::{
    extract::{rejection::QueryRejection, Query, State},
    Json,
};
use serde::{Deserialize, Serialize};

use crate::{
    api::{auth::Caller, error::ApiError, AppState},
    store::{audit::MAX_LIST, Role},
};
use cordon_api::audit::{AuditPage, AuditVerifyView};

/// Entries a listing returns when no `limit` is given.
const DEFAULT_LIMIT: i64 = 100;

/// `GET /api/v1/audit?after=SEQ&limit=N`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only entries with a seq above this (0, the default, is from the start).
    #[serde(default)]
    pub after: Option<i64>,
    /// At most this many (default 100, at most 1,000).
    #[serde(default)]
    pub limit: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/audit",
    operation_id = "audit_list",
    tag = "audit",
    summary = "One page of the audit log, oldest first",
    description = "Needs a token with the admin role (or one that includes it).",
    params(AuditQuery),
    responses(
        (status = 200, description = "Done", body = cordon_api::audit::AuditPage),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    caller.require(Role::Admin)?;
    let Query(query) = query?;
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::bad_request(format!(
            "after must be 0 or more, got {after}"
        )));
    }
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_LIST}, got {limit}"
        )));
    }
    let entries = state.store.list_audit(after, limit).await?;
    let last_seq = entries.last().map_or(after, |e| e.seq);
    Ok(Json(AuditPage { entries, last_seq }))
}

#[utoipa::path(
    get,
    path = "/api/v1/audit/verify",
    operation_id = "audit_verify",
    tag = "audit",
    summary = "Walk the audit log's hash chain",
    description = "Needs a token with the admin role (or one that includes it).",
    responses(
        (status = 200, description = "Done", body = cordon_api::audit::AuditVerifyView),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn verify(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<AuditVerifyView>, ApiError> {
    caller.require(Role::Admin)?;
    let verification = state.store.verify_audit().await?;
    if let Some(broken) = &verification.first_broken {
        tracing::error!(
            seq = broken.seq,
            reason = broken.reason.as_str(),
            detail = %broken.detail,
            "audit log chain is broken"
        );
    }
    Ok(Json(AuditVerifyView {
        ok: verification.ok(),
        entries: verification.entries,
        first_broken: verification.first_broken,
        head: verification.head,
    }))
}
