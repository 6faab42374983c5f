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
    gateway::HANDSHAKE_TIMEOUT,
    listen::admission::Admitted,
    pki,
    sessions::{inbox::Inbox, registry::Registration},
    state::Shared,
    store::KeyPin,
};

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
    let (mut inbox, mut registration) =
        match Inbox::open(&controller, &agent_id, peer, &hello.inventory).await {
            Ok(opened) => opened,
            Err(reason) => {
                let _ = refuse(&mut conn, &reason).await;
                return;
            }
        };
    let accepted = ControllerHello {
        protocol_version: version,
        controller_version: env!("CARGO_PKG_VERSION").to_string(),
        outcome: HelloOutcome::Accepted {
            heartbeat_interval_ms: u64::try_from(controller.heartbeat_interval.as_millis())
                .unwrap_or(u64::MAX),
        },
    };
    tracing::info!(%agent_id, %peer, hostname = %hello.inventory.hostname, version, "agent online");

    let end = match conn.send(&accepted).await {
        Ok(()) => {
            inbox.accepted().await;
            let session = Session {
                agent_id: &agent_id,
                version,
                idle: controller.idle_timeout(),
            };
            session
                .serve(&mut conn, &mut inbox, &mut registration, &shutdown)
                .await
        }
        Err(e) => format!("sending hello: {e}"),
    };
    inbox.close().await;
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

/// What the session loop knows of its agent.
struct Session<'a> {
    agent_id: &'a str,
    /// The protocol version the session runs at.
    version: u32,
    /// How long the agent may stay silent.
    idle: Duration,
}

impl Session<'_> {
    /// The session loop: messages from the agent go to the inbox, messages for it go out.
    /// Returns why it ended.
    async fn serve(
        &self,
        conn: &mut Conn,
        inbox: &mut Inbox,
        registration: &mut Registration,
        shutdown: &CancellationToken,
    ) -> String {
        let agent_id = self.agent_id;
        let mut last_received = tokio::time::Instant::now();
        loop {
            let starts_due = inbox.next_due();
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
                    inbox.write_due().await;
                }
                Some(message) = registration.rx.recv() => {
                    if let Some(refused) = beyond(&message, self.version) {
                        tracing::warn!(agent_id, task_id = %refused.task_id, version = self.version, "task not sent: the agent's protocol is too old");
                        inbox.undeliverable(refused).await;
                        continue;
                    }
                    if let Err(e) = conn.send(&message).await {
                        return format!("send failed: {e}");
                    }
                }
                received = tokio::time::timeout_at(last_received + self.idle, conn.recv::<AgentMessage>()) => {
                    last_received = tokio::time::Instant::now();
                    let message = match received {
                        Err(_) => return format!("no message for {} s", self.idle.as_secs()),
                        Ok(Ok(None)) => return "agent closed the connection".into(),
                        Ok(Err(e)) => return format!("protocol error: {e}"),
                        Ok(Ok(Some(message))) => message,
                    };
                    if let AgentMessage::Heartbeat { seq } = message {
                        if let Err(e) = conn.send(&ControllerMessage::HeartbeatAck { seq }).await {
                            return format!("send failed: {e}");
                        }
                    }
                    inbox.receive(message).await;
                }
            }
        }
    }
}
