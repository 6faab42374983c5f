//! The agent's containment policy, kept on the host in `DATA_DIR/policy.toml` (0600) and managed
//! with `cordon-agent trust …`: which keys may sign which actions, for how long, how many
//! distinct signers each action needs, and the safety rails (protected processes and paths, the
//! isolation allowlist) and the paths no collection may read. The controller cannot change it.
//!
//! ```toml
//! protected_processes = ["sshd", "/opt/db/bin/postgres"]   # by executable, not by name
//! protected_users = ["postgres"]
//! protected_paths = ["/etc"]
//! denied_paths = ["/root/.ssh", "/srv/*/secrets"]  # added to the built-in ones (collect::gate)
//! isolation_allowlist = ["10.0.0.53"]
//! signed_reads = true          # fetching a file's bytes needs a signature by a `fetch` key
//!
//! [required_signers]          # distinct signers per action; absent means 1
//! kill = 2
//!
//! [[signers]]
//! name = "alice"
//! public_key = "…64 hex digits…"   # Ed25519; its key id is `cordon_protocol::action::key_id`
//! actions = ["kill", "quarantine", "restore"]
//! max_ttl_secs = 3600               # longest envelope lifetime and block/isolate TTL it may sign
//! ```
//!
//! [`verify`] decides whether a signed envelope may run under this policy.

mod refusal;
mod verify;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use cordon_protocol::action::{key_id, ActionKind, PolicySummary, SignerSummary};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

pub use refusal::Refusal;
pub use verify::{verify, VerifiedAction, CLOCK_SKEW_MS, MAX_SIGNATURES};

use crate::{identity::AgentDir, AgentError};

/// The policy file's name inside the data directory.
pub const FILE_NAME: &str = "policy.toml";

/// `DATA_DIR/policy.toml`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// A key the agent trusts to sign some actions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedSigner {
    /// A label for people ("alice", "automation").
    pub name: String,
    /// Hex of the 32-byte Ed25519 public key.
    pub public_key: String,
    /// Action names (`kill`, `quarantine`, …) this key may sign.
    pub actions: Vec<String>,
    /// Longest lifetime (expires − issued) this key may give an action, in seconds; also the
    /// longest `ttl_secs` it may give a block or an isolation.
    pub max_ttl_secs: u64,
}

impl TrustedSigner {
    /// The public key, if the hex is a valid Ed25519 point.
    pub fn verifying_key(&self) -> Result<VerifyingKey, String> {
        parse_hex_key(&self.public_key)
    }

    /// The key id the signatures name (see [`key_id`]); `None` for an unparsable key, which
    /// [`Policy::validate`] rejects before it can matter.
    pub fn key_id(&self) -> Option<String> {
        self.verifying_key().ok().map(|k| key_id(&k.to_bytes()))
    }

    /// Whether this key may sign `kind`.
    pub fn allows(&self, kind: ActionKind) -> bool {
        self.actions.iter().any(|a| a == kind.as_str())
    }

    /// [`Self::max_ttl_secs`] in milliseconds.
    pub fn max_ttl_ms(&self) -> i64 {
        i64::try_from(self.max_ttl_secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000)
    }
}

/// The whole policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    pub signers: Vec<TrustedSigner>,
    /// Distinct signers an action needs, by action name; absent means 1.
    pub required_signers: BTreeMap<String, u32>,
    /// Executables whose processes are never killed, besides pid 1 and the agent: an absolute
    /// path, or a bare name for a root-owned program in the system directories (see
    /// `act::kill::protect`). Matched by file identity, never by process name.
    pub protected_processes: Vec<String>,
    /// Users (names or uids) whose processes are never killed.
    pub protected_users: Vec<String>,
    /// Path prefixes never quarantined.
    pub protected_paths: Vec<String>,
    /// Paths (with `*` globs within a component) no collection task may read (stat, hash,
    /// list, fetch, watch, hunt), in addition to [`crate::collect::gate::BUILTIN_DENIED`], the
    /// agent's data directory and marked Cordon directories, which are denied whatever this says.
    pub denied_paths: Option<Vec<String>>,
    /// Addresses or CIDRs that stay reachable during isolation, besides loopback and the
    /// controller.
    pub isolation_allowlist: Vec<String>,
    /// Reading a file's contents (`fetch`) needs a responder's signature, like containment: a
    /// key trusted for `fetch` signs the path. For hosts where even the controller must not
    /// read files on the channel's word alone.
    pub signed_reads: bool,
}

impl Policy {
    /// Reads `DATA_DIR/policy.toml`. A missing file is the empty policy (no key trusted, so no
    /// action runs); an unreadable or invalid one is an error naming the file and the key.
    pub fn load(data_dir: &Path) -> Result<Policy, AgentError> {
        let path = path(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Policy::default()),
            Err(e) => return Err(AgentError::io(&path, e)),
        };
        let policy: Policy = toml::from_str(&text).map_err(|e| AgentError::Config {
            path: path.clone(),
            detail: e.to_string().trim_end().to_string(),
        })?;
        policy
            .validate()
            .map_err(|detail| AgentError::Config { path, detail })?;
        Ok(policy)
    }

    /// Validates and writes `DATA_DIR/policy.toml` atomically, mode 0600, creating the data
    /// directory (0700) if needed.
    pub fn save(&self, data_dir: &Path) -> Result<(), AgentError> {
        let path = path(data_dir);
        self.validate().map_err(|detail| AgentError::Config {
            path: path.clone(),
            detail,
        })?;
        let text = toml::to_string_pretty(self).map_err(|e| AgentError::Config {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        let dir = AgentDir::new(data_dir);
        dir.create()?;
        dir.write(&path, &text, 0o600)?;
        // A removed key must stay removed after a crash: make the rename itself durable.
        std::fs::File::open(data_dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| AgentError::io(data_dir, e))
    }

    /// Checks what serde cannot: every key parses and is trusted once, every action name is
    /// known, lifetimes and signer counts are positive. The message names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, signer) in self.signers.iter().enumerate() {
            let at = format!("signers[{i}]");
            if signer.name.trim().is_empty() {
                return Err(format!("{at}.name: must not be empty"));
            }
            let key = signer
                .verifying_key()
                .map_err(|e| format!("{at}.public_key ({}): {e}", signer.name))?;
            let id = key_id(&key.to_bytes());
            if let Some(first) = seen.insert(id.clone(), i) {
                return Err(format!(
                    "{at}.public_key ({}): key {id} is already trusted as signers[{first}] ({})",
                    signer.name, self.signers[first].name
                ));
            }
            if signer.actions.is_empty() {
                return Err(format!("{at}.actions ({}): lists no action", signer.name));
            }
            for action in &signer.actions {
                action
                    .parse::<ActionKind>()
                    .map_err(|e| format!("{at}.actions ({}): {e}", signer.name))?;
            }
            if signer.max_ttl_secs == 0 {
                return Err(format!(
                    "{at}.max_ttl_secs ({}): must be at least 1",
                    signer.name
                ));
            }
        }
        for (action, count) in &self.required_signers {
            action
                .parse::<ActionKind>()
                .map_err(|e| format!("required_signers.{action}: {e}"))?;
            if *count == 0 {
                return Err(format!("required_signers.{action}: must be at least 1"));
            }
        }
        for (i, path) in self.denied_paths.iter().flatten().enumerate() {
            crate::collect::gate::check_rule(path)
                .map_err(|e| format!("denied_paths[{i}]: {}", e.message))?;
        }
        Ok(())
    }

    /// The trusted signer whose key has id `key_id`.
    pub fn signer(&self, key_id: &str) -> Option<&TrustedSigner> {
        self.signers
            .iter()
            .find(|s| s.key_id().as_deref() == Some(key_id))
    }

    /// Distinct signers `kind` needs (at least 1).
    pub fn required(&self, kind: ActionKind) -> u32 {
        self.required_signers
            .get(kind.as_str())
            .copied()
            .unwrap_or(1)
            .max(1)
    }

    /// What the agent tells the controller: key ids, permissions and counts, no keys.
    pub fn summary(&self) -> PolicySummary {
        PolicySummary {
            signers: self
                .signers
                .iter()
                .map(|s| SignerSummary {
                    name: s.name.clone(),
                    key_id: s.key_id().unwrap_or_default(),
                    actions: s.actions.iter().filter_map(|a| a.parse().ok()).collect(),
                    max_ttl_secs: s.max_ttl_secs,
                })
                .collect(),
            required_signers: self
                .required_signers
                .iter()
                .filter_map(|(a, n)| Some((a.parse().ok()?, *n)))
                .collect(),
            signed_reads: self.signed_reads,
        }
    }
}

/// Parses 64 hex digits as an Ed25519 public key, refusing weak (small-order) keys, which
/// `verify_strict` would refuse anyway.
pub fn parse_hex_key(hex_key: &str) -> Result<VerifyingKey, String> {
    let bytes = hex::decode(hex_key.trim()).map_err(|_| "not 64 hex digits".to_string())?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "not 64 hex digits (an Ed25519 public key is 32 bytes)".to_string())?;
    checked_key(&bytes)
}

/// Parses a public key file: one line of 64 hex digits (blank lines and `#` comments aside), or
/// an SPKI PEM block (`-----BEGIN PUBLIC KEY-----`), as `cordon keys generate` prints.
pub fn parse_public_key_file(text: &str) -> Result<VerifyingKey, String> {
    use ed25519_dalek::pkcs8::DecodePublicKey;
    if text.contains("PRIVATE KEY-----") {
        return Err("this is a private key; give the public key (never copy a signer's private key to an agent)".into());
    }
    if text.contains("-----BEGIN") {
        let key = VerifyingKey::from_public_key_pem(text.trim())
            .map_err(|e| format!("not an Ed25519 PUBLIC KEY PEM block: {e}"))?;
        return checked_key(key.as_bytes());
    }
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    match lines.as_slice() {
        [line] => parse_hex_key(line),
        [] => Err("empty: expected 64 hex digits or a PUBLIC KEY PEM block".into()),
        _ => Err("expected one line of 64 hex digits or a PUBLIC KEY PEM block".into()),
    }
}

fn checked_key(bytes: &[u8; 32]) -> Result<VerifyingKey, String> {
    let key = VerifyingKey::from_bytes(bytes)
        .map_err(|_| "not a valid Ed25519 public key".to_string())?;
    if key.is_weak() {
        return Err("a weak (small-order) Ed25519 key cannot be trusted".into());
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use ed25519_dalek::{pkcs8::EncodePublicKey, SigningKey};

    use super::*;

    pub(crate) fn signer(name: &str, key: &SigningKey, actions: &[&str]) -> TrustedSigner {
        TrustedSigner {
            name: name.into(),
            public_key: hex::encode(key.verifying_key().to_bytes()),
            actions: actions.iter().map(|a| a.to_string()).collect(),
            max_ttl_secs: 3600,
        }
    }

    #[test]
    fn policy_round_trips_private_and_missing_means_empty() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(Policy::load(tmp.path()).unwrap(), Policy::default());
        let key = SigningKey::from_bytes(&[1; 32]);
        let mut policy = Policy::default();
        policy
            .signers
            .push(signer("alice", &key, &["kill", "block"]));
        policy.required_signers.insert("kill".into(), 2);
        policy.protected_paths.push("/etc".into());
        policy.save(tmp.path()).unwrap();
        let mode = std::fs::metadata(path(tmp.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(Policy::load(tmp.path()).unwrap(), policy);
        assert_eq!(policy.required(ActionKind::Kill), 2);
        assert_eq!(policy.required(ActionKind::Block), 1);

        let summary = policy.summary();
        assert_eq!(
            summary.signers[0].key_id,
            key_id(&key.verifying_key().to_bytes())
        );
        assert_eq!(
            summary.signers[0].actions,
            vec![ActionKind::Kill, ActionKind::Block]
        );
        assert_eq!(summary.required(ActionKind::Kill), 2);
    }

    #[test]
    fn policy_file_errors_name_the_file_and_the_key() {
        let tmp = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[1; 32]);
        let cases: [(&str, String); 5] = [
            ("bogus = 1", "bogus".into()),
            (
                "[[signers]]\nname = \"a\"\npublic_key = \"zz\"\nactions = [\"kill\"]\nmax_ttl_secs = 60",
                "signers[0].public_key".into(),
            ),
            (
                &format!(
                    "[[signers]]\nname = \"a\"\npublic_key = \"{}\"\nactions = [\"nuke\"]\nmax_ttl_secs = 60",
                    hex::encode(key.verifying_key().to_bytes())
                ),
                "signers[0].actions".into(),
            ),
            ("[required_signers]\nkill = 0", "required_signers.kill".into()),
            (
                &format!(
                    "[[signers]]\nname = \"a\"\npublic_key = \"{k}\"\nactions = [\"kill\"]\nmax_ttl_secs = 60\n\
                     [[signers]]\nname = \"b\"\npublic_key = \"{k}\"\nactions = [\"kill\"]\nmax_ttl_secs = 60",
                    k = hex::encode(key.verifying_key().to_bytes())
                ),
                "already trusted".into(),
            ),
        ];
        for (text, expected) in cases {
            std::fs::write(path(tmp.path()), text).unwrap();
            let err = Policy::load(tmp.path()).unwrap_err().to_string();
            assert!(err.contains("policy.toml"), "{err}");
            assert!(err.contains(&expected), "{expected:?} not in {err}");
        }
    }

    #[test]
    fn policy_public_key_files_hex_or_pem() {
        let key = SigningKey::from_bytes(&[3; 32]).verifying_key();
        let hex_text = format!("# alice\n{}\n", hex::encode(key.to_bytes()));
        assert_eq!(parse_public_key_file(&hex_text).unwrap(), key);
        let pem = key
            .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap();
        assert_eq!(parse_public_key_file(&pem).unwrap(), key);
        assert!(parse_public_key_file("").unwrap_err().contains("empty"));
        assert!(parse_public_key_file("abcd")
            .unwrap_err()
            .contains("64 hex"));
        assert!(parse_public_key_file(
            "-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----"
        )
        .unwrap_err()
        .contains("private key"));
        assert!(parse_public_key_file(&"00".repeat(32))
            .unwrap_err()
            .contains("weak"));
    }
}
