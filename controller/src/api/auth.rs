//! Bearer-token authentication. Tokens are looked up by their SHA-256; the token itself is never
//! stored or logged.

use axum::{extract::FromRequestParts, http::request::Parts};

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

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::unauthorized("missing Authorization: Bearer <token> header")
            })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("Authorization header is not `Bearer <token>`")
            })?;
        let record = state
            .store
            .find_api_token(&secret::hash_token(token), now_ms())
            .await?
            .ok_or_else(|| {
                tracing::warn!(path = %parts.uri.path(), "API request with an unknown, expired or revoked token");
                ApiError::unauthorized("unknown, expired or revoked token")
            })?;
        Ok(Caller {
            token_id: record.id,
            name: record.name,
            role: record.role,
        })
    }
}
