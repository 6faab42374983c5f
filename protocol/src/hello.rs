//! The first frame each way on a session. Both hellos start with `protocol_version`, so a peer's
//! version can be read (with [`crate::codec::peek_version`]) even when the rest is unknown to us,
//! and a mismatch is reported naming both versions.
//!
//! A peer accepts any version from [`OLDEST_PROTOCOL_VERSION`] to [`PROTOCOL_VERSION`]; the
//! agent offers its newest, and the controller answers (and from then on speaks) the agent's,
//! so after the hello both sides know the session's version.

use serde::{Deserialize, Serialize};

use crate::{
    codec, inventory::Inventory, ProtocolError, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION,
};

/// Agent → controller, first frame of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentHello {
    pub protocol_version: u32,
    /// Must equal the identity in the agent's client certificate.
    pub agent_id: String,
    pub inventory: Inventory,
    /// The agent's Ed25519 public key, which signs its evidence manifests and action receipts.
    /// The controller pins it on first sight and refuses a session that presents another.
    #[serde(with = "serde_bytes")]
    pub signing_public_key: Vec<u8>,
}

/// Controller → agent, the reply to [`AgentHello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerHello {
    pub protocol_version: u32,
    pub controller_version: String,
    pub outcome: HelloOutcome,
}

/// Whether the controller accepted the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloOutcome {
    Accepted {
        /// How often the agent should send a heartbeat.
        heartbeat_interval_ms: u64,
    },
    Refused {
        reason: String,
    },
}

/// Decodes a hello of type `T`, first checking that the peer speaks a version we do (so its
/// `protocol_version` is the version the session runs at).
pub fn decode_hello<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, ProtocolError> {
    check_version(codec::peek_version(payload)?)?;
    codec::decode(payload)
}

/// Whether we speak version `theirs`.
pub fn check_version(theirs: u32) -> Result<(), ProtocolError> {
    if (OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&theirs) {
        Ok(())
    } else {
        Err(ProtocolError::VersionMismatch {
            oldest: OLDEST_PROTOCOL_VERSION,
            newest: PROTOCOL_VERSION,
            theirs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_future_version_is_reported_with_both_numbers() {
        #[derive(Serialize)]
        struct FutureHello {
            protocol_version: u32,
            something_new: Vec<String>,
        }
        let bytes = codec::encode(&FutureHello {
            protocol_version: PROTOCOL_VERSION + 1,
            something_new: vec!["x".into()],
        })
        .unwrap();
        let err = decode_hello::<AgentHello>(&bytes).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::VersionMismatch { newest, theirs, .. } if newest == PROTOCOL_VERSION && theirs == PROTOCOL_VERSION + 1
        ));
        assert!(err.to_string().contains(&format!(
            "we speak {OLDEST_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"
        )));
    }

    #[test]
    fn an_older_supported_version_is_accepted_and_one_before_it_is_not() {
        let mut hello = AgentHello {
            protocol_version: OLDEST_PROTOCOL_VERSION,
            agent_id: "a-1".into(),
            inventory: Inventory::default(),
            signing_public_key: vec![7; 32],
        };
        let bytes = codec::encode(&hello).unwrap();
        assert_eq!(decode_hello::<AgentHello>(&bytes).unwrap(), hello);
        hello.protocol_version = OLDEST_PROTOCOL_VERSION - 1;
        let bytes = codec::encode(&hello).unwrap();
        assert!(matches!(
            decode_hello::<AgentHello>(&bytes),
            Err(ProtocolError::VersionMismatch { theirs, .. }) if theirs == OLDEST_PROTOCOL_VERSION - 1
        ));
    }

    #[test]
    fn hello_round_trips() {
        let hello = AgentHello {
            protocol_version: PROTOCOL_VERSION,
            agent_id: "a-1".into(),
            inventory: Inventory {
                hostname: "web-01".into(),
                ..Inventory::default()
            },
            signing_public_key: vec![7; 32],
        };
        let bytes = codec::encode(&hello).unwrap();
        assert_eq!(decode_hello::<AgentHello>(&bytes).unwrap(), hello);
    }
}
