//! One enrolled agent's session: identity from the certificate, hello, then heartbeats, tasks
//! and results until either side goes away.

use std::{net::SocketAddr, time::Duration};

use cordon_protocol::{
    connection::Connection,
    frame::FrameCodec,
    hello::{decode_hello, AgentHello, ControllerHello, HelloOutcome},
    message::{AgentMessage, ControllerMessage, TaskError, TaskErrorCode, TaskResult},
    ProtocolError, PROTOCOL_VERSION,
};
use tokio::{io::AsyncWriteExt, net::TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::{
    gateway::HANDSHAKE_TIMEOUT, listen::admission::Admitted, now_ms, pki, state::Shared,
    store::KeyPin,
};

/// How often a connected agent's last-seen time is written to the store. Heartbeats in between
/// only touch memory, so 10,000 agents do not turn into a write storm.
const LAST_SEEN_WRITE_INTERVAL: Duration = Duration::from_secs(30);

/// Largest hello accepted (an inventory of a host with many interfaces is a few KiB); the
/// full frame limit applies only once the hello is accepted.
const MAX_HELLO_FRAME: usize = 256 * 1024;

type Conn = Connection<TlsStream<TcpStream>>;

/// Runs a session to its end. Every refusal is logged with the reason and sent to the agent.
pub async fn run(
    controller: Shared,
    tls: TlsStream<TcpStream>,
    peer: SocketAddr,
    shutdown: CancellationToken,
    admitted: &mut Admitted,
) {
    let cert_id = match peer_agent_id(&tls) {
        Ok(id) => id,
        Err(reason) => {
            tracing::warn!(%peer, %reason, "refused agent session");
            return;
        }
    };
    let codec =
        FrameCodec::with_max_len(MAX_HELLO_FRAME).with_budget(controller.receive_budget.clone());
    let mut conn = Connection::with_codec(tls, codec);
    let hello = match accept_hello(&controller, &mut conn, &cert_id).await {
        Ok(hello) => hello,
        Err(reason) => {
            tracing::warn!(%peer, agent_id = %cert_id, %reason, "refused agent session");
            let _ = refuse(&mut conn, &reason).await;
            return;
        }
    };
    // The handshake is over only now: until the hello, the connection held a handshake slot.
    admitted.handshake_done();
    conn.codec_mut()
        .set_max_len(cordon_protocol::frame::MAX_FRAME_LEN);
    let agent_id = hello.agent_id;
    // Checked by `decode_hello`: a version we speak, at most ours.
    let version = hello.protocol_version;
    let mut registration = controller.registry.register(&agent_id, peer, now_ms());
    if let Err(e) = controller
        .store
        .agent_connected(&agent_id, &hello.inventory, now_ms())
        .await
    {
        tracing::error!(%agent_id, error = %e, "cannot record agent session in the store");
        controller
            .registry
            .unregister(&agent_id, registration.conn_id);
        let _ = refuse(&mut conn, "controller store unavailable; try again later").await;
        return;
    }
    let accepted = ControllerHello {
        protocol_version: version,
        controller_version: env!("CARGO_PKG_VERSION").to_string(),
        outcome: HelloOutcome::Accepted {
            heartbeat_interval_ms: u64::try_from(controller.heartbeat_interval.as_millis())
                .unwrap_or(u64::MAX),
        },
    };
    tracing::info!(%agent_id, %peer, hostname = %hello.inventory.hostname, "agent online");

    let end = match conn.send(&accepted).await {
        Ok(()) => {
            // What waited for this agent goes out first (the session loop drains it).
            controller.dispatch_queued(&agent_id).await;
            // Its file watches too, in case the agent restarted and lost them.
            controller.resend_watches(&agent_id).await;
            serve(
                &controller,
                &mut conn,
                &agent_id,
                version,
                &mut registration,
                &shutdown,
            )
            .await
        }
        Err(e) => format!("sending hello: {e}"),
    };

    // A newer session of the same agent may have replaced this one: then the agent is still
    // online and what it was sent is in that session's hands.
    if controller
        .registry
        .unregister(&agent_id, registration.conn_id)
    {
        controller.presence.gone(&agent_id, now_ms());
        controller.agent_disconnected(&agent_id).await;
    }
    tracing::info!(%agent_id, %peer, reason = %end, "agent offline");
    let mut tls = conn.into_inner();
    let _ = tokio::time::timeout(Duration::from_secs(1), tls.shutdown()).await;
}

/// The agent id in the client certificate (already verified by TLS against our CA and CRL).
fn peer_agent_id(tls: &TlsStream<TcpStream>) -> Result<String, String> {
    let (_, server) = tls.get_ref();
    let cert = server
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or("no client certificate")?;
    pki::common_name(cert).map_err(|e| format!("client certificate: {e}"))
}

async fn accept_hello(
    controller: &Shared,
    conn: &mut Conn,
    cert_id: &str,
) -> Result<AgentHello, String> {
    let frame = match tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.recv_frame()).await {
        Err(_) => return Err("no hello within the handshake timeout".into()),
        Ok(Ok(None)) => return Err("connection closed before hello".into()),
        Ok(Err(e)) => return Err(format!("reading hello: {e}")),
        Ok(Ok(Some(frame))) => frame,
    };
    let hello: AgentHello = decode_hello(&frame).map_err(|e| match e {
        ProtocolError::VersionMismatch {
            oldest,
            newest,
            theirs,
        } => format!(
            "protocol version mismatch: controller speaks {oldest} to {newest}, agent speaks {theirs}"
        ),
        other => format!("bad hello: {other}"),
    })?;
    if hello.agent_id != cert_id {
        return Err(format!(
            "hello names agent {:?} but the certificate is for {cert_id:?}",
            hello.agent_id
        ));
    }
    match controller.store.get_agent(cert_id).await {
        Ok(Some(agent)) if agent.revoked_at_ms.is_some() => {
            Err(format!("agent {cert_id} is revoked"))
        }
        Ok(Some(_)) => {
            pin_signing_key(controller, cert_id, &hello.signing_public_key).await?;
            Ok(hello)
        }
        Ok(None) => Err(format!("unknown agent {cert_id}")),
        Err(e) => Err(format!("store unavailable: {e}")),
    }
}

/// Pins the agent's signing key on first sight; afterwards only that key is accepted, so
/// evidence signed by a replaced key is never mistaken for the agent's.
async fn pin_signing_key(controller: &Shared, agent_id: &str, key: &[u8]) -> Result<(), String> {
    if ed25519_dalek::VerifyingKey::try_from(key).is_err() {
        return Err("hello carries no valid Ed25519 signing key".into());
    }
    let key_hex = hex::encode(key);
    match controller
        .store
        .pin_agent_signing_key(agent_id, &key_hex)
        .await
    {
        Ok(KeyPin::Matches) => Ok(()),
        Ok(KeyPin::Pinned) => {
            tracing::info!(agent_id, signing_key = %key_hex, "agent signing key pinned");
            Ok(())
        }
        Ok(KeyPin::Mismatch { pinned }) => Err(format!(
            "agent signing key {key_hex} differs from the pinned key {pinned}; \
             if the agent's data was lost, revoke it and enrol it again"
        )),
        Err(e) => Err(format!("store unavailable: {e}")),
    }
}

async fn refuse(conn: &mut Conn, reason: &str) -> Result<(), ProtocolError> {
    conn.send(&ControllerHello {
        protocol_version: PROTOCOL_VERSION,
        controller_version: env!("CARGO_PKG_VERSION").to_string(),
        outcome: HelloOutcome::Refused {
            reason: reason.to_string(),
        },
    })
    .await
}

/// A task that an agent speaking `version` could not decode (sending it would end the session,
/// and it would be sent again on every reconnect), as the failure it ends with instead.
fn beyond(message: &ControllerMessage, version: u32) -> Option<TaskResult> {
    let ControllerMessage::Task(task) = message else {
        return None;
    };
    let since = task.kind.since_version();
    (since > version).then(|| TaskResult {
        task_id: task.task_id.clone(),
        outcome: Err(TaskError {
            code: TaskErrorCode::Unsupported,
            message: format!(
                "the agent speaks Cordon protocol {version}; this {} task needs protocol {since} \
                 or later: upgrade the agent",
                task.kind.name()
            ),
        }),
    })
}

/// The session loop. Returns why it ended.
async fn serve(
    controller: &Shared,
    conn: &mut Conn,
    agent_id: &str,
    version: u32,
    registration: &mut crate::gateway::registry::Registration,
    shutdown: &CancellationToken,
) -> String {
    let idle = controller.idle_timeout();
    let mut transfers = crate::gateway::transfer::Transfers::default();
    let mut changes = crate::watches::ChangeWriter::new(controller, agent_id);
    // Starts are written with their task's end when it comes soon (see `starts`).
    let mut starts = crate::gateway::starts::Starts::default();
    let mut last_seen_written = tokio::time::Instant::now();
    let mut last_received = tokio::time::Instant::now();
    loop {
        let starts_due = starts.next_due();
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = conn.send(&ControllerMessage::Goodbye { reason: "controller shutting down".into() }).await;
                return "controller shutdown".into();
            }
            _ = registration.cancel.cancelled() => {
                let _ = conn.send(&ControllerMessage::Goodbye { reason: "session ended by the controller".into() }).await;
                return "session ended by the controller (revoked or replaced)".into();
            }
            _ = tokio::time::sleep_until(starts_due.unwrap_or_else(tokio::time::Instant::now)), if starts_due.is_some() => {
                let due = starts.take_due(tokio::time::Instant::now());
                controller.tasks_started(agent_id, due).await;
            }
            Some(message) = registration.rx.recv() => {
                if let Some(refused) = beyond(&message, version) {
                    tracing::warn!(agent_id, task_id = %refused.task_id, version, "task not sent: the agent's protocol is too old");
                    if let Some(result) = controller.registry.complete(agent_id, refused) {
                        controller.task_finished(agent_id, result, None, None).await;
                    }
                    continue;
                }
                if let Err(e) = conn.send(&message).await {
                    return format!("send failed: {e}");
                }
            }
            received = tokio::time::timeout_at(last_received + idle, conn.recv::<AgentMessage>()) => {
                last_received = tokio::time::Instant::now();
                let message = match received {
                    Err(_) => return format!("no message for {} s", idle.as_secs()),
                    Ok(Ok(None)) => return "agent closed the connection".into(),
                    Ok(Err(e)) => return format!("protocol error: {e}"),
                    Ok(Ok(Some(message))) => message,
                };
                match message {
                    AgentMessage::Heartbeat { seq } => {
                        if let Err(e) = conn.send(&ControllerMessage::HeartbeatAck { seq }).await {
                            return format!("send failed: {e}");
                        }
                        if last_seen_written.elapsed() >= LAST_SEEN_WRITE_INTERVAL {
                            last_seen_written = tokio::time::Instant::now();
                            controller.presence.seen(agent_id, now_ms());
                        }
                    }
                    AgentMessage::TaskStarted { task_id } => {
                        let now = tokio::time::Instant::now();
                        let overflow = starts.push(task_id, now_ms(), now);
                        controller.tasks_started(agent_id, overflow).await;
                    }
                    AgentMessage::TaskResult(result) => {
                        let started_at_ms = starts.take(&result.task_id);
                        // In-memory tasks (pings, load tests) first; otherwise a stored task.
                        if let Some(result) = controller.registry.complete(agent_id, result) {
                            let staged = transfers.finish(&result.task_id);
                            controller
                                .task_finished(agent_id, result, staged, started_at_ms)
                                .await;
                        }
                    }
                    AgentMessage::Chunk(chunk) => {
                        transfers.push(controller, agent_id, chunk).await;
                    }
                    AgentMessage::Event(event) => {
                        changes.push(event).await;
                    }
                    AgentMessage::PolicyChanged(policy) => {
                        controller.agent_policy_changed(agent_id, policy).await;
                    }
                }
            }
        }
    }
}
