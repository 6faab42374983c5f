//! Helpers for Cordon's end-to-end tests: a real controller on ephemeral loopback ports with a
//! throwaway deployment, real agents enrolled over real mTLS, the real binaries, and an API
//! client. Every handle shuts down cleanly when stopped or dropped.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use cordon_agent::{enroll::EnrollOptions, AgentConfig};
use cordon_api::{
    agents::{AgentStatus, AgentView},
    tokens::EnrollmentTokenCreated,
};
use cordon_controller::{
    deployment::{self, DataDir, InitOptions},
    server::{self, Running, ServeConfig},
};
use tokio_util::sync::CancellationToken;

pub mod api;
pub mod bench;
pub mod contract;
pub mod follower;
pub mod keys;
pub mod output;
pub mod postgres;
pub mod procstat;
pub mod session_host;
pub mod simaction;
pub mod simhost;
pub mod victim;

pub use api::{Api, ApiFailure};
pub use follower::Follower;

pub use keys::{generate_key, ResponderKey};
pub use output::{fails, json_of, ok, text};
pub use postgres::{postgres_url, PgSchema};
pub use session_host::SessionHost;
pub use victim::Victim;

/// Heartbeat used by test controllers: short, so liveness changes show quickly.
pub const TEST_HEARTBEAT: Duration = Duration::from_millis(500);

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_test_writer()
        .try_init();
}

/// A controller with its own deployment in a temporary directory.
pub struct Deployment {
    pub tmp: tempfile::TempDir,
    pub data_dir: PathBuf,
    pub admin_token: String,
    pub ca_fingerprint: String,
    pub agent_addr: SocketAddr,
    pub api_addr: SocketAddr,
    database_url: Option<String>,
    shutdown: CancellationToken,
    running: Option<Running>,
}

impl Deployment {
    /// A new deployment on the embedded SQLite store.
    pub async fn start() -> Self {
        Self::start_with_database(None).await
    }

    /// A new deployment on `database_url` (or SQLite when `None`).
    pub async fn start_with_database(database_url: Option<String>) -> Self {
        init_logging();
        let tmp = tempfile::tempdir().expect("temp dir");
        let data_dir = tmp.path().join("controller");
        let report = deployment::init(
            &DataDir::new(&data_dir),
            &InitOptions {
                database_url: database_url.clone(),
                server_names: vec![],
            },
        )
        .await
        .expect("init deployment");
        let mut deployment = Deployment {
            tmp,
            data_dir,
            admin_token: report.admin_token.expect("admin token on first init"),
            ca_fingerprint: report.ca_fingerprint,
            agent_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url,
            shutdown: CancellationToken::new(),
            running: None,
        };
        deployment.start_controller().await;
        deployment
    }

    /// (Re)starts the controller on the same ports as before (ephemeral ones the first time).
    pub async fn start_controller(&mut self) {
        assert!(self.running.is_none(), "controller already running");
        self.shutdown = CancellationToken::new();
        let mut config = ServeConfig::new(&self.data_dir);
        config.agent_listen = self.agent_addr;
        config.api_listen = self.api_addr;
        config.database_url = self.database_url.clone();
        config.heartbeat_interval = TEST_HEARTBEAT;
        let mut attempt = 0;
        let running = loop {
            match server::start(config.clone(), self.shutdown.clone()).await {
                Ok(running) => break running,
                // The old listener's port may take a moment to be free again.
                Err(server::ServeError::Bind { .. }) if attempt < 50 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("controller did not start: {e}"),
            }
        };
        self.agent_addr = running.agent_addr;
        self.api_addr = running.api_addr;
        self.running = Some(running);
    }

    /// Stops the controller (agents see it go away), keeping the data dir.
    pub async fn stop_controller(&mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            running.wait().await;
        }
    }

    /// The running controller's shared state.
    pub fn controller(&self) -> &cordon_controller::state::Shared {
        &self
            .running
            .as_ref()
            .expect("controller running")
            .controller
    }

    pub fn api_url(&self) -> String {
        format!("https://{}", self.api_addr)
    }

    pub fn ca_cert_path(&self) -> PathBuf {
        self.data_dir.join("ca.pem")
    }

    /// An API client with the admin token.
    pub fn api(&self) -> Api {
        Api::new(&self.api_url(), &self.ca_cert_path(), &self.admin_token)
    }

    /// A fresh one-time enrolment token.
    pub async fn enrollment_token(&self, ttl_secs: u64) -> String {
        let created: EnrollmentTokenCreated = self
            .api()
            .post_json(
                "/api/v1/enrollment-tokens",
                serde_json::json!({ "ttl_secs": ttl_secs }),
            )
            .await
            .expect("create enrolment token");
        created.token
    }

    /// Enrols a new agent into its own temporary data dir (not started).
    pub async fn enroll_agent(&self) -> TestAgent {
        let dir = tempfile::tempdir().expect("agent temp dir");
        let token = self.enrollment_token(600).await;
        let file = cordon_agent::enroll::enroll(&EnrollOptions {
            data_dir: dir.path().to_path_buf(),
            controller: self.agent_addr.to_string(),
            ca_fingerprint: self.ca_fingerprint.clone(),
            token,
        })
        .await
        .expect("enrol agent");
        TestAgent {
            dir,
            id: file.agent_id,
            controller: self.agent_addr,
            task: None,
        }
    }

    /// Waits until the API shows `agent_id` with `status`.
    pub async fn wait_for_status(&self, agent_id: &str, status: AgentStatus) -> AgentView {
        let api = self.api();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut last = None;
        while tokio::time::Instant::now() < deadline {
            if let Ok(view) = api
                .get_json::<AgentView>(&format!("/api/v1/agents/{agent_id}"))
                .await
            {
                if view.status == status {
                    return view;
                }
                last = Some(view.status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("agent {agent_id} never became {status:?} (last seen {last:?})");
    }

    /// Waits until `agent_id` is online and its inventory (with its containment policy) is
    /// stored, so the controller's checks see the agent's real policy (the session is up a
    /// moment before the inventory is stored); returns the inventory.
    pub async fn wait_for_inventory(
        &self,
        agent_id: &str,
    ) -> cordon_protocol::inventory::Inventory {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let view = self.wait_for_status(agent_id, AgentStatus::Online).await;
            if let Some(inventory) = view.inventory {
                return inventory;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "agent {agent_id} never reported its inventory"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A new API token with `role` (viewer, responder, admin, automation), named `name`.
    pub async fn api_token(&self, role: &str, name: &str) -> String {
        let created: cordon_api::tokens::ApiTokenCreated = self
            .api()
            .post_json(
                "/api/v1/api-tokens",
                serde_json::json!({ "name": name, "role": role }),
            )
            .await
            .expect("create API token");
        created.token
    }

    /// Queues `task` (the API's JSON task spec) on `agent_id` and waits until it ends.
    pub async fn run_task(
        &self,
        agent_id: &str,
        task: serde_json::Value,
    ) -> cordon_api::tasks::TaskView {
        use cordon_api::tasks::TaskView;
        let created: TaskView = self
            .api()
            .post_json(
                "/api/v1/tasks",
                serde_json::json!({ "agent_id": agent_id, "task": task }),
            )
            .await
            .expect("task created");
        self.wait_for_task(&created.id).await
    }

    /// Waits (up to 60 s) until task `id` ends.
    pub async fn wait_for_task(&self, id: &str) -> cordon_api::tasks::TaskView {
        use cordon_api::tasks::TaskView;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let task: TaskView = self
                .api()
                .get_json(&format!("/api/v1/tasks/{id}?wait=10"))
                .await
                .expect("task readable");
            if task.state.is_final() {
                return task;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "task never ended: {task:?}"
            );
        }
    }

    /// The real `cordon` CLI pointed at this deployment with `token`, and at nothing else: no
    /// config file, signing key or webhook secret comes from the environment.
    pub fn cli_command(&self, token: &str) -> Command {
        let mut command = Command::new(binary("e2e-cordon"));
        command
            .env("CORDON_URL", self.api_url())
            .env("CORDON_TOKEN", token)
            .env("CORDON_CA", self.ca_cert_path())
            .env_remove("CORDON_CONFIG")
            .env_remove("CORDON_SIGNING_KEY")
            .env_remove("CORDON_WEBHOOK_SECRET")
            .env(
                cordon_cli::signer::PASSPHRASE_ENV,
                crate::keys::TEST_PASSPHRASE,
            )
            .env("HOME", self.tmp.path())
            .stdin(Stdio::null());
        command
    }

    /// Runs the real `cordon` CLI against this deployment, as the admin.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_command(&self.admin_token)
            .args(args)
            .output()
            .expect("run cordon")
    }

    /// The real `cordon` CLI started with `args` as the admin, left running (a follow mode).
    pub fn follow(&self, args: &[&str]) -> Follower {
        let mut command = self.cli_command(&self.admin_token);
        command.args(args);
        Follower::spawn(command, &format!("cordon {}", args.join(" ")))
    }

    /// [`Deployment::cli`] off the async workers (the CLI may wait on an agent in this process).
    pub async fn run_cli(&self, args: &[&str]) -> Output {
        self.run_cli_as(&self.admin_token, args).await
    }

    /// Runs the real `cordon` CLI with `token`, off the async workers.
    pub async fn run_cli_as(&self, token: &str, args: &[&str]) -> Output {
        let mut command = self.cli_command(token);
        command.args(args);
        tokio::task::spawn_blocking(move || command.output().expect("run cordon"))
            .await
            .expect("CLI thread")
    }

    /// The controller's SQLite file, opened behind its back.
    pub async fn sqlite(&self) -> sqlx::SqlitePool {
        let path = self.data_dir.join("cordon.db");
        sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("open the controller's SQLite file")
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An enrolled agent, run in-process or as the real binary.
pub struct TestAgent {
    pub dir: tempfile::TempDir,
    pub id: String,
    pub controller: SocketAddr,
    task: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl TestAgent {
    /// Trusts the public key in `key` for `actions` (a `--actions` list) on this host, as
    /// `cordon-agent trust add` does, with orders living at most `max_ttl`.
    pub fn trust(&self, name: &str, key: &Path, actions: &str, max_ttl: &str) {
        cordon_agent::trust::add(
            self.data_dir(),
            &cordon_agent::trust::AddOptions {
                public_key_file: key,
                actions,
                max_ttl: Some(max_ttl),
                name: Some(name),
            },
        )
        .expect("trust add");
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs the agent in this process with fast reconnects.
    pub fn start(&mut self) {
        let shutdown = CancellationToken::new();
        let mut config = AgentConfig::new(self.dir.path());
        config.reconnect_initial = Duration::from_millis(100);
        config.reconnect_max = Duration::from_millis(500);
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            if let Err(e) = cordon_agent::run(config, token).await {
                tracing::error!(error = %e, "test agent stopped");
            }
        });
        self.task = Some((shutdown, handle));
    }

    /// Stops the in-process agent.
    pub async fn stop(&mut self) {
        if let Some((shutdown, handle)) = self.task.take() {
            shutdown.cancel();
            let _ = handle.await;
        }
    }

    /// Starts the real `cordon-agent run` binary on this agent's data dir.
    pub fn spawn_process(&self) -> AgentProcess {
        let child = Command::new(binary("e2e-cordon-agent"))
            .args(["run", "--data-dir"])
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn cordon-agent");
        AgentProcess { child }
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if let Some((shutdown, _)) = &self.task {
            shutdown.cancel();
        }
    }
}

/// A real agent process; killed (SIGKILL) when dropped.
pub struct AgentProcess {
    pub child: Child,
}

impl AgentProcess {
    /// SIGKILL: no goodbye, no cleanup, as when a host loses power or the agent is killed.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Path of one of the binaries this crate builds from the real `main.rs` files (see Cargo.toml).
/// Cargo builds a package's binaries before its integration tests and puts them next to the
/// `deps/` folder that holds the test executable.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| {
            if deps.ends_with("deps") {
                deps.parent()
            } else {
                Some(deps)
            }
        })
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built; run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// Dials the agent listener with `tls`, sends `hello`, and returns the controller's answer, or
/// why there was none (TLS refusal, closed connection).
pub async fn try_session(
    addr: SocketAddr,
    tls: std::sync::Arc<rustls::ClientConfig>,
    hello: &cordon_protocol::hello::AgentHello,
) -> Result<cordon_protocol::hello::HelloOutcome, String> {
    open_session(addr, tls, hello)
        .await
        .map(|(hello, _)| hello.outcome)
}

/// A session opened by hand (to play a misbehaving agent).
pub type RawSession =
    cordon_protocol::connection::Connection<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Like [`try_session`], and returns the controller's whole hello and the connection for the
/// test to go on with.
pub async fn open_session(
    addr: SocketAddr,
    tls: std::sync::Arc<rustls::ClientConfig>,
    hello: &cordon_protocol::hello::AgentHello,
) -> Result<(cordon_protocol::hello::ControllerHello, RawSession), String> {
    use cordon_protocol::{connection::Connection, hello::ControllerHello};
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = cordon_agent::tls::controller_name().map_err(|e| e.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let mut conn = Connection::new(stream);
    conn.send(hello)
        .await
        .map_err(|e| format!("send hello: {e}"))?;
    let answer = tokio::time::timeout(Duration::from_secs(10), conn.recv::<ControllerHello>())
        .await
        .map_err(|_| "no answer within 10 s".to_string())?;
    match answer {
        Ok(Some(hello)) => Ok((hello, conn)),
        Ok(None) => Err("connection closed without a hello".into()),
        Err(e) => Err(format!("reading hello: {e}")),
    }
}

/// A hello for `agent_id` with a made-up inventory and a signing key derived from the id (so a
/// simulated agent presents the same key every time).
pub fn hello_for(agent_id: &str) -> cordon_protocol::hello::AgentHello {
    cordon_protocol::hello::AgentHello {
        protocol_version: cordon_protocol::PROTOCOL_VERSION,
        agent_id: agent_id.to_string(),
        inventory: cordon_protocol::inventory::Inventory {
            hostname: format!("sim-{agent_id}"),
            ..Default::default()
        },
        signing_public_key: simulated_signing_key(agent_id)
            .verifying_key()
            .to_bytes()
            .to_vec(),
    }
}

/// The signing key a simulated agent uses: derived from its id.
pub fn simulated_signing_key(agent_id: &str) -> ed25519_dalek::SigningKey {
    use sha2::Digest;
    ed25519_dalek::SigningKey::from_bytes(&sha2::Sha256::digest(agent_id.as_bytes()).into())
}

/// The session TLS config an enrolled agent in `dir` would use.
pub fn agent_tls(dir: &Path) -> std::sync::Arc<rustls::ClientConfig> {
    let identity = cordon_agent::identity::AgentDir::new(dir)
        .load()
        .expect("agent identity");
    cordon_agent::tls::session_config(identity.ca, identity.cert, identity.key).expect("tls config")
}
