//! The agent's data directory and identity: what enrolment writes and every session reads.
//!
//! ```text
//! DIR/agent.toml   agent id and controller address
//! DIR/agent.key    the agent's private key (0600; never leaves the host)
//! DIR/agent.pem    its certificate, issued by the controller
//! DIR/ca.pem       the deployment CA, pinned at enrolment
//! ```

use std::{
    fs,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::AgentError;

/// Default data directory of an installed agent.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cordon-agent";

/// `agent.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    /// Chosen by the controller at enrolment; equals the certificate's common name.
    pub agent_id: String,
    /// `HOST:PORT` of the controller's agent listener.
    pub controller: String,
}

/// Paths in an agent data directory.
#[derive(Debug, Clone)]
pub struct AgentDir {
    root: PathBuf,
}

impl AgentDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("agent.toml")
    }
    pub fn key(&self) -> PathBuf {
        self.root.join("agent.key")
    }
    /// The agent's Ed25519 signing key (see [`crate::signing`]).
    pub fn signing_key(&self) -> PathBuf {
        self.root.join("signing.key")
    }

    pub fn cert(&self) -> PathBuf {
        self.root.join("agent.pem")
    }
    pub fn ca(&self) -> PathBuf {
        self.root.join("ca.pem")
    }

    pub fn is_enrolled(&self) -> bool {
        self.config().exists()
    }

    /// Creates the directory (0700) if missing.
    pub fn create(&self) -> Result<(), AgentError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .map_err(|e| AgentError::io(&self.root, e))
    }

    pub fn read(&self, path: &Path) -> Result<String, AgentError> {
        fs::read_to_string(path).map_err(|e| AgentError::io(path, e))
    }

    /// Writes a file atomically with `mode` (temporary file, fsync, rename).
    pub fn write(&self, path: &Path, contents: &str, mode: u32) -> Result<(), AgentError> {
        let tmp = path.with_extension("tmp");
        let _ = fs::remove_file(&tmp);
        let result = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)?;
            f.write_all(contents.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        })();
        result.map_err(|e| AgentError::io(path, e))
    }

    /// Reads `agent.toml`.
    pub fn load_file(&self) -> Result<AgentFile, AgentError> {
        if !self.is_enrolled() {
            return Err(AgentError::NotEnrolled(self.root.display().to_string()));
        }
        let text = self.read(&self.config())?;
        toml::from_str(&text).map_err(|e| AgentError::Config {
            path: self.config(),
            detail: e.to_string(),
        })
    }

    /// Loads everything a session needs.
    pub fn load(&self) -> Result<Identity, AgentError> {
        let file = self.load_file()?;
        let pem_err = |path: PathBuf| {
            move |e: rustls_pki_types::pem::Error| AgentError::Config {
                path,
                detail: e.to_string(),
            }
        };
        let ca = CertificateDer::from_pem_file(self.ca()).map_err(pem_err(self.ca()))?;
        let cert = CertificateDer::from_pem_file(self.cert()).map_err(pem_err(self.cert()))?;
        let key = PrivateKeyDer::from_pem_file(self.key()).map_err(pem_err(self.key()))?;
        let signer = crate::signing::load_or_create(self)?;
        Ok(Identity {
            file,
            ca,
            cert,
            key,
            signer,
        })
    }
}

/// A loaded identity. The key is never printed: see the `Debug` impl.
pub struct Identity {
    pub file: AgentFile,
    pub ca: CertificateDer<'static>,
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
    /// The agent's Ed25519 signing key.
    pub signer: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("agent_id", &self.file.agent_id)
            .field("controller", &self.file.controller)
            .field("key", &"<redacted>")
            .finish()
    }
}
