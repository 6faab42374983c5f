//! API errors: always JSON `{ "error": …, "detail": … }` with the matching status.

use axum::{
    extract::rejection::JsonRejection,
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use cordon_api::error::{ErrorBody, ErrorCode};

/// An error as the API reports it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// What kind of error, for scripts.
    pub error: ErrorCode,
    /// What went wrong, for a human.
    pub detail: String,
}

impl ApiError {
    pub fn new(status: StatusCode, error: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            error,
            detail: detail.into(),
        }
    }
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, detail)
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, detail)
    }
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, detail)
    }
    /// Logs the cause, tells the caller only that it was ours.
    pub fn internal(context: &str, cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            format!("{context}; see the controller log"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(ErrorBody {
            error: self.error,
            detail: self.detail,
        });
        (self.status, body).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError::new(
            rejection.status(),
            ErrorCode::BadRequest,
            rejection.body_text(),
        )
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::new(
            rejection.status(),
            ErrorCode::BadRequest,
            rejection.body_text(),
        )
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            // As the audit recorder refuses when it cannot write an attempt (fail closed).
            crate::store::StoreError::AuditUnavailable { source } => {
                tracing::error!(error = %source, "audit log unavailable; the change was not made");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::AuditUnavailable,
                    "the audit log cannot be written, so nothing was changed; \
                     see the controller log",
                )
            }
            // Closed (the controller is stopping), timed out or cut off: not this request's
            // fault, and worth trying again.
            e if e.is_unavailable() => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Unavailable,
                    "the database cannot be reached just now; try again",
                )
            }
            e => ApiError::internal("store error", e),
        }
    }
}

/// 404 for routes that do not exist, in the same JSON shape.
pub async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no API route {}", uri.path()))
}
