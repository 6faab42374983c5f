//! Every error answer of the API: its status, and `{"error": CODE, "detail": TEXT}`.

use serde::{Deserialize, Serialize};

/// What kind of error an answer is: stable, for scripts to branch on (the `detail` is for
/// people and may change). Each comes with one status, except `bad_request`, which a body the
/// server cannot read also gets with 413, 415 or 422.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    strum::IntoStaticStr,
    strum::Display,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the request is malformed or names something badly; `detail` names the input.
    BadRequest,
    /// 401: no token, or an unknown, expired or revoked one.
    Unauthorized,
    /// 403: the token's role may not do this.
    Forbidden,
    /// 404: no such thing, or no such route.
    NotFound,
    /// 409: the thing is not in a state that allows this (e.g. a finished task cancelled).
    Conflict,
    /// 409: a rule refuses it (e.g. closing an incident that skips remediation).
    Refused,
    /// 409: this key has signed this action already.
    AlreadySigned,
    /// 409: a prefix names more than one thing.
    Ambiguous,
    /// 413: the body is larger than this route accepts.
    PayloadTooLarge,
    /// 400: the signed order's validity window has passed.
    Expired,
    /// 400: the signed order is issued in the future, beyond the allowed clock skew.
    NotYetValid,
    /// 400: a signature does not verify.
    BadSignature,
    /// 403: the agent does not trust the key for this action.
    UntrustedSigner,
    /// 403: the order lives longer than the agent's policy allows.
    OverPolicy,
    /// 503: the controller has its most of these open (e.g. live event streams); try later.
    Busy,
    /// 503: the database cannot be reached just now; try again.
    Unavailable,
    /// 503: the audit log cannot be written, so nothing was changed.
    AuditUnavailable,
    /// 500: the controller's fault; its log says more.
    Internal,
}

impl ErrorCode {
    /// The code as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// An error as the API answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What kind of error it is.
    pub error: ErrorCode,
    /// What went wrong, for a person: names the input at fault.
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::VariantArray;

    #[test]
    fn codes_read_the_same_in_json_and_in_text() {
        for code in ErrorCode::VARIANTS {
            let json = serde_json::to_value(code).expect("a code serialises");
            assert_eq!(json, serde_json::Value::from(code.as_str()), "{code:?}");
            let back: ErrorCode = serde_json::from_value(json).expect("and reads back");
            assert_eq!(back, *code);
        }
        assert_eq!(ErrorCode::AuditUnavailable.as_str(), "audit_unavailable");
    }
}
