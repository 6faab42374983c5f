//! Writing the audit log (the hash chain itself is in [`crate::store::audit`]).
//!
//! What is recorded, and what happens when it cannot be:
//!
//! - **Changes made on someone's authority fail closed.** Every state-changing API call by an
//!   authenticated caller is appended as an `attempt` *before* its handler runs; if that append
//!   fails the request is refused with 503 and nothing changes (see [`crate::api::recorder`]).
//!   A few hot routes (submitting a signed action) hand the attempt to their handler instead
//!   ([`DeferredAttempt`]), which appends it in the transaction that makes the change: still
//!   durable before anything it announces, without a commit of its own.
//!   Its outcome (the HTTP status, or `refused`) is appended after, pointing back at the
//!   attempt. If only that second append fails, the change stands (it cannot be undone) and the
//!   failure is logged at error level with every field of the entry; the attempt already names
//!   who tried what.
//! - **Refusals are recorded best effort and rate-limited** ([`RefusalBudget`]): authentication
//!   failures and refused enrolments change nothing, and an attacker must not be able to fill
//!   the store, or stall the log's write lock, by sending bad tokens. Those over the budget are
//!   counted, and the count is written with the next one recorded.
//! - **Enrolments are recorded after the fact.** The token check, the agent and its certificate
//!   commit together in one transaction the audit entry cannot join; an enrolment whose entry
//!   fails to append is still visible in the store (the token's `used_by_agent`) and is logged
//!   at error level.
//!
//! Every field is bounded here, before it reaches the store: text is cut at a character
//! boundary, and a detail too large to keep is replaced by its size and SHA-256.

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};

use crate::{
    state::Controller,
    store::{AuditEntry, NewAuditEntry, StoreError},
};

/// The actor of an entry nobody authenticated for.
pub const UNAUTHENTICATED: &str = "unauthenticated";
/// The outcome of an entry written before the change it announces.
pub const ATTEMPT: &str = "attempt";
/// The outcome of a refused request (bad token, missing role, refused enrolment).
pub const REFUSED: &str = "refused";

/// Longest actor, action, target and outcome kept, in bytes.
const MAX_NAME_BYTES: usize = 256;
/// Largest detail kept whole (its JSON text), in bytes.
const MAX_DETAIL_BYTES: usize = 16 * 1024;

impl Controller {
    /// Appends one entry to the audit log, stamped now. Fields are bounded first (see the module
    /// docs). A failure is logged at error level, with the entry, before it is returned: the
    /// caller decides whether to refuse what it was about to do.
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        outcome: &str,
        detail: serde_json::Value,
    ) -> Result<AuditEntry, StoreError> {
        self.append_audit_entry(new_entry(actor, action, target, outcome, detail))
            .await
    }

    /// Appends an entry already built (and bounded), as [`Controller::audit`] does.
    pub async fn append_audit_entry(&self, entry: NewAuditEntry) -> Result<AuditEntry, StoreError> {
        match self.store.append_audit(&entry).await {
            Ok(stored) => Ok(stored),
            Err(e) => {
                tracing::error!(
                    error = %e,
                    actor = %entry.actor,
                    action = %entry.action,
                    target = %entry.target,
                    outcome = %entry.outcome,
                    detail = %entry.detail,
                    "AUDIT LOG WRITE FAILED: this event is not in the audit log"
                );
                Err(e)
            }
        }
    }

    /// Records a refusal (authentication failure, refused enrolment) if the refusal budget
    /// allows, adding how many were skipped since the last one recorded. Never fails: a
    /// refusal changes nothing, and the error is logged by [`Controller::audit`].
    pub async fn audit_refusal(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        mut detail: serde_json::Value,
    ) {
        let Some(skipped) = self.audit_refusals.take(Instant::now()) else {
            return;
        };
        if skipped > 0 {
            if let Some(map) = detail.as_object_mut() {
                map.insert("unrecorded_refusals_before".into(), skipped.into());
            }
        }
        let _ = self.audit(actor, action, target, REFUSED, detail).await;
    }
}

/// An entry stamped now, every field bounded (see the module docs), for a caller that appends
/// it inside its own transaction.
pub(crate) fn new_entry(
    actor: &str,
    action: &str,
    target: &str,
    outcome: &str,
    detail: serde_json::Value,
) -> NewAuditEntry {
    NewAuditEntry {
        at_ms: crate::now_ms(),
        actor: bounded(actor),
        action: bounded(action),
        target: bounded(target),
        outcome: bounded(outcome),
        detail: bounded_detail(detail),
    }
}

/// An `attempt` entry the API's recorder leaves to the handler, to append in the same
/// transaction as the change the call makes. The handler takes [`DeferredAttempt::entry`]
/// into that transaction and, once it committed, reports the seq with
/// [`DeferredAttempt::appended`]. A handler that changed nothing (it refused, or failed before
/// its write) leaves it unappended, and the recorder appends it itself, ahead of the outcome.
#[derive(Debug, Clone)]
pub struct DeferredAttempt {
    entry: Arc<NewAuditEntry>,
    seq: Arc<OnceLock<i64>>,
}

impl DeferredAttempt {
    /// The `attempt` entry of `actor` calling `action` on `target`.
    pub fn new(actor: &str, action: &str, target: &str, detail: serde_json::Value) -> Self {
        Self {
            entry: Arc::new(new_entry(actor, action, target, ATTEMPT, detail)),
            seq: Arc::new(OnceLock::new()),
        }
    }

    /// The entry to append, stamped now.
    pub fn entry(&self) -> NewAuditEntry {
        NewAuditEntry {
            at_ms: crate::now_ms(),
            ..(*self.entry).clone()
        }
    }

    /// Who made the call.
    pub fn actor(&self) -> &str {
        &self.entry.actor
    }

    /// Records that the entry was committed as `seq`.
    pub fn appended(&self, seq: i64) {
        let _ = self.seq.set(seq);
    }

    /// The entry's seq, once a handler committed it.
    pub fn seq(&self) -> Option<i64> {
        self.seq.get().copied()
    }
}

/// A token bucket for refusal entries: up to `burst` at once, refilled at `per_second`.
#[derive(Debug)]
pub struct RefusalBudget {
    burst: f64,
    per_second: f64,
    state: Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    tokens: f64,
    refilled_at: Option<Instant>,
    /// Refusals not recorded since the last one that was.
    skipped: u64,
}

impl Default for RefusalBudget {
    /// 60 at once, then one a second: ample for people mistyping tokens, a trickle under attack.
    fn default() -> Self {
        Self::new(60, 1.0)
    }
}

impl RefusalBudget {
    /// A budget of `burst` entries, refilled at `per_second`.
    pub fn new(burst: u32, per_second: f64) -> Self {
        Self {
            burst: f64::from(burst),
            per_second,
            state: Mutex::new(BudgetState {
                tokens: f64::from(burst),
                refilled_at: None,
                skipped: 0,
            }),
        }
    }

    /// Whether a refusal at `now` may be recorded: `Some(skipped since the last recorded)`, or
    /// `None` (and it is counted) when over budget.
    pub fn take(&self, now: Instant) -> Option<u64> {
        // A poisoned lock only means another thread panicked mid-update of plain numbers.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = state
            .refilled_at
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        state.tokens = (state.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
        state.refilled_at = Some(now);
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            Some(std::mem::take(&mut state.skipped))
        } else {
            state.skipped += 1;
            None
        }
    }
}

/// `text` cut to [`MAX_NAME_BYTES`] at a character boundary.
fn bounded(text: &str) -> String {
    if text.len() <= MAX_NAME_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_NAME_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// `detail` itself, or its size and hash when its JSON text is over [`MAX_DETAIL_BYTES`].
fn bounded_detail(detail: serde_json::Value) -> serde_json::Value {
    let text = detail.to_string();
    if text.len() <= MAX_DETAIL_BYTES {
        return detail;
    }
    serde_json::json!({
        "truncated": true,
        "bytes": text.len(),
        "sha256": hex::encode(Sha256::digest(text.as_bytes())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_beyond_the_budget_are_counted_then_reported() {
        let budget = RefusalBudget::new(2, 1.0);
        let start = Instant::now();
        assert_eq!(budget.take(start), Some(0));
        assert_eq!(budget.take(start), Some(0));
        assert_eq!(budget.take(start), None);
        assert_eq!(budget.take(start), None);
        // Half a second refills half an entry: still over.
        assert_eq!(budget.take(start + Duration::from_millis(500)), None);
        // The next one recorded carries the three that were not.
        assert_eq!(budget.take(start + Duration::from_millis(1100)), Some(3));
        // A long pause refills only up to the burst.
        let later = start + Duration::from_secs(3600);
        assert_eq!(budget.take(later), Some(0));
        assert_eq!(budget.take(later), Some(0));
        assert_eq!(budget.take(later), None);
    }

    #[test]
    fn long_fields_are_cut_at_a_character_boundary() {
        assert_eq!(bounded("POST /api/v1/tasks"), "POST /api/v1/tasks");
        let long = "é".repeat(MAX_NAME_BYTES);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_NAME_BYTES + '…'.len_utf8());
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn an_oversized_detail_is_kept_as_its_hash() {
        let small = serde_json::json!({ "agent_id": "a1" });
        assert_eq!(bounded_detail(small.clone()), small);
        let big = serde_json::json!({ "blob": "x".repeat(MAX_DETAIL_BYTES) });
        let kept = bounded_detail(big.clone());
        assert_eq!(kept["truncated"], true);
        assert_eq!(kept["bytes"], big.to_string().len());
        assert_eq!(
            kept["sha256"],
            hex::encode(Sha256::digest(big.to_string().as_bytes()))
        );
    }
}
