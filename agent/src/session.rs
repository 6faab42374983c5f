//! The agent's connection to its controller: dial out, hello with the inventory, heartbeat, run
//! tasks; on any failure, reconnect with backoff until shutdown.

use std::{collections::HashMap, sync::Arc, time::Duration};

use cordon_protocol::{
    action::PolicySummary,
    connection::Connection,
    hello::{decode_hello, AgentHello, ControllerHello, HelloOutcome},
    message::{AgentMessage, ControllerMessage, Task, TaskError, TaskErrorCode, TaskResult},
    ProtocolError, PROTOCOL_VERSION,
};
use tokio::{
    net::TcpStream,
    sync::{mpsc, Semaphore},
    task::AbortHandle,
};
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::{
    backoff::Backoff,
    collect::watch::WatchRegistry,
    containment::Containment,
    identity::Identity,
    tasks::{self, TaskContext},
    AgentConfig, AgentError,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Tasks accepted at once (running plus waiting for a slot); beyond this the agent answers Busy.
const MAX_OUTSTANDING_TASKS: usize = 64;
/// A session that lasted this long was healthy: the next reconnect starts from a short delay.
const HEALTHY_SESSION: Duration = Duration::from_secs(10);
/// How often the containment policy file is looked at (one `stat`) for changes made on the
/// host (`cordon-agent trust …`), which are then reported to the controller.
pub const POLICY_CHECK_INTERVAL: Duration = Duration::from_secs(1);

type Conn = Connection<TlsStream<TcpStream>>;

/// Keeps a session up until `shutdown`.
pub async fn run_forever(
    config: &AgentConfig,
    identity: Identity,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let agent_id = identity.file.agent_id.clone();
    let controller = config
        .controller_override
        .clone()
        .unwrap_or_else(|| identity.file.controller.clone());
    let tls = crate::tls::session_config(identity.ca, identity.cert, identity.key)
        .map_err(|e| AgentError::Crypto(format!("TLS configuration: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(tls);
    let signer = Arc::new(identity.signer);
    let limit = Arc::new(Semaphore::new(config.max_concurrent_tasks));
    let mut backoff = Backoff::new(config.reconnect_initial, config.reconnect_max);
    // Watches and the changes they see outlive each session: a reconnect keeps them.
    let watches = WatchRegistry::new();
    // Policy, replay cache and journal: loaded once; an invalid policy stops the agent here.
    let containment = Arc::new(Containment::open(&config.data_dir, &agent_id, &controller)?);
    containment.recover().await;
    let lasting = Lasting {
        watches,
        containment,
    };

    while !shutdown.is_cancelled() {
        let started = tokio::time::Instant::now();
        let ended = tokio::select! {
            _ = shutdown.cancelled() => break,
            ended = session(&connector, &controller, &agent_id, &signer, &limit, &lasting, &shutdown) => ended,
        };
        match &ended {
            Ok(reason) => tracing::info!(%agent_id, %controller, %reason, "session ended"),
            Err(e) => tracing::warn!(%agent_id, %controller, error = %e, "session failed"),
        }
        if started.elapsed() >= HEALTHY_SESSION {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        tracing::info!(%agent_id, delay_ms = delay.as_millis() as u64, "reconnecting");
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    Ok(())
}

/// What outlives each session.
struct Lasting {
    watches: WatchRegistry,
    containment: Arc<Containment>,
}

/// One session, from dialling to its end. `Ok` carries why it ended normally.
async fn session(
    connector: &tokio_rustls::TlsConnector,
    controller: &str,
    agent_id: &str,
    signer: &Arc<ed25519_dalek::SigningKey>,
    limit: &Arc<Semaphore>,
    lasting: &Lasting,
    shutdown: &CancellationToken,
) -> Result<String, AgentError> {
    let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, connect(connector, controller))
        .await
        .map_err(|_| AgentError::Connect(format!("{controller}: timed out")))??;
    let mut inventory = tokio::task::spawn_blocking(crate::inventory::collect)
        .await
        .unwrap_or_default();
    let reported = lasting.containment.reported_policy();
    inventory.action_policy = reported.clone();
    conn.send(&AgentHello {
        protocol_version: PROTOCOL_VERSION,
        agent_id: agent_id.to_string(),
        inventory,
        signing_public_key: signer.verifying_key().to_bytes().to_vec(),
    })
    .await
    .map_err(|e| AgentError::Connect(format!("{controller}: sending hello: {e}")))?;
    let frame = tokio::time::timeout(CONNECT_TIMEOUT, conn.recv_frame())
        .await
        .map_err(|_| AgentError::Protocol("no hello from the controller".into()))?
        .map_err(|e| AgentError::Connect(format!("{controller}: reading hello: {e}")))?
        .ok_or_else(|| {
            AgentError::Refused("the controller closed the connection during the handshake (certificate refused or revoked?)".into())
        })?;
    let hello: ControllerHello = decode_hello(&frame).map_err(|e| match e {
        ProtocolError::VersionMismatch {
            oldest,
            newest,
            theirs,
        } => AgentError::Protocol(format!(
            "protocol version mismatch: agent speaks {oldest} to {newest}, controller speaks {theirs}"
        )),
        other => AgentError::Protocol(format!("controller hello: {other}")),
    })?;
    let heartbeat = match hello.outcome {
        HelloOutcome::Accepted {
            heartbeat_interval_ms,
        } => Duration::from_millis(heartbeat_interval_ms.clamp(100, 300_000)),
        HelloOutcome::Refused { reason } => return Err(AgentError::Refused(reason)),
    };
    tracing::info!(agent_id, controller, "connected");
    // Results and chunks from running tasks; bounded, so a fast reader waits for a slow link.
    let (outbox, results_rx) = mpsc::channel::<AgentMessage>(64);
    let ctx = TaskContext {
        agent_id: agent_id.to_string(),
        signer: signer.clone(),
        outbox,
        watches: lasting.watches.clone(),
        containment: Some(lasting.containment.clone()),
    };
    serve(
        &mut conn, heartbeat, limit, ctx, results_rx, reported, shutdown,
    )
    .await
}

async fn connect(
    connector: &tokio_rustls::TlsConnector,
    controller: &str,
) -> Result<Conn, AgentError> {
    let tcp = TcpStream::connect(controller)
        .await
        .map_err(|e| AgentError::Connect(format!("{controller}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let name = crate::tls::controller_name().map_err(|e| AgentError::Crypto(e.to_string()))?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| AgentError::Connect(format!("TLS with {controller}: {e}")))?;
    Ok(Connection::new(tls))
}

/// The session loop: heartbeats out, tasks in, results out; the containment policy again
/// whenever it changes from `reported`, the summary the controller last got.
async fn serve(
    conn: &mut Conn,
    heartbeat: Duration,
    limit: &Arc<Semaphore>,
    ctx: TaskContext,
    mut results_rx: mpsc::Receiver<AgentMessage>,
    mut reported: PolicySummary,
    shutdown: &CancellationToken,
) -> Result<String, AgentError> {
    let idle = heartbeat * 3;
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut policy_check = tokio::time::interval(POLICY_CHECK_INTERVAL);
    policy_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    let mut last_received = tokio::time::Instant::now();
    let mut running: HashMap<String, Running> = HashMap::new();
    let send_err = |e: ProtocolError| AgentError::Connect(format!("sending: {e}"));

    let ended = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break "agent shutting down".to_string(),
            _ = ticker.tick() => {
                seq += 1;
                conn.send(&AgentMessage::Heartbeat { seq }).await.map_err(send_err)?;
            }
            _ = policy_check.tick() => {
                let now = ctx.containment.as_ref().map(|c| c.reported_policy());
                if let Some(now) = now.filter(|now| *now != reported) {
                    tracing::info!(signers = now.signers.len(), "containment policy changed on this host; reporting it to the controller");
                    conn.send(&AgentMessage::PolicyChanged(now.clone())).await.map_err(send_err)?;
                    reported = now;
                }
            }
            Some(change) = ctx.watches.next_event() => {
                if let Err(e) = conn.send(&change).await {
                    ctx.watches.retry_later(change).await;
                    return Err(send_err(e));
                }
            }
            Some(message) = results_rx.recv() => {
                if let AgentMessage::TaskResult(result) = &message {
                    running.remove(&result.task_id);
                }
                conn.send(&message).await.map_err(send_err)?;
            }
            received = tokio::time::timeout_at(last_received + idle, conn.recv::<ControllerMessage>()) => {
                last_received = tokio::time::Instant::now();
                let message = match received {
                    Err(_) => return Err(AgentError::Connect(format!("no message from the controller for {} s", idle.as_secs()))),
                    Ok(Ok(None)) => break "controller closed the connection".to_string(),
                    Ok(Err(e)) => return Err(AgentError::Protocol(e.to_string())),
                    Ok(Ok(Some(message))) => message,
                };
                match message {
                    ControllerMessage::HeartbeatAck { .. } => {}
                    ControllerMessage::Goodbye { reason } => break format!("controller said goodbye: {reason}"),
                    ControllerMessage::Cancel { task_id } => {
                        if running.get(&task_id).is_some_and(|r| r.is_action) {
                            // A containment action is not abandoned half-way: it finishes and
                            // its receipt (or error) is what the controller records.
                            tracing::info!(task_id, "cancel refused: containment action already running");
                        } else if let Some(running) = running.remove(&task_id) {
                            running.handle.abort();
                            let result = failed(&task_id, TaskErrorCode::Cancelled, "cancelled by the controller");
                            conn.send(&AgentMessage::TaskResult(result)).await.map_err(send_err)?;
                        }
                    }
                    ControllerMessage::Task(task) => {
                        if let Some(refusal) = start_task(task, limit, &ctx, &mut running) {
                            conn.send(&AgentMessage::TaskResult(refusal)).await.map_err(send_err)?;
                        }
                    }
                }
            }
        }
    };
    for (_, running) in running {
        running.handle.abort();
    }
    Ok(ended)
}

/// A task in progress on this session.
struct Running {
    handle: AbortHandle,
    /// Containment actions are never cancelled once started (see the `Cancel` arm).
    is_action: bool,
}

fn failed(task_id: &str, code: TaskErrorCode, message: &str) -> TaskResult {
    TaskResult {
        task_id: task_id.to_string(),
        outcome: Err(TaskError {
            code,
            message: message.to_string(),
        }),
    }
}

/// Starts a task in the background, or returns the result that refuses it.
fn start_task(
    task: Task,
    limit: &Arc<Semaphore>,
    ctx: &TaskContext,
    running: &mut HashMap<String, Running>,
) -> Option<TaskResult> {
    if task.deadline_ms < crate::now_ms() {
        return Some(failed(
            &task.task_id,
            TaskErrorCode::Expired,
            "task deadline passed before it started",
        ));
    }
    if running.contains_key(&task.task_id) {
        return Some(failed(
            &task.task_id,
            TaskErrorCode::InvalidInput,
            "a task with this id is already running",
        ));
    }
    if running.len() >= MAX_OUTSTANDING_TASKS {
        return Some(failed(
            &task.task_id,
            TaskErrorCode::Busy,
            "agent has too many tasks outstanding",
        ));
    }
    let ctx = ctx.clone();
    let limit = limit.clone();
    let task_id = task.task_id.clone();
    let is_action = matches!(task.kind, cordon_protocol::message::TaskKind::Action(_));
    let handle = tokio::spawn(async move {
        // At most `max_concurrent_tasks` run at once; the rest wait here for a slot.
        let Ok(permit) = limit.acquire_owned().await else {
            return;
        };
        let _ = ctx
            .outbox
            .send(AgentMessage::TaskStarted {
                task_id: task.task_id.clone(),
            })
            .await;
        let outcome = tasks::execute(&task.task_id, task.kind, &ctx).await;
        drop(permit);
        let _ = ctx
            .outbox
            .send(AgentMessage::TaskResult(TaskResult {
                task_id: task.task_id,
                outcome,
            }))
            .await;
    });
    running.insert(
        task_id,
        Running {
            handle: handle.abort_handle(),
            is_action,
        },
    );
    None
}
