//! `cordon-agent enroll`: make a key and a CSR here, send the CSR with a one-time token to the
//! controller (whose CA is pinned by fingerprint), and keep the certificate it issues.

use std::time::Duration;

use cordon_protocol::{
    connection::Connection,
    enroll::{EnrollOutcome, EnrollRequest, EnrollResponse},
    PROTOCOL_VERSION,
};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use tokio::net::TcpStream;

use crate::{
    identity::{AgentDir, AgentFile},
    tls, AgentError,
};

const ENROLL_TIMEOUT: Duration = Duration::from_secs(15);

/// What `enroll` needs.
#[derive(Clone)]
pub struct EnrollOptions {
    pub data_dir: std::path::PathBuf,
    /// `HOST:PORT` of the controller's agent listener.
    pub controller: String,
    /// SHA-256 of the controller's CA certificate (hex, colons allowed).
    pub ca_fingerprint: String,
    pub token: String,
}

impl std::fmt::Debug for EnrollOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollOptions")
            .field("data_dir", &self.data_dir)
            .field("controller", &self.controller)
            .field("ca_fingerprint", &self.ca_fingerprint)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Enrols this host. Refuses to replace an existing identity.
pub async fn enroll(options: &EnrollOptions) -> Result<AgentFile, AgentError> {
    let dir = AgentDir::new(&options.data_dir);
    if dir.is_enrolled() {
        let existing = dir.load_file()?;
        return Err(AgentError::AlreadyEnrolled {
            dir: dir.root().display().to_string(),
            agent_id: existing.agent_id,
        });
    }
    let pin =
        cordon_protocol::fingerprint::normalize(&options.ca_fingerprint).ok_or_else(|| {
            AgentError::InvalidInput(format!(
                "--ca-fingerprint {:?} is not a SHA-256 fingerprint (64 hex digits)",
                options.ca_fingerprint
            ))
        })?;
    dir.create()?;

    let key = KeyPair::generate().map_err(|e| AgentError::Crypto(e.to_string()))?;
    let hostname = crate::inventory::hostname();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, hostname.as_str());
    params.distinguished_name = dn;
    let csr_pem = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| AgentError::Crypto(e.to_string()))?;

    let request = EnrollRequest {
        protocol_version: PROTOCOL_VERSION,
        token: options.token.trim().to_string(),
        csr_pem,
        hostname,
    };
    let response = tokio::time::timeout(ENROLL_TIMEOUT, exchange(options, &pin, &request))
        .await
        .map_err(|_| {
            AgentError::Connect(format!(
                "enrolment with {} timed out after {} s",
                options.controller,
                ENROLL_TIMEOUT.as_secs()
            ))
        })??;
    let (agent_id, certificate_pem, ca_certificate_pem) = match response.outcome {
        EnrollOutcome::Issued {
            agent_id,
            certificate_pem,
            ca_certificate_pem,
        } => (agent_id, certificate_pem, ca_certificate_pem),
        EnrollOutcome::Refused { reason } => return Err(AgentError::Refused(reason)),
    };
    let ca_der = crate::pem_cert(&ca_certificate_pem)
        .map_err(|e| AgentError::Protocol(format!("CA from controller: {e}")))?;
    if cordon_protocol::fingerprint::of_der(&ca_der) != pin {
        return Err(AgentError::Protocol(
            "the controller sent a CA that does not match the pinned fingerprint".into(),
        ));
    }

    // The key first: a certificate without its key is useless, a key without a certificate is
    // harmless. agent.toml last: its presence means "enrolled".
    dir.write(&dir.key(), &key.serialize_pem(), 0o600)?;
    crate::signing::load_or_create(&dir)?;
    dir.write(&dir.cert(), &certificate_pem, 0o644)?;
    dir.write(&dir.ca(), &ca_certificate_pem, 0o644)?;
    let file = AgentFile {
        agent_id,
        controller: options.controller.clone(),
    };
    let text = toml::to_string(&file).map_err(|e| AgentError::Config {
        path: dir.config(),
        detail: e.to_string(),
    })?;
    dir.write(&dir.config(), &text, 0o600)?;
    Ok(file)
}

async fn exchange(
    options: &EnrollOptions,
    pin: &str,
    request: &EnrollRequest,
) -> Result<EnrollResponse, AgentError> {
    let config = tls::enroll_config(pin).map_err(|e| AgentError::Crypto(e.to_string()))?;
    let tcp = TcpStream::connect(&options.controller)
        .await
        .map_err(|e| AgentError::Connect(format!("{}: {e}", options.controller)))?;
    let name = tls::controller_name().map_err(|e| AgentError::Crypto(e.to_string()))?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| AgentError::Connect(format!("TLS with {}: {e}", options.controller)))?;
    let mut conn = Connection::new(stream);
    conn.send(request)
        .await
        .map_err(|e| AgentError::Protocol(format!("sending enrolment request: {e}")))?;
    match conn.recv_frame().await {
        Ok(Some(frame)) => cordon_protocol::hello::decode_hello::<EnrollResponse>(&frame)
            .map_err(|e| AgentError::Protocol(format!("enrolment response: {e}"))),
        Ok(None) => Err(AgentError::Protocol(
            "the controller closed the connection without answering".into(),
        )),
        Err(e) => Err(AgentError::Protocol(format!("enrolment response: {e}"))),
    }
}
