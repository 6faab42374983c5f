//! TLS configurations of the controller: TLS 1.3 only, ring provider.
//!
//! - sessions (`cordon/1`): a client certificate from our CA is required and checked against the
//!   CRL at every handshake;
//! - enrolment (`cordon-enroll/1`): no client certificate yet; the chain includes the CA so the
//!   agent can pin it by fingerprint;
//! - the HTTPS API: server authentication only (callers present bearer tokens).
//!
//! The session config is rebuilt whenever the CRL changes; each new connection takes the
//! current one, so a revoked agent is refused at its next handshake.

use std::sync::{Arc, RwLock};

use rustls::{crypto::CryptoProvider, server::WebPkiClientVerifier, RootCertStore, ServerConfig};
use rustls_pki_types::{
    pem::PemObject, CertificateDer, CertificateRevocationListDer, PrivateKeyDer,
};
use thiserror::Error;

/// Failures building TLS configurations.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {what}: {detail}")]
    Pem { what: &'static str, detail: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The crypto provider every Cordon TLS config uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server key material, loaded once.
pub struct ServerIdentity {
    ca: CertificateDer<'static>,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl ServerIdentity {
    pub fn from_pem(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let pem_err = |what| {
            move |e: rustls_pki_types::pem::Error| TlsError::Pem {
                what,
                detail: e.to_string(),
            }
        };
        Ok(Self {
            ca: CertificateDer::from_pem_slice(ca_pem.as_bytes())
                .map_err(pem_err("CA certificate"))?,
            cert: CertificateDer::from_pem_slice(cert_pem.as_bytes())
                .map_err(pem_err("server certificate"))?,
            key: PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                .map_err(pem_err("server key"))?,
        })
    }

    fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert.clone(), self.ca.clone()]
    }

    fn base(&self) -> Result<rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier>, TlsError> {
        Ok(ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?)
    }

    /// Agent sessions: client certificate required, checked against `crl`.
    pub fn session_config(
        &self,
        crl: CertificateRevocationListDer<'static>,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone())?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .with_crls([crl])
            .build()?;
        let mut config = self
            .base()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain(), self.key.clone_key())?;
        config.alpn_protocols = vec![cordon_protocol::ALPN_SESSION.to_vec()];
        Ok(Arc::new(config))
    }

    /// Enrolment: no client certificate.
    pub fn enroll_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = self
            .base()?
            .with_no_client_auth()
            .with_single_cert(self.chain(), self.key.clone_key())?;
        config.alpn_protocols = vec![cordon_protocol::ALPN_ENROLL.to_vec()];
        Ok(Arc::new(config))
    }

    /// The HTTPS API.
    pub fn api_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = self
            .base()?
            .with_no_client_auth()
            .with_single_cert(self.chain(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The current session config, swapped when the CRL changes.
pub struct SessionTls {
    identity: ServerIdentity,
    current: RwLock<Arc<ServerConfig>>,
    enroll: Arc<ServerConfig>,
}

impl SessionTls {
    pub fn new(
        identity: ServerIdentity,
        crl: CertificateRevocationListDer<'static>,
    ) -> Result<Self, TlsError> {
        let current = RwLock::new(identity.session_config(crl)?);
        let enroll = identity.enroll_config()?;
        Ok(Self {
            identity,
            current,
            enroll,
        })
    }

    /// The config for a new session handshake.
    pub fn session(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn enroll(&self) -> Arc<ServerConfig> {
        self.enroll.clone()
    }

    pub fn api(&self) -> Result<Arc<ServerConfig>, TlsError> {
        self.identity.api_config()
    }

    /// Installs a new CRL for all later handshakes.
    pub fn update_crl(&self, crl: CertificateRevocationListDer<'static>) -> Result<(), TlsError> {
        let config = self.identity.session_config(crl)?;
        match self.current.write() {
            Ok(mut guard) => *guard = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }
}
