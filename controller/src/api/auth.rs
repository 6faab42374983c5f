//! Bearer-token authentication. Tokens are looked up by their SHA-256; the token itself is never
//! stored or logged.
//!
//! The audit layer ([`crate::api::recorder`]) authenticates each request once, before routing
//! reaches the handler, and leaves the result in the request's extensions, where the [`Caller`]
//! extractor picks it up; without that layer the extractor authenticates by itself.

use axum::{
    extract::FromRequestParts,
    http::{request::Parts, HeaderMap},
};
use cordon_api::error::ErrorCode;

use crate::{
    api::{error::ApiError, AppState},
    now_ms, secret,
    store::Role,
};

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_id: String,
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// Refuses with 403 unless the caller's role covers `needed`.
    pub fn require(&self, needed: Role) -> Result<(), ApiError> {
        if self.role.allows(needed) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this needs the {} role; the token {:?} has {}",
                needed.as_str(),
                self.name,
                self.role.as_str()
            )))
        }
    }
}

/// What a request's `Authorization` header proved.
#[derive(Debug, Clone)]
pub enum Authentication {
    /// A valid token.
    Caller(Caller),
    /// No `Authorization` header.
    Missing,
    /// A header that is not `Bearer <token>`.
    Malformed,
    /// A token that is unknown, expired or revoked; only a prefix of its hash is kept.
    Refused { token_hash_prefix: String },
    /// The store could not be reached (logged where it happened): worth trying again.
    Unavailable,
    /// The store answered with an error (logged where it happened): the controller's fault.
    Failed,
}

impl Authentication {
    /// The caller, or the error the API answers with.
    pub fn caller(&self) -> Result<Caller, ApiError> {
        match self {
            Authentication::Caller(caller) => Ok(caller.clone()),
            Authentication::Missing => Err(ApiError::unauthorized(
                "missing Authorization: Bearer <token> header",
            )),
            Authentication::Malformed => Err(ApiError::unauthorized(
                "Authorization header is not `Bearer <token>`",
            )),
            Authentication::Refused { .. } => {
                Err(ApiError::unauthorized("unknown, expired or revoked token"))
            }
            Authentication::Unavailable => Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "cannot check the token just now; try again (the controller log says why)",
            )),
            Authentication::Failed => Err(ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                "cannot check the token; see the controller log",
            )),
        }
    }

    /// Why a request was not authenticated, as the audit log records it; `None` for a caller.
    pub fn failure_reason(&self) -> Option<&'static str> {
        match self {
            Authentication::Caller(_) => None,
            Authentication::Missing => Some("missing token"),
            Authentication::Malformed => Some("malformed Authorization header"),
            Authentication::Refused { .. } => Some("unknown, expired or revoked token"),
            Authentication::Unavailable => Some("token store unavailable"),
            Authentication::Failed => Some("token lookup failed"),
        }
    }
}

/// Checks the bearer token in `headers`.
pub async fn authenticate(headers: &HeaderMap, state: &AppState) -> Authentication {
    let Some(header) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Authentication::Missing;
    };
    let Some(token) = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
    else {
        return Authentication::Malformed;
    };
    let hash = secret::hash_token(token);
    match state.store.find_api_token(&hash, now_ms()).await {
        Ok(Some(record)) => Authentication::Caller(Caller {
            token_id: record.id,
            name: record.name,
            role: record.role,
        }),
        Ok(None) => {
            let token_hash_prefix = secret::hash_prefix(&hash);
            tracing::warn!(%token_hash_prefix, "API request with an unknown, expired or revoked token");
            Authentication::Refused { token_hash_prefix }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot look up an API token");
            if e.is_unavailable() {
                Authentication::Unavailable
            } else {
                Authentication::Failed
            }
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(done) = parts.extensions.get::<Authentication>() {
            return done.caller();
        }
        let authentication = authenticate(&parts.headers, state).await;
        if authentication.failure_reason().is_some() {
            tracing::debug!(path = %parts.uri.path(), "API request not authenticated");
        }
        authentication.caller()
    }
}
