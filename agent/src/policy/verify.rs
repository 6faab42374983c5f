//! The signed-action check: an envelope runs only if every condition of DESIGN.md's trust model
//! holds, and a refusal names the one that failed.
//!
//! Order of the checks — cheap and structural first, so junk costs no signature verification;
//! the replay cache last, so only an envelope that passed everything else is remembered (an
//! envelope refused for any other reason can be fixed and sent again under the same id):
//!
//! 1. `malformed`: at least one and at most [`MAX_SIGNATURES`] signatures; expires after issued.
//! 2. `wrong agent`: the envelope names this agent.
//! 3. `not yet valid` / `expired`: `issued_at − CLOCK_SKEW_MS ≤ now < expires_at`.
//! 4. For every signature, in order:
//!    - `untrusted key`: its key id is a trusted signer's;
//!    - `key not allowed`: that signer may sign this action kind;
//!    - `lifetime over policy`: `expires_at − issued_at` and a block's or isolation's own
//!      `ttl_secs` are within that signer's `max_ttl_secs`.
//!
//!    Every signature must pass, not just enough of them: an envelope carrying a signature the
//!    agent cannot account for is refused whole.
//! 5. `bad signature`: every signature verifies (`verify_strict`) over
//!    [`signing_bytes`] of the request under its key — a tampered parameter fails here.
//! 6. `too few signers`: distinct keys ≥ the policy's `required_signers` for the action (one key
//!    signing twice counts once).
//! 7. `replay`: neither the action id nor the nonce was accepted before; both are recorded and
//!    fsync'd before this returns.

use cordon_protocol::action::{
    check_signature_count, signing_bytes, Action, ActionRequest, SignedAction, WindowError,
};
pub use cordon_protocol::action::{CLOCK_SKEW_MS, MAX_SIGNATURES};
use ed25519_dalek::Signature;

use super::{Policy, Refusal};
use crate::replay::{ReplayCache, ReplayError};

/// An envelope that passed every check and was recorded in the replay cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAction {
    pub request: ActionRequest,
    /// Key ids of the distinct keys that signed, in signature order.
    pub signers: Vec<String>,
}

/// Checks `signed` against `policy` for agent `agent_id` at `now_ms`, in the order documented at
/// the top of this module, and records it in `replay` if every check passed.
pub fn verify(
    signed: &SignedAction,
    agent_id: &str,
    now_ms: i64,
    policy: &Policy,
    replay: &mut ReplayCache,
) -> Result<VerifiedAction, Refusal> {
    let request = &signed.request;
    let kind = request.action.kind();

    // 1. Structure.
    check_signature_count(signed.signatures.len()).map_err(Refusal::Malformed)?;
    let lifetime_ms = request
        .lifetime_ms()
        .ok_or_else(|| Refusal::Malformed("expires_at must be after issued_at".into()))?;

    // 2. Target.
    if request.agent_id != agent_id {
        return Err(Refusal::WrongAgent {
            target: request.agent_id.clone(),
            this: agent_id.to_string(),
        });
    }

    // 3. Validity window.
    match request.check_window(now_ms) {
        Ok(()) => {}
        Err(WindowError::Inverted) => {
            return Err(Refusal::Malformed(
                "expires_at must be after issued_at".into(),
            ))
        }
        Err(WindowError::NotYetValid { ahead_ms }) => {
            return Err(Refusal::NotYetValid {
                issued_at_ms: request.issued_at_ms,
                ahead_ms,
            })
        }
        Err(WindowError::Expired { ago_ms }) => {
            return Err(Refusal::Expired {
                expires_at_ms: request.expires_at_ms,
                ago_ms,
            })
        }
    }

    // 4. Each signature's key: trusted, allowed this action, within its lifetimes.
    let mut keys = Vec::with_capacity(signed.signatures.len());
    for sig in &signed.signatures {
        let signer = policy
            .signer(&sig.key_id)
            .ok_or_else(|| Refusal::UntrustedKey {
                key_id: sig.key_id.clone(),
            })?;
        if !signer.allows(kind) {
            return Err(Refusal::NotAllowed {
                key_id: sig.key_id.clone(),
                name: signer.name.clone(),
                kind,
            });
        }
        let over = |what: &'static str, secs: i64| Refusal::Lifetime {
            key_id: sig.key_id.clone(),
            name: signer.name.clone(),
            what,
            secs,
            max_secs: signer.max_ttl_secs,
        };
        if lifetime_ms > signer.max_ttl_ms() {
            // Rounded up, so "3601 s" is never shown as "3600 s".
            return Err(over("the envelope's lifetime", (lifetime_ms + 999) / 1000));
        }
        if let Some(ttl_secs) = action_ttl_secs(&request.action) {
            if ttl_secs > signer.max_ttl_secs {
                return Err(over(
                    "the action's ttl",
                    i64::try_from(ttl_secs).unwrap_or(i64::MAX),
                ));
            }
        }
        let key = signer.verifying_key().map_err(|e| Refusal::UntrustedKey {
            key_id: format!("{} (unusable in policy: {e})", sig.key_id),
        })?;
        keys.push((sig, key));
    }

    // 5. Signatures.
    let bytes = signing_bytes(request)
        .map_err(|e| Refusal::Malformed(format!("cannot encode the request: {e}")))?;
    let mut distinct: Vec<String> = Vec::new();
    for (sig, key) in keys {
        let bad = |detail: String| Refusal::BadSignature {
            key_id: sig.key_id.clone(),
            detail,
        };
        let signature = Signature::from_slice(&sig.signature).map_err(|_| {
            bad(format!(
                "{} bytes, an Ed25519 signature is 64",
                sig.signature.len()
            ))
        })?;
        key.verify_strict(&bytes, &signature)
            .map_err(|_| bad("does not verify over this request".into()))?;
        if !distinct.contains(&sig.key_id) {
            distinct.push(sig.key_id.clone());
        }
    }

    // 6. M of N.
    let required = policy.required(kind);
    if distinct.len() < required as usize {
        return Err(Refusal::TooFewSigners {
            kind,
            required,
            distinct: distinct.len(),
        });
    }

    // 7. Replay, recorded durably before the action may run.
    replay
        .check_and_record(
            &request.action_id.to_string(),
            &request.nonce,
            request.expires_at_ms,
            now_ms,
        )
        .map_err(|e| match e {
            ReplayError::SeenAction(_) | ReplayError::SeenNonce(_) => {
                Refusal::Replay(e.to_string())
            }
            ReplayError::Full | ReplayError::Io { .. } => Refusal::Unavailable(e.to_string()),
        })?;
    Ok(VerifiedAction {
        request: request.clone(),
        signers: distinct,
    })
}

/// The lifetime an action gives itself beyond its envelope (a block's or isolation's TTL).
fn action_ttl_secs(action: &Action) -> Option<u64> {
    match action {
        Action::Block { ttl_secs, .. } | Action::Isolate { ttl_secs } => Some(*ttl_secs),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use cordon_protocol::{
        action::{key_id, ActionSignature},
        message::TaskErrorCode,
    };
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;
    use crate::policy::TrustedSigner;

    const AGENT: &str = "agent-1";
    const NOW: i64 = 1_700_000_000_000;

    struct Fixture {
        _tmp: tempfile::TempDir,
        policy: Policy,
        replay: ReplayCache,
        alice: SigningKey,
        bob: SigningKey,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let alice = SigningKey::from_bytes(&[1; 32]);
        let bob = SigningKey::from_bytes(&[2; 32]);
        let trusted =
            |name: &str, key: &SigningKey, actions: &[&str], max_ttl_secs| TrustedSigner {
                name: name.into(),
                public_key: hex::encode(key.verifying_key().to_bytes()),
                actions: actions.iter().map(|a| a.to_string()).collect(),
                max_ttl_secs,
            };
        let policy = Policy {
            signers: vec![
                trusted("alice", &alice, &["kill", "quarantine", "block"], 3600),
                trusted("bob", &bob, &["kill", "block"], 600),
            ],
            ..Policy::default()
        };
        policy.validate().unwrap();
        let replay = ReplayCache::open(tmp.path(), NOW).unwrap();
        Fixture {
            _tmp: tmp,
            policy,
            replay,
            alice,
            bob,
        }
    }

    fn request(action: Action) -> ActionRequest {
        ActionRequest {
            action_id: uuid::Uuid::from_bytes(rand::random()),
            agent_id: AGENT.into(),
            issued_at_ms: NOW,
            expires_at_ms: NOW + 300_000,
            nonce: rand::random(),
            action,
        }
    }

    fn kill() -> ActionRequest {
        request(Action::Kill {
            pid: 4242,
            start_time_ms: NOW - 10_000,
            tree: false,
        })
    }

    fn sign(request: ActionRequest, keys: &[&SigningKey]) -> SignedAction {
        let bytes = signing_bytes(&request).unwrap();
        SignedAction {
            signatures: keys
                .iter()
                .map(|k| ActionSignature {
                    key_id: key_id(&k.verifying_key().to_bytes()),
                    signature: k.sign(&bytes).to_bytes().to_vec(),
                })
                .collect(),
            request,
        }
    }

    impl Fixture {
        fn check(&mut self, signed: &SignedAction) -> Result<VerifiedAction, Refusal> {
            verify(signed, AGENT, NOW, &self.policy, &mut self.replay)
        }

        fn refused(&mut self, signed: &SignedAction, check: &str) -> Refusal {
            let refusal = self.check(signed).unwrap_err();
            assert_eq!(refusal.check(), check, "{refusal}");
            assert!(refusal.to_string().starts_with(check), "{refusal}");
            assert_eq!(refusal.to_task_error().code, TaskErrorCode::Unauthorized);
            refusal
        }
    }

    #[test]
    fn a_trusted_allowed_fresh_action_is_accepted_once() {
        let mut f = fixture();
        let signed = sign(kill(), &[&f.alice]);
        let verified = f.check(&signed).unwrap();
        assert_eq!(verified.request, signed.request);
        assert_eq!(
            verified.signers,
            vec![key_id(&f.alice.verifying_key().to_bytes())]
        );
        // Issued a little in the future (skew) is accepted too.
        let mut ahead = kill();
        ahead.issued_at_ms = NOW + CLOCK_SKEW_MS;
        ahead.expires_at_ms = NOW + CLOCK_SKEW_MS + 1000;
        f.check(&sign(ahead, &[&f.alice])).unwrap();
    }

    #[test]
    fn a_forged_signature_is_refused() {
        let mut f = fixture();
        let mut signed = sign(kill(), &[&f.alice]);
        // Signed by an attacker's key, labelled with alice's key id.
        let mallory = SigningKey::from_bytes(&[66; 32]);
        let forged = mallory.sign(&signing_bytes(&signed.request).unwrap());
        signed.signatures[0].signature = forged.to_bytes().to_vec();
        let refusal = f.refused(&signed, "bad signature");
        assert!(refusal.to_string().contains(&signed.signatures[0].key_id));
        // Garbage of the wrong length is refused the same way, without panicking.
        signed.signatures[0].signature = vec![0; 3];
        f.refused(&signed, "bad signature");
    }

    #[test]
    fn an_untrusted_key_is_refused() {
        let mut f = fixture();
        let mallory = SigningKey::from_bytes(&[66; 32]);
        let signed = sign(kill(), &[&mallory]);
        let refusal = f.refused(&signed, "untrusted key");
        assert!(refusal
            .to_string()
            .contains(&key_id(&mallory.verifying_key().to_bytes())));
        // A valid trusted signature does not carry an untrusted one along.
        let signed = sign(kill(), &[&f.alice, &mallory]);
        f.refused(&signed, "untrusted key");
    }

    #[test]
    fn a_key_not_allowed_this_action_is_refused() {
        let mut f = fixture();
        // bob may kill and block, not quarantine.
        let signed = sign(
            request(Action::Quarantine {
                path: "/tmp/x".into(),
            }),
            &[&f.bob],
        );
        let refusal = f.refused(&signed, "key not allowed");
        assert!(refusal.to_string().contains("quarantine"), "{refusal}");
    }

    #[test]
    fn a_tampered_parameter_is_refused() {
        let mut f = fixture();
        let mut signed = sign(kill(), &[&f.alice]);
        signed.request.action = Action::Kill {
            pid: 1234,
            start_time_ms: NOW - 10_000,
            tree: false,
        };
        f.refused(&signed, "bad signature");
        let mut signed = sign(kill(), &[&f.alice]);
        signed.request.nonce[0] ^= 1;
        f.refused(&signed, "bad signature");
    }

    #[test]
    fn another_agents_action_is_refused() {
        let mut f = fixture();
        let mut req = kill();
        req.agent_id = "agent-2".into();
        let refusal = f.refused(&sign(req, &[&f.alice]), "wrong agent");
        assert!(refusal.to_string().contains("agent-2"));
    }

    #[test]
    fn an_expired_action_is_refused() {
        let mut f = fixture();
        let mut req = kill();
        req.issued_at_ms = NOW - 300_000;
        req.expires_at_ms = NOW;
        f.refused(&sign(req, &[&f.alice]), "expired");
    }

    #[test]
    fn an_action_not_yet_valid_is_refused() {
        let mut f = fixture();
        let mut req = kill();
        req.issued_at_ms = NOW + CLOCK_SKEW_MS + 1;
        req.expires_at_ms = req.issued_at_ms + 60_000;
        f.refused(&sign(req, &[&f.alice]), "not yet valid");
    }

    #[test]
    fn a_lifetime_over_policy_is_refused() {
        let mut f = fixture();
        // alice may give 3600 s; one more second is too long.
        let mut req = kill();
        req.expires_at_ms = NOW + 3_601_000;
        let refusal = f.refused(&sign(req, &[&f.alice]), "lifetime over policy");
        assert!(refusal.to_string().contains("3601 s"), "{refusal}");
        // With two signers, the stricter limit applies: bob may give 600 s.
        let mut req = kill();
        req.expires_at_ms = NOW + 900_000;
        f.refused(&sign(req, &[&f.alice, &f.bob]), "lifetime over policy");
        // A block's own TTL is bounded too, even in a short envelope.
        let req = request(Action::Block {
            targets: vec!["203.0.113.7".into()],
            ttl_secs: 7200,
        });
        f.refused(&sign(req, &[&f.alice]), "lifetime over policy");
        let req = request(Action::Block {
            targets: vec!["203.0.113.7".into()],
            ttl_secs: 3600,
        });
        f.check(&sign(req, &[&f.alice])).unwrap();
        // expires before issued is not a lifetime at all.
        let mut req = kill();
        req.expires_at_ms = req.issued_at_ms;
        f.refused(&sign(req, &[&f.alice]), "malformed");
    }

    #[test]
    fn a_replay_is_refused_also_after_a_restart() {
        let mut f = fixture();
        let signed = sign(kill(), &[&f.alice]);
        f.check(&signed).unwrap();
        f.refused(&signed, "replay");
        // Same nonce under a new action id: still a replay.
        let mut again = kill();
        again.nonce = signed.request.nonce;
        f.refused(&sign(again, &[&f.alice]), "replay");

        // The agent restarts: the cache is read back from disk.
        let dir = f._tmp.path().to_path_buf();
        f.replay = ReplayCache::open(&dir, NOW + 1000).unwrap();
        let refusal = verify(&signed, AGENT, NOW + 1000, &f.policy, &mut f.replay).unwrap_err();
        assert_eq!(refusal.check(), "replay", "{refusal}");
    }

    #[test]
    fn a_refused_action_is_not_remembered() {
        let mut f = fixture();
        f.policy.required_signers.insert("kill".into(), 2);
        let req = kill();
        f.refused(&sign(req.clone(), &[&f.alice]), "too few signers");
        // The second signature arrives later: the same envelope now runs.
        f.check(&sign(req, &[&f.alice, &f.bob])).unwrap();
    }

    #[test]
    fn too_few_distinct_signers_are_refused_and_one_key_twice_counts_once() {
        let mut f = fixture();
        f.policy.required_signers.insert("kill".into(), 2);
        let refusal = f.refused(&sign(kill(), &[&f.alice, &f.alice]), "too few signers");
        assert!(refusal.to_string().contains("needs 2"), "{refusal}");
        f.refused(&sign(kill(), &[&f.bob]), "too few signers");
        let verified = f
            .check(&sign(kill(), &[&f.alice, &f.bob, &f.alice]))
            .unwrap();
        assert_eq!(verified.signers.len(), 2);
        // Other actions still need one.
        let req = request(Action::Block {
            targets: vec!["203.0.113.7".into()],
            ttl_secs: 60,
        });
        f.check(&sign(req, &[&f.bob])).unwrap();
    }

    #[test]
    fn structural_junk_is_refused_before_any_signature_check() {
        let mut f = fixture();
        let mut signed = sign(kill(), &[&f.alice]);
        signed.signatures.clear();
        f.refused(&signed, "malformed");
        let signed = sign(kill(), &[&f.alice; MAX_SIGNATURES + 1]);
        f.refused(&signed, "malformed");
    }
}
