//! The signed containment-action envelope. What is signed is [`signing_bytes`]: the domain tag
//! [`ACTION_DOMAIN`] followed by the canonical (bincode) encoding of the whole [`ActionRequest`].
//! The encoding is fixed by a golden test below: changing it breaks every signature in flight.
//!
//! Verification (trusted keys, windows, replay, M-of-N) lives on the agent, not here.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{codec, ProtocolError};

/// Domain separation tag: a signature over an action can never be replayed as anything else.
pub const ACTION_DOMAIN: &[u8] = b"cordon/action/v1\0";

/// The part of an action that signers sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActionRequest {
    /// Unique per action (UUID); also the replay-cache key together with `nonce`.
    pub action_id: uuid::Uuid,
    /// The only agent allowed to execute it.
    pub agent_id: String,
    /// Validity window, milliseconds since the Unix epoch.
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
    /// 16 random bytes: lowercase hex in JSON, the bytes themselves in the signed encoding.
    #[serde(with = "nonce")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = String, pattern = "^[0-9a-f]{32}$", example = "0f1e2d3c4b5a69788796a5b4c3d2e1f0")
    )]
    pub nonce: [u8; 16],
    pub action: Action,
}

/// The nonce as hex text where the format is for people (JSON), and as the 16 bytes where it is
/// not (bincode, which [`signing_bytes`] uses: its encoding is unchanged). A JSON array of 16
/// numbers, as older controllers stored it, is read too.
mod nonce {
    use std::fmt;

    use serde::{
        de::{self, SeqAccess, Visitor},
        Deserialize, Deserializer, Serialize, Serializer,
    };

    pub fn serialize<S: Serializer>(nonce: &[u8; 16], serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&hex::encode(nonce))
        } else {
            nonce.serialize(serializer)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 16], D::Error> {
        if !deserializer.is_human_readable() {
            return <[u8; 16]>::deserialize(deserializer);
        }
        struct Either;
        impl<'de> Visitor<'de> for Either {
            type Value = [u8; 16];

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("16 bytes as 32 lowercase hex digits")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<[u8; 16], E> {
                let mut out = [0u8; 16];
                hex::decode_to_slice(text, &mut out)
                    .map_err(|e| E::custom(format!("nonce {text:?}: {e}")))?;
                Ok(out)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; 16], A::Error> {
                let mut out = [0u8; 16];
                for (i, byte) in out.iter_mut().enumerate() {
                    *byte = seq
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(i, &self))?;
                }
                if seq.next_element::<u8>()?.is_some() {
                    return Err(de::Error::invalid_length(17, &self));
                }
                Ok(out)
            }
        }
        deserializer.deserialize_any(Either)
    }
}

/// A containment action and its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Action {
    /// Kill a process, bound to its start time so a recycled pid is never hit.
    Kill {
        pid: u32,
        start_time_ms: i64,
        tree: bool,
    },
    /// Move a file into the agent's vault.
    Quarantine { path: String },
    /// Put a quarantined file back where it came from.
    Restore { quarantine_id: String },
    /// Drop traffic to and from addresses or CIDRs, expiring in the kernel after `ttl_secs`.
    Block { targets: Vec<String>, ttl_secs: u64 },
    /// Remove blocks.
    Unblock { targets: Vec<String> },
    /// Drop everything but loopback, the controller and the policy allowlist, for `ttl_secs`.
    Isolate { ttl_secs: u64 },
    /// End an isolation early.
    Release,
    /// Read a file's contents (`fetch`). Not run as an action: it authorises one fetch task
    /// of exactly this path on a host whose policy requires signed reads.
    Fetch { path: String },
    /// Ask a process to end (SIGTERM), bound to its start time as `Kill` is; if it is still
    /// running `grace_secs` later (1 to [`MAX_GRACE_SECS`]), SIGKILL. Trusted as `kill`.
    Terminate {
        pid: u32,
        start_time_ms: i64,
        grace_secs: u64,
    },
}

/// Action names as agent policy lists them (`--actions kill,quarantine,…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ActionKind {
    Kill,
    Quarantine,
    Restore,
    Block,
    Unblock,
    Isolate,
    Release,
    Fetch,
}

impl ActionKind {
    pub const ALL: [ActionKind; 8] = [
        ActionKind::Kill,
        ActionKind::Quarantine,
        ActionKind::Restore,
        ActionKind::Block,
        ActionKind::Unblock,
        ActionKind::Isolate,
        ActionKind::Release,
        ActionKind::Fetch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Kill => "kill",
            ActionKind::Quarantine => "quarantine",
            ActionKind::Restore => "restore",
            ActionKind::Block => "block",
            ActionKind::Unblock => "unblock",
            ActionKind::Isolate => "isolate",
            ActionKind::Release => "release",
            ActionKind::Fetch => "fetch",
        }
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ActionKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        ActionKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = ActionKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown action {s:?}; expected one of {}", names.join(", "))
            })
    }
}

impl Action {
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Kill { .. } => ActionKind::Kill,
            Action::Quarantine { .. } => ActionKind::Quarantine,
            Action::Restore { .. } => ActionKind::Restore,
            Action::Block { .. } => ActionKind::Block,
            Action::Unblock { .. } => ActionKind::Unblock,
            Action::Isolate { .. } => ActionKind::Isolate,
            Action::Release => ActionKind::Release,
            Action::Fetch { .. } => ActionKind::Fetch,
            Action::Terminate { .. } => ActionKind::Kill,
        }
    }
}

/// How far ahead of the checker's clock an action's `issued_at_ms` may be: clocks differ, and
/// an order signed on a responder's laptop a few seconds fast must still run.
pub const CLOCK_SKEW_MS: i64 = 60_000;

/// Most signatures one action may carry (bounds the work a refusal costs).
pub const MAX_SIGNATURES: usize = 16;

/// Why an action's validity window rules it out at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowError {
    /// `expires_at_ms` is not after `issued_at_ms`.
    Inverted,
    /// Issued more than [`CLOCK_SKEW_MS`] ahead of the checker's clock.
    NotYetValid { ahead_ms: i64 },
    /// At or after `expires_at_ms`.
    Expired { ago_ms: i64 },
}

impl ActionRequest {
    /// `expires_at − issued_at`, if positive.
    pub fn lifetime_ms(&self) -> Option<i64> {
        self.expires_at_ms
            .checked_sub(self.issued_at_ms)
            .filter(|ms| *ms > 0)
    }

    /// The validity window, as agent and controller both apply it:
    /// `issued_at − CLOCK_SKEW_MS ≤ now < expires_at`, with `expires_at` after `issued_at`.
    pub fn check_window(&self, now_ms: i64) -> Result<(), WindowError> {
        self.lifetime_ms().ok_or(WindowError::Inverted)?;
        let ahead_ms = self.issued_at_ms.saturating_sub(now_ms);
        if ahead_ms > CLOCK_SKEW_MS {
            return Err(WindowError::NotYetValid { ahead_ms });
        }
        if now_ms >= self.expires_at_ms {
            return Err(WindowError::Expired {
                ago_ms: now_ms.saturating_sub(self.expires_at_ms),
            });
        }
        Ok(())
    }
}

/// Whether an action may carry `count` signatures: at least one, at most [`MAX_SIGNATURES`].
pub fn check_signature_count(count: usize) -> Result<(), String> {
    match count {
        0 => Err("the action carries no signature".into()),
        n if n > MAX_SIGNATURES => {
            Err(format!("{n} signatures, at most {MAX_SIGNATURES} accepted"))
        }
        _ => Ok(()),
    }
}

/// Longest grace a `Terminate` gives a process between SIGTERM and SIGKILL.
pub const MAX_GRACE_SECS: u64 = 300;

/// Whether `grace_secs` is a grace a `Terminate` may give: the CLI checks before signing, the
/// agent before acting.
pub fn check_grace(grace_secs: u64) -> Result<(), String> {
    if (1..=MAX_GRACE_SECS).contains(&grace_secs) {
        Ok(())
    } else {
        Err(format!(
            "a grace of {grace_secs} s between SIGTERM and SIGKILL: it must be 1 s to {MAX_GRACE_SECS} s"
        ))
    }
}

/// A trusted signer as the agent reports it (public key id only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignerSummary {
    pub name: String,
    /// [`key_id`] of the signer's public key.
    pub key_id: String,
    pub actions: Vec<ActionKind>,
    pub max_ttl_secs: u64,
}

/// An agent's containment policy, as it reports it in its inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicySummary {
    pub signers: Vec<SignerSummary>,
    /// Distinct signers each action needs; actions not listed need one.
    pub required_signers: Vec<(ActionKind, u32)>,
    /// Whether reading a file's contents needs a [`Action::Fetch`] signature.
    pub signed_reads: bool,
}

impl PolicySummary {
    /// Distinct signers `kind` needs on this agent.
    pub fn required(&self, kind: ActionKind) -> u32 {
        self.required_signers
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(1, |(_, n)| (*n).max(1))
    }
}

/// One signer's signature over [`signing_bytes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActionSignature {
    /// [`key_id`] of the signer's public key.
    pub key_id: String,
    /// Ed25519 signature, 64 bytes.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// An action with its signatures, as submitted to the controller and delivered to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignedAction {
    pub request: ActionRequest,
    pub signatures: Vec<ActionSignature>,
}

/// The exact bytes every signer signs for `request`.
pub fn signing_bytes(request: &ActionRequest) -> Result<Vec<u8>, ProtocolError> {
    let mut out = ACTION_DOMAIN.to_vec();
    out.extend(codec::encode(request)?);
    Ok(out)
}

/// A key's id: the first 16 hex digits of the SHA-256 of its 32-byte Ed25519 public key.
pub fn key_id(public_key: &[u8; 32]) -> String {
    let digest = Sha256::digest(public_key);
    hex::encode(&digest[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ActionRequest {
        ActionRequest {
            action_id: uuid::Uuid::from_bytes([7; 16]),
            agent_id: "agent-1".into(),
            issued_at_ms: 1_700_000_000_000,
            expires_at_ms: 1_700_000_300_000,
            nonce: [9; 16],
            action: Action::Kill {
                pid: 4242,
                start_time_ms: 1_699_999_000_000,
                tree: false,
            },
        }
    }

    /// The canonical encoding is part of the protocol: if this test fails, every signature made
    /// by an older CLI stops verifying. Bump the domain tag instead of editing the vector.
    #[test]
    fn the_window_allows_the_skew_and_ends_at_expiry() {
        let r = sample();
        let issued = r.issued_at_ms;
        assert_eq!(r.check_window(issued), Ok(()));
        assert_eq!(r.check_window(issued - CLOCK_SKEW_MS), Ok(()));
        assert_eq!(
            r.check_window(issued - CLOCK_SKEW_MS - 1),
            Err(WindowError::NotYetValid {
                ahead_ms: CLOCK_SKEW_MS + 1
            })
        );
        assert_eq!(r.check_window(r.expires_at_ms - 1), Ok(()));
        assert_eq!(
            r.check_window(r.expires_at_ms),
            Err(WindowError::Expired { ago_ms: 0 })
        );
        let mut inverted = sample();
        inverted.expires_at_ms = inverted.issued_at_ms;
        assert_eq!(inverted.lifetime_ms(), None);
        assert_eq!(inverted.check_window(issued), Err(WindowError::Inverted));
    }

    #[test]
    fn one_to_sixteen_signatures() {
        assert!(check_signature_count(0).is_err());
        assert!(check_signature_count(1).is_ok());
        assert!(check_signature_count(MAX_SIGNATURES).is_ok());
        let err = check_signature_count(MAX_SIGNATURES + 1).unwrap_err();
        assert!(err.contains("at most 16"), "{err}");
    }

    #[test]
    fn signing_bytes_are_fixed() {
        let bytes = signing_bytes(&sample()).unwrap();
        assert_eq!(
            hex::encode(&bytes),
            "636f72646f6e2f616374696f6e2f763100\
             1007070707070707070707070707070707\
             076167656e742d31\
             fd00d0ca9f17030000\
             fdc0f7d39f17030000\
             09090909090909090909090909090909\
             00\
             fb9210\
             fd804bac9f17030000\
             00"
        );
    }

    #[test]
    fn the_nonce_is_hex_in_json_and_bytes_when_signed() {
        let json = serde_json::to_value(sample()).unwrap();
        assert_eq!(json["nonce"], "09090909090909090909090909090909");
        let back: ActionRequest = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, sample());
        // As older controllers stored it: an array of numbers.
        let mut old = json;
        old["nonce"] = serde_json::json!([9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9]);
        assert_eq!(
            serde_json::from_value::<ActionRequest>(old).unwrap(),
            sample()
        );
        for bad in [
            serde_json::json!("0909"),
            serde_json::json!("zz090909090909090909090909090909"),
            serde_json::json!([9, 9]),
        ] {
            let mut request = serde_json::to_value(sample()).unwrap();
            request["nonce"] = bad.clone();
            assert!(
                serde_json::from_value::<ActionRequest>(request).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn any_change_changes_the_signing_bytes() {
        let base = signing_bytes(&sample()).unwrap();
        let mut other = sample();
        other.action = Action::Kill {
            pid: 4243,
            start_time_ms: 1_699_999_000_000,
            tree: false,
        };
        assert_ne!(base, signing_bytes(&other).unwrap());
        let mut other = sample();
        other.agent_id = "agent-2".into();
        assert_ne!(base, signing_bytes(&other).unwrap());
    }

    #[test]
    fn action_names_parse_and_print() {
        for kind in ActionKind::ALL {
            assert_eq!(kind.as_str().parse::<ActionKind>().unwrap(), kind);
        }
        assert!("format-disk"
            .parse::<ActionKind>()
            .unwrap_err()
            .contains("kill"));
    }

    #[test]
    fn key_id_is_short_and_stable() {
        assert_eq!(key_id(&[0; 32]).len(), 16);
        assert_ne!(key_id(&[0; 32]), key_id(&[1; 32]));
    }
}
