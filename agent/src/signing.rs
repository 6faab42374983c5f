//! The agent's own Ed25519 key. It signs what the agent vouches for — evidence manifests now,
//! containment receipts later — and is separate from the TLS key, which only proves who is on the
//! channel. Kept as `signing.key` (hex seed, 0600) in the data directory; made at enrolment, or
//! on the first run of an agent enrolled before the key existed.

use ed25519_dalek::SigningKey;
use rand::RngCore;

use crate::{identity::AgentDir, AgentError};

/// Loads the agent's signing key, creating it if the data directory has none.
pub fn load_or_create(dir: &AgentDir) -> Result<SigningKey, AgentError> {
    let path = dir.signing_key();
    if path.exists() {
        let text = dir.read(&path)?;
        let bytes = hex::decode(text.trim()).map_err(|e| AgentError::Config {
            path: path.clone(),
            detail: format!("not a hex key: {e}"),
        })?;
        let seed: [u8; 32] = bytes.try_into().map_err(|_| AgentError::Config {
            path: path.clone(),
            detail: "an Ed25519 key is 32 bytes".into(),
        })?;
        return Ok(SigningKey::from_bytes(&seed));
    }
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let key = SigningKey::from_bytes(&seed);
    dir.write(&path, &hex::encode(seed), 0o600)?;
    tracing::info!(public_key = %hex::encode(key.verifying_key().to_bytes()), "created agent signing key");
    Ok(key)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_key_is_made_once_private_and_then_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = AgentDir::new(tmp.path());
        let first = load_or_create(&dir).unwrap();
        let mode = std::fs::metadata(dir.signing_key())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_create(&dir).unwrap();
        assert_eq!(first.to_bytes(), again.to_bytes());
        std::fs::write(dir.signing_key(), "zz").unwrap();
        let err = load_or_create(&dir).unwrap_err().to_string();
        assert!(err.contains("signing.key"), "{err}");
    }
}
