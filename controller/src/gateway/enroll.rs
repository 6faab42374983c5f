//! Enrolment: one request, one answer, then the connection closes. The token is checked and
//! consumed in the same transaction that records the agent and its certificate, so a token can
//! never enrol two agents, and a refused request writes nothing (but the audit log's
//! refusal entry, rate-limited like every refusal; see [`crate::audit`]).

use std::net::SocketAddr;

use cordon_protocol::{
    connection::Connection,
    enroll::{EnrollOutcome, EnrollRequest, EnrollResponse},
    frame::FrameCodec,
    hello::decode_hello,
    ProtocolError, PROTOCOL_VERSION,
};
use tokio::{io::AsyncWriteExt, net::TcpStream};
use tokio_rustls::server::TlsStream;

use crate::{
    gateway::HANDSHAKE_TIMEOUT,
    now_ms, secret,
    state::Shared,
    store::{EnrollError, NewAgent, NewCertificate},
};

/// Enrolment requests are small (a token and a CSR).
const MAX_ENROLL_FRAME: usize = 64 * 1024;

/// The audit log's name for an enrolment.
const ENROL_ACTION: &str = "enrol";

/// The part of an enrolment token's hash the audit log may show.
fn token_hash_prefix(token: &str) -> String {
    secret::hash_prefix(&secret::hash_token(token))
}

pub async fn run(controller: Shared, tls: TlsStream<TcpStream>, peer: SocketAddr) {
    let mut conn = Connection::with_codec(tls, FrameCodec::with_max_len(MAX_ENROLL_FRAME));
    // What the refusal entry may say about the request: never the token, only its hash prefix.
    let mut presented = serde_json::json!({ "peer": peer.to_string() });
    // The answer is in the agent's version when we speak it (so an older agent can read it).
    let mut version = PROTOCOL_VERSION;
    let outcome = match tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.recv_frame()).await {
        Err(_) => Err("no enrolment request within the handshake timeout".to_string()),
        Ok(Ok(None)) => return,
        Ok(Err(e)) => Err(format!("reading enrolment request: {e}")),
        Ok(Ok(Some(frame))) => match decode(&frame) {
            Ok(request) => {
                version = request.protocol_version;
                presented["hostname"] = request
                    .hostname
                    .chars()
                    .take(255)
                    .collect::<String>()
                    .into();
                presented["token_hash_prefix"] = token_hash_prefix(&request.token).into();
                enroll(&controller, request, peer).await
            }
            Err(reason) => Err(reason),
        },
    };
    let outcome = match outcome {
        Ok(issued) => issued,
        Err(reason) => {
            tracing::warn!(%peer, %reason, "refused enrolment");
            presented["reason"] = reason.clone().into();
            controller
                .audit_refusal(crate::audit::UNAUTHENTICATED, ENROL_ACTION, "", presented)
                .await;
            EnrollOutcome::Refused { reason }
        }
    };
    let response = EnrollResponse {
        protocol_version: version,
        outcome,
    };
    if let Err(e) = conn.send(&response).await {
        tracing::warn!(%peer, error = %e, "cannot send enrolment response");
    }
    let mut tls = conn.into_inner();
    let _ = tls.shutdown().await;
}

fn decode(frame: &[u8]) -> Result<EnrollRequest, String> {
    decode_hello(frame).map_err(|e| match e {
        ProtocolError::VersionMismatch {
            oldest,
            newest,
            theirs,
        } => format!(
            "protocol version mismatch: controller speaks {oldest} to {newest}, agent speaks {theirs}"
        ),
        other => format!("bad enrolment request: {other}"),
    })
}

async fn enroll(
    controller: &Shared,
    request: EnrollRequest,
    peer: SocketAddr,
) -> Result<EnrollOutcome, String> {
    let agent_id = uuid::Uuid::new_v4().to_string();
    let issued = controller
        .ca
        .issue_agent(&request.csr_pem, &agent_id)
        .map_err(|e| e.to_string())?;
    let now = now_ms();
    let hostname: String = request.hostname.chars().take(255).collect();
    let agent = NewAgent {
        id: agent_id.clone(),
        hostname: hostname.clone(),
        enrolled_at_ms: now,
    };
    let cert = NewCertificate {
        serial: issued.serial.clone(),
        issued_at_ms: now,
        not_after_ms: issued.not_after.unix_timestamp().saturating_mul(1000),
    };
    match controller
        .store
        .enroll_agent(&secret::hash_token(&request.token), now, &agent, &cert)
        .await
    {
        Ok(()) => {}
        Err(EnrollError::Refused(refusal)) => return Err(refusal.to_string()),
        Err(EnrollError::Store(e)) => {
            tracing::error!(error = %e, "enrolment failed in the store");
            return Err("controller store unavailable; try again later".into());
        }
    }
    tracing::info!(%agent_id, %peer, %hostname, serial = %issued.serial, "agent enrolled");
    // After the fact: the enrolment committed in a transaction this entry cannot join, and it
    // stays visible in the store (the token's `used_by_agent`) should this append fail, which
    // `audit` logs at error level.
    let prefix = token_hash_prefix(&request.token);
    let detail = serde_json::json!({
        "hostname": hostname,
        "peer": peer.to_string(),
        "serial": issued.serial,
        "token_hash_prefix": prefix,
    });
    let _ = controller
        .audit(
            &format!("enrolment token {prefix}"),
            ENROL_ACTION,
            &agent_id,
            "ok",
            detail,
        )
        .await;
    Ok(EnrollOutcome::Issued {
        agent_id,
        certificate_pem: issued.cert_pem,
        ca_certificate_pem: controller.ca.cert_pem().to_string(),
    })
}
