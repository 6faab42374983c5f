//! `/api/v1/evidence`: stored evidence — list, the bytes by SHA-256, the signed manifests, and
//! re-verification.

use axum::{
    body::Body,
    extract::{rejection::QueryRejection, Path, Query, State},
    http::{header, HeaderValue},
    response::Response,
    Json,
};
use cordon_api::agents::AgentListQuery;

use crate::{
    api::{auth::Caller, error::ApiError, AppState},
    evidence::{is_sha256, EvidenceView, Verification},
    store::Role,
};
use cordon_api::evidence::SignedRecord;

/// `GET /api/v1/evidence`: newest first.
#[utoipa::path(
    get,
    path = "/api/v1/evidence",
    operation_id = "evidence_list",
    tag = "evidence",
    summary = "Stored evidence, newest first",
    description = "Needs a token with the viewer role (or one that includes it).",
    params(cordon_api::agents::AgentListQuery),
    responses(
        (status = 200, description = "Done", body = Vec<cordon_api::evidence::EvidenceView>),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<AgentListQuery>, QueryRejection>,
) -> Result<Json<Vec<EvidenceView>>, ApiError> {
    caller.require(Role::Viewer)?;
    let Query(query) = query?;
    let records = state
        .store
        .list_evidence(query.agent_id.as_deref(), query.limit())
        .await?;
    Ok(Json(records.iter().map(EvidenceView::from).collect()))
}

fn checked(sha256: &str) -> Result<(), ApiError> {
    if is_sha256(sha256) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{:?} is not a SHA-256 (64 lowercase hex digits)",
            sha256.chars().take(80).collect::<String>()
        )))
    }
}

/// `GET /api/v1/evidence/{sha256}`: the bytes, streamed from disk.
#[utoipa::path(
    get,
    path = "/api/v1/evidence/{sha256}",
    operation_id = "evidence_content",
    tag = "evidence",
    summary = "The stored bytes",
    description = "Needs a token with the viewer role (or one that includes it).",
    params(("sha256" = String, Path, description = "SHA-256 of the bytes, lowercase hex")),
    responses(
        (status = 200, description = "The stored bytes", content_type = "application/octet-stream"),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn content(
    State(state): State<AppState>,
    caller: Caller,
    Path(sha256): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    checked(&sha256)?;
    if state.store.evidence_by_sha256(&sha256).await?.is_empty() {
        return Err(ApiError::not_found(format!("no evidence {sha256}")));
    }
    let path = state.evidence.object_path(&sha256);
    let file = tokio::fs::File::open(&path).await.map_err(|e| {
        ApiError::internal(&format!("evidence {sha256} is recorded but unreadable"), e)
    })?;
    let len = file
        .metadata()
        .await
        .map_err(|e| ApiError::internal("reading evidence metadata", e))?
        .len();
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        file,
        256 * 1024,
    ));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(value) = HeaderValue::from_str(&sha256) {
        headers.insert("x-cordon-sha256", value);
    }
    Ok(response)
}

/// `GET /api/v1/evidence/{sha256}/manifest`: every collection of these bytes with its signed
/// manifest.
#[utoipa::path(
    get,
    path = "/api/v1/evidence/{sha256}/manifest",
    operation_id = "evidence_manifests",
    tag = "evidence",
    summary = "Every collection of these bytes with its manifest exactly as signed",
    description = "Needs a token with the viewer role (or one that includes it).",
    params(("sha256" = String, Path, description = "SHA-256 of the bytes, lowercase hex")),
    responses(
        (status = 200, description = "Done", body = Vec<cordon_api::evidence::SignedRecord>),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn manifests(
    State(state): State<AppState>,
    caller: Caller,
    Path(sha256): Path<String>,
) -> Result<Json<Vec<SignedRecord>>, ApiError> {
    caller.require(Role::Viewer)?;
    checked(&sha256)?;
    let records = state.store.evidence_by_sha256(&sha256).await?;
    if records.is_empty() {
        return Err(ApiError::not_found(format!("no evidence {sha256}")));
    }
    Ok(Json(
        records
            .into_iter()
            .map(|r| SignedRecord {
                view: EvidenceView::from(&r),
                manifest_hex: hex::encode(r.manifest.as_bytes()),
                agent_public_key: r.agent_public_key,
                signature: r.signature,
            })
            .collect(),
    ))
}

/// `GET /api/v1/evidence/{sha256}/verify`: re-hash the stored bytes and re-check every
/// signature and manifest.
#[utoipa::path(
    get,
    path = "/api/v1/evidence/{sha256}/verify",
    operation_id = "evidence_verify",
    tag = "evidence",
    summary = "Check the bytes and every manifest's signature again",
    description = "Needs a token with the viewer role (or one that includes it).",
    params(("sha256" = String, Path, description = "SHA-256 of the bytes, lowercase hex")),
    responses(
        (status = 200, description = "Done", body = cordon_api::evidence::Verification),
        (status = "4XX", description = "Refused: the body says why, naming the input", body = cordon_api::error::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    Path(sha256): Path<String>,
) -> Result<Json<Verification>, ApiError> {
    caller.require(Role::Viewer)?;
    checked(&sha256)?;
    state
        .verify_evidence(&sha256)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no evidence {sha256}")))
}
