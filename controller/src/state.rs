//! The state every part of a running controller shares: store, CA, TLS configs, live sessions.

use std::{sync::Arc, time::Duration};

use crate::{
    deployment::DataDir,
    pki::{Ca, PkiError},
    sessions::registry::Registry,
    store::{Store, StoreError},
    tls::{SessionTls, TlsError},
};

/// Failures refreshing the revocation list.
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Shared controller state. Cheap to clone through `Arc`.
pub struct Controller {
    pub store: Store,
    pub ca: Ca,
    pub tls: SessionTls,
    pub registry: Registry,
    /// Batched last-seen and disconnect writes (see [`crate::sessions::presence`]).
    pub presence: crate::sessions::presence::Presence,
    pub data_dir: DataDir,
    /// Where evidence bytes are kept.
    pub evidence: crate::evidence::EvidenceDir,
    pub heartbeat_interval: Duration,
    /// Ids of tasks that just ended, for waiters (`GET /tasks/{id}?wait=…`).
    pub task_events: tokio::sync::broadcast::Sender<String>,
    /// How many refusals (bad tokens, refused enrolments) the audit log still takes now.
    pub audit_refusals: crate::audit::RefusalBudget,
    /// The playbooks loaded from the data dir, and the runner's wake-up call.
    pub playbooks: crate::playbooks::Playbooks,
    /// Live events and the webhook outbox's publisher (see [`crate::events`]).
    pub events: crate::events::Events,
    /// Changes one watch stores before it is stopped: [`crate::watches::MAX_CHANGES_PER_WATCH`]
    /// unless a test lowers it.
    pub watch_change_limit: std::sync::atomic::AtomicI64,
    /// Bytes of half-received agent frames all sessions may hold together
    /// ([`RECEIVE_BUDGET`]): agents that each send half of a large frame cannot grow memory.
    pub receive_budget: cordon_protocol::frame::ReceiveBudget,
}

/// The default of [`Controller::receive_budget`]: 64 full-size frames, far more than 10,000
/// agents streaming chunks keep in flight at once.
pub const RECEIVE_BUDGET: usize = 64 * cordon_protocol::frame::MAX_FRAME_LEN;

pub type Shared = Arc<Controller>;

impl Controller {
    /// After this long without any frame from an agent, its session is considered dead.
    pub fn idle_timeout(&self) -> Duration {
        self.heartbeat_interval * 3
    }

    /// Builds a CRL from the store and installs it for all later handshakes.
    pub async fn refresh_crl(&self) -> Result<(), CrlError> {
        let crl = build_crl(&self.store, &self.ca).await?;
        self.tls.update_crl(crl)?;
        Ok(())
    }

    /// Revokes an agent: store, CRL, and its live session. Returns false for an unknown agent.
    pub async fn revoke_agent(&self, agent_id: &str) -> Result<bool, CrlError> {
        if !self.store.revoke_agent(agent_id, crate::now_ms()).await? {
            return Ok(false);
        }
        self.refresh_crl().await?;
        if self.registry.disconnect(agent_id) {
            tracing::info!(agent_id, "revoked agent disconnected");
        }
        Ok(true)
    }
}

/// The current CRL, numbered from a counter in the store.
pub async fn build_crl(
    store: &Store,
    ca: &Ca,
) -> Result<rustls_pki_types::CertificateRevocationListDer<'static>, CrlError> {
    let revoked = store.revoked_serials().await?;
    let number = store.next_counter("crl_number").await?;
    Ok(ca.crl(&revoked, u64::try_from(number).unwrap_or(0))?)
}
