//! The controller's early checks on a signed action: the validity window, every signature
//! (`verify_strict` over [`signing_bytes`]), and whether the agent's reported policy trusts each
//! key for this action and lifetime. They mirror the agent's own checks so a responder hears
//! "key K is not trusted by agent A for kill" at once, instead of after a round trip; they are
//! never the security boundary — the agent verifies everything again against its own policy.

pub use cordon_api::actions::{SignatureSpec, StoredSignature};
use cordon_api::error::ErrorCode;
use cordon_protocol::action::{
    check_signature_count, key_id, Action, ActionRequest, PolicySummary, SignerSummary, WindowError,
};
pub use cordon_protocol::action::{CLOCK_SKEW_MS, MAX_SIGNATURES};
use ed25519_dalek::{Signature, VerifyingKey};
use thiserror::Error;

/// Longest lifetime an action may have: the longest a task may wait for its agent.
pub const MAX_LIFETIME_MS: i64 = 7 * 24 * 3600 * 1000;

/// Why a signed action was refused before it reached the agent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CheckError {
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("expired: the action expired at {expires_at_ms} ms, {ago_ms} ms ago")]
    Expired { expires_at_ms: i64, ago_ms: i64 },
    #[error("not yet valid: issued {ahead_ms} ms ahead of the controller's clock (allowance {CLOCK_SKEW_MS} ms)")]
    NotYetValid { ahead_ms: i64 },
    #[error("bad signature: signature {index}: {detail}")]
    BadSignature { index: usize, detail: String },
    #[error("untrusted key: key {key_id} is not trusted by agent {agent_id} for {kind} (per the policy the agent reported when it last connected)")]
    Untrusted {
        key_id: String,
        agent_id: String,
        kind: String,
    },
    #[error("key not allowed: key {key_id} ({name}) is trusted by agent {agent_id}, but not for {kind}; it may sign: {allowed}")]
    NotAllowed {
        key_id: String,
        name: String,
        agent_id: String,
        kind: String,
        allowed: String,
    },
    #[error("lifetime over policy: {what} is {secs} s, but agent {agent_id} lets key {key_id} ({name}) give at most {max_secs} s")]
    Lifetime {
        key_id: String,
        name: String,
        agent_id: String,
        what: &'static str,
        secs: i64,
        max_secs: u64,
    },
}

impl CheckError {
    /// Whether the refusal is about who signed (403) rather than what was sent (400).
    pub fn is_trust(&self) -> bool {
        matches!(
            self,
            CheckError::Untrusted { .. }
                | CheckError::NotAllowed { .. }
                | CheckError::Lifetime { .. }
        )
    }

    /// A short machine-readable name for the API's `error` field.
    pub fn code(&self) -> ErrorCode {
        match self {
            CheckError::Malformed(_) => ErrorCode::BadRequest,
            CheckError::Expired { .. } => ErrorCode::Expired,
            CheckError::NotYetValid { .. } => ErrorCode::NotYetValid,
            CheckError::BadSignature { .. } => ErrorCode::BadSignature,
            CheckError::Untrusted { .. } | CheckError::NotAllowed { .. } => {
                ErrorCode::UntrustedSigner
            }
            CheckError::Lifetime { .. } => ErrorCode::OverPolicy,
        }
    }
}

/// Checks the validity window at `now_ms`: expires after issued, not longer than
/// [`MAX_LIFETIME_MS`], not expired, not issued in the future (beyond the skew allowance).
pub fn check_window(request: &ActionRequest, now_ms: i64) -> Result<(), CheckError> {
    let lifetime = request
        .lifetime_ms()
        .ok_or_else(|| CheckError::Malformed("expires_at_ms must be after issued_at_ms".into()))?;
    if lifetime > MAX_LIFETIME_MS {
        return Err(CheckError::Malformed(format!(
            "lifetime {} s is longer than the {} s an action may wait for its agent",
            lifetime / 1000,
            MAX_LIFETIME_MS / 1000
        )));
    }
    request.check_window(now_ms).map_err(|e| match e {
        WindowError::Inverted => {
            CheckError::Malformed("expires_at_ms must be after issued_at_ms".into())
        }
        WindowError::NotYetValid { ahead_ms } => CheckError::NotYetValid { ahead_ms },
        WindowError::Expired { ago_ms } => CheckError::Expired {
            expires_at_ms: request.expires_at_ms,
            ago_ms,
        },
    })
}

/// Verifies signature number `index` (from 1) over `bytes`; returns the key and its id.
pub fn verify_signature(
    bytes: &[u8],
    spec: &SignatureSpec,
    index: usize,
) -> Result<(String, VerifyingKey), CheckError> {
    let bad = |detail: String| CheckError::BadSignature { index, detail };
    let public: [u8; 32] = hex::decode(spec.public_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("public_key is not 64 hex digits (32 bytes)".into()))?;
    let key = VerifyingKey::from_bytes(&public)
        .map_err(|_| bad("public_key is not a valid Ed25519 key".into()))?;
    if key.is_weak() {
        return Err(bad("public_key is a weak (small-order) Ed25519 key".into()));
    }
    let signature: [u8; 64] = hex::decode(spec.signature.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("signature is not 128 hex digits (64 bytes)".into()))?;
    let id = key_id(&public);
    key.verify_strict(bytes, &Signature::from_bytes(&signature))
        .map_err(|_| bad(format!("does not verify over this request under key {id}")))?;
    Ok((id, key))
}

/// The signer `key_id` in `policy`, if it may sign `request` on `agent_id`: the key is listed,
/// allowed this action, and the lifetime (and a block's or isolation's own TTL) is within its
/// maximum — the same order of checks the agent makes.
pub fn check_trust<'p>(
    policy: &'p PolicySummary,
    agent_id: &str,
    request: &ActionRequest,
    key_id: &str,
) -> Result<&'p SignerSummary, CheckError> {
    let kind = request.action.kind();
    let signer = policy
        .signers
        .iter()
        .find(|s| s.key_id == key_id)
        .ok_or_else(|| CheckError::Untrusted {
            key_id: key_id.to_string(),
            agent_id: agent_id.to_string(),
            kind: kind.to_string(),
        })?;
    if !signer.actions.contains(&kind) {
        let allowed: Vec<&str> = signer.actions.iter().map(|k| k.as_str()).collect();
        return Err(CheckError::NotAllowed {
            key_id: key_id.to_string(),
            name: signer.name.clone(),
            agent_id: agent_id.to_string(),
            kind: kind.to_string(),
            allowed: if allowed.is_empty() {
                "nothing".into()
            } else {
                allowed.join(", ")
            },
        });
    }
    let over = |what: &'static str, secs: i64| CheckError::Lifetime {
        key_id: key_id.to_string(),
        name: signer.name.clone(),
        agent_id: agent_id.to_string(),
        what,
        secs,
        max_secs: signer.max_ttl_secs,
    };
    let max_secs = i64::try_from(signer.max_ttl_secs).unwrap_or(i64::MAX);
    let lifetime_ms = request.expires_at_ms.saturating_sub(request.issued_at_ms);
    if lifetime_ms > max_secs.saturating_mul(1000) {
        return Err(over(
            "the action's lifetime",
            lifetime_ms.saturating_add(999) / 1000,
        ));
    }
    let own_ttl = match &request.action {
        Action::Block { ttl_secs, .. } => Some(("the block's ttl", *ttl_secs)),
        Action::Isolate { ttl_secs } => Some(("the isolation's ttl", *ttl_secs)),
        _ => None,
    };
    if let Some((what, ttl)) = own_ttl {
        if ttl > signer.max_ttl_secs {
            return Err(over(what, i64::try_from(ttl).unwrap_or(i64::MAX)));
        }
    }
    Ok(signer)
}

/// Verifies signature `index` and checks its key against the policy; the stored form.
#[allow(clippy::too_many_arguments)]
pub fn check_signature(
    bytes: &[u8],
    request: &ActionRequest,
    spec: &SignatureSpec,
    index: usize,
    policy: &PolicySummary,
    by: &str,
    now_ms: i64,
) -> Result<StoredSignature, CheckError> {
    let (id, key) = verify_signature(bytes, spec, index)?;
    let signer = check_trust(policy, &request.agent_id, request, &id)?;
    Ok(StoredSignature {
        key_id: id,
        public_key: hex::encode(key.to_bytes()),
        signature: spec.signature.trim().to_ascii_lowercase(),
        signer: signer.name.clone(),
        added_by: by.to_string(),
        added_at_ms: now_ms,
    })
}

/// Checks every submitted signature; one key signing twice is kept once (it counts once).
pub fn check_all(
    bytes: &[u8],
    request: &ActionRequest,
    specs: &[SignatureSpec],
    policy: &PolicySummary,
    by: &str,
    now_ms: i64,
) -> Result<Vec<StoredSignature>, CheckError> {
    check_signature_count(specs.len()).map_err(CheckError::Malformed)?;
    let mut out: Vec<StoredSignature> = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let checked = check_signature(bytes, request, spec, i + 1, policy, by, now_ms)?;
        if !out.iter().any(|s| s.key_id == checked.key_id) {
            out.push(checked);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use cordon_protocol::action::{signing_bytes, ActionKind};
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn request(action: Action) -> ActionRequest {
        ActionRequest {
            action_id: uuid::Uuid::from_bytes([1; 16]),
            agent_id: "a1".into(),
            issued_at_ms: NOW,
            expires_at_ms: NOW + 300_000,
            nonce: [2; 16],
            action,
        }
    }

    fn kill() -> Action {
        Action::Kill {
            pid: 42,
            start_time_ms: 7,
            tree: false,
        }
    }

    fn sign(key: &SigningKey, request: &ActionRequest) -> SignatureSpec {
        SignatureSpec {
            public_key: hex::encode(key.verifying_key().to_bytes()),
            signature: hex::encode(key.sign(&signing_bytes(request).unwrap()).to_bytes()),
        }
    }

    fn policy(entries: &[(&SigningKey, &str, &[ActionKind], u64)]) -> PolicySummary {
        PolicySummary {
            signers: entries
                .iter()
                .map(|(key, name, actions, max)| SignerSummary {
                    name: name.to_string(),
                    key_id: key_id(&key.verifying_key().to_bytes()),
                    actions: actions.to_vec(),
                    max_ttl_secs: *max,
                })
                .collect(),
            required_signers: vec![(ActionKind::Kill, 2)],
            signed_reads: false,
        }
    }

    #[test]
    fn trusted_signatures_pass_and_one_key_counts_once() {
        let alice = SigningKey::from_bytes(&[1; 32]);
        let bob = SigningKey::from_bytes(&[2; 32]);
        let p = policy(&[
            (&alice, "alice", &[ActionKind::Kill], 3600),
            (&bob, "bob", &[ActionKind::Kill], 3600),
        ]);
        let r = request(kill());
        let bytes = signing_bytes(&r).unwrap();
        let specs = [sign(&alice, &r), sign(&alice, &r), sign(&bob, &r)];
        let checked = check_all(&bytes, &r, &specs, &p, "t", NOW).unwrap();
        let names: Vec<&str> = checked.iter().map(|s| s.signer.as_str()).collect();
        assert_eq!(names, ["alice", "bob"]);
        assert_eq!(p.required(ActionKind::Kill), 2);
    }

    #[test]
    fn each_refusal_names_what_failed() {
        let alice = SigningKey::from_bytes(&[1; 32]);
        let mallory = SigningKey::from_bytes(&[9; 32]);
        let p = policy(&[(&alice, "alice", &[ActionKind::Block], 600)]);
        let r = request(kill());
        let bytes = signing_bytes(&r).unwrap();

        let err = check_all(&bytes, &r, &[sign(&mallory, &r)], &p, "t", NOW).unwrap_err();
        assert!(matches!(err, CheckError::Untrusted { .. }), "{err}");
        assert!(err.to_string().contains("not trusted by agent a1 for kill"));
        assert!(err.is_trust());

        let err = check_all(&bytes, &r, &[sign(&alice, &r)], &p, "t", NOW).unwrap_err();
        assert!(matches!(err, CheckError::NotAllowed { .. }), "{err}");
        assert!(err.to_string().contains("it may sign: block"), "{err}");

        let block = request(Action::Block {
            targets: vec!["192.0.2.1".into()],
            ttl_secs: 3600,
        });
        let bytes = signing_bytes(&block).unwrap();
        let err = check_all(&bytes, &block, &[sign(&alice, &block)], &p, "t", NOW).unwrap_err();
        assert!(
            err.to_string().contains("the block's ttl is 3600 s"),
            "{err}"
        );

        // Signed for one request, submitted with another: the signature does not verify.
        let mut tampered = request(kill());
        let spec = sign(&alice, &tampered);
        tampered.nonce = [3; 16];
        let bytes = signing_bytes(&tampered).unwrap();
        let err = check_all(&bytes, &tampered, &[spec], &p, "t", NOW).unwrap_err();
        assert!(
            matches!(err, CheckError::BadSignature { index: 1, .. }),
            "{err}"
        );
        assert!(!err.is_trust());

        let garbage = SignatureSpec {
            public_key: "zz".into(),
            signature: "00".into(),
        };
        let err = check_all(&bytes, &tampered, &[garbage], &p, "t", NOW).unwrap_err();
        assert!(err.to_string().contains("64 hex digits"), "{err}");
        let err = check_all(&bytes, &tampered, &[], &p, "t", NOW).unwrap_err();
        assert!(matches!(err, CheckError::Malformed(_)));
    }

    #[test]
    fn the_window_must_be_open_and_bounded() {
        let r = request(kill());
        check_window(&r, NOW).unwrap();
        assert!(matches!(
            check_window(&r, NOW + 300_000),
            Err(CheckError::Expired { .. })
        ));
        assert!(matches!(
            check_window(&r, NOW - CLOCK_SKEW_MS - 1),
            Err(CheckError::NotYetValid { .. })
        ));
        let mut backwards = request(kill());
        backwards.expires_at_ms = backwards.issued_at_ms;
        assert!(matches!(
            check_window(&backwards, NOW),
            Err(CheckError::Malformed(_))
        ));
        let mut forever = request(kill());
        forever.expires_at_ms = NOW + MAX_LIFETIME_MS + 1;
        assert!(matches!(
            check_window(&forever, NOW),
            Err(CheckError::Malformed(_))
        ));
    }
}
