//! The layer that writes the audit log for the API: every state-changing call (any method but
//! GET, HEAD and OPTIONS) and every authentication failure.
//!
//! For a state-changing call by an authenticated caller it appends an `attempt` entry before the
//! handler runs, and refuses with 503 if it cannot (fail closed: see [`crate::audit`]); after
//! the handler it appends the outcome: the HTTP status, or `refused` for 401 and 403, with the
//! attempt's seq in its detail. On the routes in `ATTEMPT_IN_HANDLER` the handler appends the
//! attempt itself, in the transaction that makes the change ([`DeferredAttempt`]), so it is
//! still durable before the change and costs no commit of its own; when such a handler made
//! no change, the attempt is appended after it, ahead of the outcome. A handler can name what
//! it created, or add detail, by putting an [`AuditNote`] in its response's extensions. A 401
//! on any route is recorded as a refusal with actor `unauthenticated` and at most a prefix of
//! the token's hash.
//!
//! Entries name the route as written in the router (`POST /api/v1/agents/{id}/revoke`), with the
//! path parameters as the target. Request bodies are not recorded: some carry secrets. Routes
//! that do not exist change nothing and are not recorded.

use axum::{
    extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State},
    http::{Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use cordon_api::error::ErrorCode;
use serde_json::json;

use crate::{
    api::{
        auth::{authenticate, Authentication},
        error::ApiError,
        AppState,
    },
    audit::{DeferredAttempt, ATTEMPT, REFUSED, UNAUTHENTICATED},
};

/// Routes whose handler appends the `attempt` entry inside its own write transaction (it takes
/// the [`DeferredAttempt`] from the request's extensions). Only routes whose every change
/// starts with that transaction may be listed: submitting a signed action, on the path whose
/// latency has a budget.
const ATTEMPT_IN_HANDLER: &[&str] = &["POST /api/v1/actions", "POST /api/v1/actions/automation"];

/// What a handler adds to the entry recording its outcome.
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    /// What the call acted on, when the path does not say (e.g. the id of what it created).
    pub target: Option<String>,
    /// Merged into the entry's detail (an object's fields are added; anything else is kept
    /// under `note`).
    pub detail: serde_json::Value,
}

/// Whether a request with this method can change state.
fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The middleware; installed in [`crate::api::router`] with `from_fn_with_state`.
pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(route) = request.extensions().get::<MatchedPath>().cloned() else {
        return next.run(request).await;
    };
    let method = request.method().clone();
    let action = format!("{method} {}", route.as_str());
    let (mut parts, body) = request.into_parts();
    let target = match RawPathParams::from_request_parts(&mut parts, &state).await {
        Ok(params) => params
            .iter()
            .map(|(_, value)| value)
            .collect::<Vec<_>>()
            .join("/"),
        Err(_) => String::new(),
    };
    let authentication = authenticate(&parts.headers, &state).await;

    let mut deferred = None;
    let attempt = match (&authentication, changes_state(&method)) {
        (Authentication::Caller(caller), true) if ATTEMPT_IN_HANDLER.contains(&action.as_str()) => {
            let detail = json!({ "token_id": caller.token_id, "role": caller.role });
            let attempt = DeferredAttempt::new(&caller.name, &action, &target, detail);
            parts.extensions.insert(attempt.clone());
            deferred = Some(attempt);
            None
        }
        (Authentication::Caller(caller), true) => {
            let detail = json!({ "token_id": caller.token_id, "role": caller.role });
            match state
                .audit(&caller.name, &action, &target, ATTEMPT, detail)
                .await
            {
                Ok(entry) => Some((caller.name.clone(), entry.seq)),
                Err(_) => {
                    return ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        ErrorCode::AuditUnavailable,
                        "the audit log cannot be written, so nothing was changed; \
                         see the controller log",
                    )
                    .into_response()
                }
            }
        }
        _ => None,
    };
    let failure = authentication.failure_reason();
    let token_hash_prefix = match &authentication {
        Authentication::Refused { token_hash_prefix } => Some(token_hash_prefix.clone()),
        _ => None,
    };
    parts.extensions.insert(authentication);

    let response = next.run(Request::from_parts(parts, body)).await;
    let status = response.status();
    let attempt = match (attempt, deferred) {
        (Some(attempt), _) => Some(attempt),
        (None, Some(deferred)) => match deferred.seq() {
            Some(seq) => Some((deferred.actor().to_owned(), seq)),
            // The handler changed nothing (it refused, or failed before its write): its attempt
            // goes in now, ahead of the outcome. A failure is logged by `append_audit_entry`.
            None => state
                .append_audit_entry(deferred.entry())
                .await
                .ok()
                .map(|entry| (entry.actor, entry.seq)),
        },
        (None, None) => None,
    };

    if status == StatusCode::UNAUTHORIZED {
        let mut detail = json!({ "status": status.as_u16(), "reason": failure });
        if let Some(prefix) = token_hash_prefix {
            detail["token_hash_prefix"] = prefix.into();
        }
        state
            .audit_refusal(UNAUTHENTICATED, &action, &target, detail)
            .await;
    } else if let Some((actor, seq)) = attempt {
        let outcome = if status == StatusCode::FORBIDDEN {
            REFUSED.to_owned()
        } else {
            status.as_u16().to_string()
        };
        let mut detail = json!({ "attempt": seq, "status": status.as_u16() });
        let mut target = target;
        if let Some(note) = response.extensions().get::<AuditNote>() {
            if let Some(noted) = &note.target {
                target.clone_from(noted);
            }
            merge(&mut detail, &note.detail);
        }
        // The change has been made whatever happens here; a failure is logged by `audit`.
        let _ = state
            .audit(&actor, &action, &target, &outcome, detail)
            .await;
    }
    response
}

/// Adds `note`'s fields to `detail` (an object), without replacing `attempt` or `status`.
fn merge(detail: &mut serde_json::Value, note: &serde_json::Value) {
    let Some(map) = detail.as_object_mut() else {
        return;
    };
    match note {
        serde_json::Value::Null => {}
        serde_json::Value::Object(fields) => {
            for (key, value) in fields {
                map.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
        other => {
            map.insert("note".into(), other.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reads_are_left_out() {
        for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(!changes_state(&method), "{method}");
        }
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(changes_state(&method), "{method}");
        }
    }

    #[test]
    fn a_note_adds_fields_but_never_replaces_the_recorded_ones() {
        let mut detail = json!({ "attempt": 7, "status": 201 });
        merge(
            &mut detail,
            &json!({ "agent_id": "a1", "status": 500, "attempt": 1 }),
        );
        assert_eq!(
            detail,
            json!({ "attempt": 7, "status": 201, "agent_id": "a1" })
        );
        merge(&mut detail, &json!("free text"));
        assert_eq!(detail["note"], "free text");
        let before = detail.clone();
        merge(&mut detail, &serde_json::Value::Null);
        assert_eq!(detail, before);
    }
}
