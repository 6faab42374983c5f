//! Evidence manifests: what an agent says it collected (a fetched file, a snapshot bundle), with
//! the SHA-256 of the bytes, signed by the agent's own Ed25519 key.
//!
//! The manifest travels as JSON text and is signed exactly as sent (behind a domain tag), so a
//! verifier never has to re-encode it: it checks the signature over the stored text, then parses
//! the text and compares the hash inside with the hash of the stored bytes.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Domain tag for manifest signatures.
pub const MANIFEST_DOMAIN: &[u8] = b"cordon/evidence-manifest/v1\0";

/// What the bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceKind {
    /// A file's bytes, exactly as read from the host.
    File,
    /// A snapshot bundle: a JSON document with one member per section.
    Snapshot,
}

/// One part of a snapshot bundle and the hash of its JSON text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSection {
    pub name: String,
    pub len: u64,
    pub sha256: String,
}

/// The agent's statement about one piece of evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceManifest {
    /// Manifest format; 1 today.
    pub version: u32,
    pub kind: EvidenceKind,
    pub agent_id: String,
    pub hostname: String,
    pub task_id: String,
    pub collected_at_ms: i64,
    /// Length and lowercase hex SHA-256 of the whole byte stream.
    pub total_len: u64,
    pub sha256: String,
    /// For a file: where it was read from, and its metadata at the time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<crate::collect::FileStat>,
    /// For a snapshot: each section of the bundle with its own hash.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sections: Vec<ManifestSection>,
    /// Collectors that failed, and why (a snapshot keeps what the others gathered).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// A manifest as signed: its JSON text, the signing agent's public key, and the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    pub manifest: String,
    #[serde(with = "serde_bytes")]
    pub agent_public_key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// Why a signed manifest does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Malformed(String),
    #[error("agent public key is not a valid Ed25519 key")]
    BadKey,
    #[error("signature is not 64 bytes")]
    BadSignatureLength,
    #[error("manifest was signed by a different key than the agent's pinned key")]
    WrongKey,
    #[error("signature does not verify")]
    BadSignature,
}

fn signing_bytes(manifest: &str) -> Vec<u8> {
    let mut out = MANIFEST_DOMAIN.to_vec();
    out.extend_from_slice(manifest.as_bytes());
    out
}

impl SignedManifest {
    /// Encodes and signs `manifest` with the agent's key.
    pub fn sign(manifest: &EvidenceManifest, key: &SigningKey) -> Result<Self, ManifestError> {
        let text =
            serde_json::to_string(manifest).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        let signature = key.sign(&signing_bytes(&text));
        Ok(Self {
            manifest: text,
            agent_public_key: key.verifying_key().to_bytes().to_vec(),
            signature: signature.to_bytes().to_vec(),
        })
    }

    /// Checks the signature (strictly) and, when given, that the signer is the `pinned` key the
    /// controller recorded for this agent; returns the parsed manifest.
    pub fn verify(&self, pinned: Option<&[u8]>) -> Result<EvidenceManifest, ManifestError> {
        if let Some(pinned) = pinned {
            if pinned != self.agent_public_key.as_slice() {
                return Err(ManifestError::WrongKey);
            }
        }
        let key_bytes: [u8; 32] = self
            .agent_public_key
            .as_slice()
            .try_into()
            .map_err(|_| ManifestError::BadKey)?;
        let key = VerifyingKey::from_bytes(&key_bytes).map_err(|_| ManifestError::BadKey)?;
        let signature = Signature::from_slice(&self.signature)
            .map_err(|_| ManifestError::BadSignatureLength)?;
        key.verify_strict(&signing_bytes(&self.manifest), &signature)
            .map_err(|_| ManifestError::BadSignature)?;
        serde_json::from_str(&self.manifest).map_err(|e| ManifestError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> EvidenceManifest {
        EvidenceManifest {
            version: 1,
            kind: EvidenceKind::File,
            agent_id: "a1".into(),
            hostname: "h".into(),
            task_id: "t1".into(),
            collected_at_ms: 1,
            total_len: 3,
            sha256: "ab".into(),
            source_path: Some("/etc/hosts".into()),
            file: None,
            sections: vec![],
            problems: vec![],
        }
    }

    #[test]
    fn a_signed_manifest_verifies_and_any_change_breaks_it() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let signed = SignedManifest::sign(&manifest(), &key).unwrap();
        let pinned = key.verifying_key().to_bytes();
        assert_eq!(signed.verify(Some(&pinned)).unwrap(), manifest());

        let mut edited = signed.clone();
        edited.manifest = edited.manifest.replace("/etc/hosts", "/etc/passwd");
        assert_eq!(edited.verify(None), Err(ManifestError::BadSignature));

        let other = SigningKey::from_bytes(&[8; 32]);
        let forged = SignedManifest::sign(&manifest(), &other).unwrap();
        assert_eq!(forged.verify(Some(&pinned)), Err(ManifestError::WrongKey));
        assert!(forged.verify(None).is_ok(), "valid under its own key");

        let mut short = signed;
        short.signature.pop();
        assert_eq!(short.verify(None), Err(ManifestError::BadSignatureLength));
    }
}
