//! Why the agent refused a signed action: one variant per check of [`super::verify`], each
//! message starting with the check's name, so a responder and a script can tell "untrusted key"
//! from "expired" from "replay".

use cordon_protocol::{
    action::ActionKind,
    message::{TaskError, TaskErrorCode},
};
use thiserror::Error;

use super::CLOCK_SKEW_MS;

/// Why an envelope was refused. The first word(s) of the message, [`Refusal::check`], name the
/// check that failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("wrong agent: the action is for agent {target}, this is agent {this}")]
    WrongAgent { target: String, this: String },
    #[error("not yet valid: issued at {issued_at_ms} ms, {ahead_ms} ms ahead of this agent's clock (allowance {CLOCK_SKEW_MS} ms)")]
    NotYetValid { issued_at_ms: i64, ahead_ms: i64 },
    #[error("expired: expired at {expires_at_ms} ms, {ago_ms} ms ago")]
    Expired { expires_at_ms: i64, ago_ms: i64 },
    #[error("untrusted key: key {key_id} is not a trusted signer on this agent")]
    UntrustedKey { key_id: String },
    #[error("key not allowed: key {key_id} ({name}) may not sign {kind}")]
    NotAllowed {
        key_id: String,
        name: String,
        kind: ActionKind,
    },
    #[error("lifetime over policy: {what} is {secs} s, key {key_id} ({name}) may give at most {max_secs} s")]
    Lifetime {
        key_id: String,
        name: String,
        what: &'static str,
        secs: i64,
        max_secs: u64,
    },
    #[error("bad signature: {detail} (key {key_id})")]
    BadSignature { key_id: String, detail: String },
    #[error(
        "too few signers: {kind} needs {required} distinct trusted signers, {distinct} signed"
    )]
    TooFewSigners {
        kind: ActionKind,
        required: u32,
        distinct: usize,
    },
    #[error("replay: {0}")]
    Replay(String),
    /// Not a verdict on the envelope: the agent cannot record it now (cache full, disk error).
    #[error("replay cache: {0}")]
    Unavailable(String),
}

impl Refusal {
    /// The check that failed, as the message starts.
    pub fn check(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "malformed",
            Refusal::WrongAgent { .. } => "wrong agent",
            Refusal::NotYetValid { .. } => "not yet valid",
            Refusal::Expired { .. } => "expired",
            Refusal::UntrustedKey { .. } => "untrusted key",
            Refusal::NotAllowed { .. } => "key not allowed",
            Refusal::Lifetime { .. } => "lifetime over policy",
            Refusal::BadSignature { .. } => "bad signature",
            Refusal::TooFewSigners { .. } => "too few signers",
            Refusal::Replay(_) => "replay",
            Refusal::Unavailable(_) => "replay cache",
        }
    }

    /// The task error the controller sees: `Unauthorized` for a failed check, `Internal` when
    /// the agent could not record the action.
    pub fn to_task_error(&self) -> TaskError {
        let code = match self {
            Refusal::Unavailable(_) => TaskErrorCode::Internal,
            _ => TaskErrorCode::Unauthorized,
        };
        TaskError {
            code,
            message: self.to_string(),
        }
    }
}
