//! The Cordon agent: dials out to its controller over mutual TLS, reports its inventory, and runs
//! the tasks it is given. Containment actions run only when trusted keys signed them.
#![forbid(unsafe_code)]

pub mod act;
pub mod backoff;
pub mod collect;
pub mod containment;
pub mod enroll;
pub mod identity;
pub mod inventory;
pub mod journal;
pub mod policy;
pub mod redelivery;
pub mod replay;
pub mod session;
pub mod signing;
pub mod tasks;
#[cfg(test)]
pub(crate) mod testing;
pub mod tls;
pub mod trust;

use std::{path::PathBuf, time::Duration};

use thiserror::Error;
use tokio_util::sync::CancellationToken;

/// Everything that can stop the agent or one of its commands.
#[derive(Debug, Error)]
pub enum AgentError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Config { path: PathBuf, detail: String },
    #[error("{0} holds no enrolled agent: run `cordon-agent enroll --data-dir {0} …` first")]
    NotEnrolled(String),
    #[error(
        "{dir} already holds enrolled agent {agent_id}; use another --data-dir to enrol again"
    )]
    AlreadyEnrolled { dir: String, agent_id: String },
    #[error("{0}")]
    InvalidInput(String),
    #[error("cannot reach the controller: {0}")]
    Connect(String),
    #[error("the controller refused: {0}")]
    Refused(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("crypto: {0}")]
    Crypto(String),
}

impl AgentError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        AgentError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub data_dir: PathBuf,
    /// Dial this `HOST:PORT` instead of the address recorded at enrolment.
    pub controller_override: Option<String>,
    /// Most tasks running at once; more are answered `Busy`.
    pub max_concurrent_tasks: usize,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
}

impl AgentConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            controller_override: None,
            max_concurrent_tasks: 8,
            reconnect_initial: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(60),
        }
    }
}

/// Runs the agent until `shutdown` is cancelled.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    let identity = identity::AgentDir::new(&config.data_dir).load()?;
    tracing::info!(agent_id = %identity.file.agent_id, controller = %identity.file.controller, "agent starting");
    session::run_forever(&config, identity, shutdown).await
}

/// Decodes the first certificate of a PEM string.
pub fn pem_cert(pem: &str) -> Result<rustls_pki_types::CertificateDer<'static>, String> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| e.to_string())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}
