//! `cordon-controller serve`: loads a deployment, binds the agent and API listeners, and runs
//! until the shutdown token is cancelled.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    api,
    deployment::{DataDir, DeploymentError},
    gateway, sessions,
    state::{build_crl, Controller, CrlError, Shared},
    tls::{ServerIdentity, TlsError},
};

/// How a controller runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub agent_listen: SocketAddr,
    pub api_listen: SocketAddr,
    /// Overrides the data dir's database (e.g. `postgres://…`).
    pub database_url: Option<String>,
    pub heartbeat_interval: Duration,
    /// Most agent connections held at once.
    pub max_agents: usize,
}

impl ServeConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            agent_listen: SocketAddr::from(([0, 0, 0, 0], 7443)),
            api_listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            database_url: None,
            heartbeat_interval: Duration::from_secs(15),
            max_agents: 20_000,
        }
    }
}

/// Failures starting a controller.
#[derive(Debug, Error)]
pub enum ServeError {
    #[error(transparent)]
    Deployment(#[from] DeploymentError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Crl(#[from] CrlError),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("evidence directory {}: {source}", path.display())]
    Evidence {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("playbooks:\n{0}")]
    Playbooks(#[from] crate::playbooks::PlaybookErrors),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A started controller.
pub struct Running {
    pub agent_addr: SocketAddr,
    pub api_addr: SocketAddr,
    pub controller: Shared,
    tasks: tokio::task::JoinSet<()>,
}

impl Running {
    /// Waits until both listeners have stopped (after the shutdown token is cancelled).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
        self.controller.store.close().await;
    }
}

/// Starts a controller; returns once both listeners are bound.
pub async fn start(
    config: ServeConfig,
    shutdown: CancellationToken,
) -> Result<Running, ServeError> {
    let dir = DataDir::new(&config.data_dir);
    let settings = dir.load_settings()?;
    // Deployments made before the marker existed get it at their next start.
    dir.mark_private()?;
    // A bad playbook stops the start, naming file and line, before anything listens.
    let playbooks =
        crate::playbooks::Playbooks::load(&dir.root().join(crate::playbooks::DIR_NAME))?;
    let ca = dir.load_ca()?;
    let identity = ServerIdentity::from_pem(
        ca.cert_pem(),
        &dir.read(&dir.server_cert())?,
        &dir.read(&dir.server_key())?,
    )?;
    let store = dir
        .open_store(&settings, config.database_url.as_deref())
        .await?;
    // Sessions do not survive a restart; agents reconnect by themselves.
    store.mark_all_disconnected().await?;
    let crl = build_crl(&store, &ca).await?;
    let tls = crate::tls::SessionTls::new(identity, crl)?;

    let bind = |what, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { what, addr, source })
    };
    let agent_listener = bind("agents", config.agent_listen).await?;
    let api_listener = bind("API", config.api_listen).await?;
    let agent_addr = agent_listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            what: "agents",
            addr: config.agent_listen,
            source,
        })?;
    let api_addr = api_listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            what: "API",
            addr: config.api_listen,
            source,
        })?;

    let evidence = crate::evidence::EvidenceDir::new(dir.evidence());
    evidence.prepare().map_err(|source| ServeError::Evidence {
        path: dir.evidence(),
        source,
    })?;
    let (presence, presence_rx) = sessions::presence::Presence::channel();
    let controller = Arc::new(Controller {
        presence,
        evidence,
        store,
        ca,
        tls,
        registry: sessions::registry::Registry::new(),
        data_dir: dir,
        heartbeat_interval: config.heartbeat_interval,
        task_events: tokio::sync::broadcast::channel(1024).0,
        audit_refusals: crate::audit::RefusalBudget::default(),
        playbooks,
        events: crate::events::Events::new(),
        watch_change_limit: crate::watches::MAX_CHANGES_PER_WATCH.into(),
        receive_budget: cordon_protocol::frame::ReceiveBudget::new(crate::state::RECEIVE_BUDGET),
    });
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(gateway::serve(
        controller.clone(),
        agent_listener,
        config.max_agents,
        shutdown.clone(),
    ));
    tasks.spawn(crate::tasks::run_sweeper(
        controller.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(crate::webhooks::run_worker(
        controller.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(sessions::presence::run(
        controller.clone(),
        presence_rx,
        shutdown.clone(),
    ));
    tasks.spawn(crate::playbooks::runner::run(
        controller.clone(),
        shutdown.clone(),
    ));
    // Live streams and long-polls end as soon as the controller stops, so the API's
    // graceful shutdown is not held open by them.
    let stopping = shutdown.clone();
    let closing = controller.clone();
    tasks.spawn(async move {
        stopping.cancelled().await;
        closing.events.close();
    });
    tasks.spawn(api::serve(controller.clone(), api_listener, shutdown));
    tracing::info!(%agent_addr, %api_addr, "controller listening");
    Ok(Running {
        agent_addr,
        api_addr,
        controller,
        tasks,
    })
}

/// Starts a controller and runs it until `shutdown`.
pub async fn run(config: ServeConfig, shutdown: CancellationToken) -> Result<(), ServeError> {
    start(config, shutdown).await?.wait().await;
    Ok(())
}
