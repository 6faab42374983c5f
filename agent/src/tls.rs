//! TLS client configurations of the agent: TLS 1.3 only, ring provider.
//!
//! - session: trusts only the deployment CA saved at enrolment, presents the agent's own
//!   certificate, and checks the controller's certificate for
//!   [`cordon_protocol::CONTROLLER_SERVER_NAME`] whatever address was dialled;
//! - enrolment: before the agent has the CA, it trusts a CA the controller presents only if its
//!   SHA-256 matches the fingerprint the operator gave (`--ca-fingerprint`).

use std::sync::Arc;

use cordon_protocol::fingerprint::of_der as fingerprint;
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    client::WebPkiServerVerifier,
    crypto::CryptoProvider,
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// The crypto provider of every agent TLS config.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The name the agent verifies in the controller's certificate.
pub fn controller_name() -> Result<ServerName<'static>, rustls_pki_types::InvalidDnsNameError> {
    ServerName::try_from(cordon_protocol::CONTROLLER_SERVER_NAME)
}

/// Session config: our CA only, our client certificate.
pub fn session_config(
    ca: CertificateDer<'static>,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots.add(ca)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert], key)?;
    config.alpn_protocols = vec![cordon_protocol::ALPN_SESSION.to_vec()];
    Ok(Arc::new(config))
}

/// Enrolment config: no client certificate; the server's CA pinned by fingerprint.
pub fn enroll_config(pinned_ca_sha256: &str) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = provider();
    let verifier = PinnedCa {
        pin: pinned_ca_sha256.to_string(),
        provider: provider.clone(),
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![cordon_protocol::ALPN_ENROLL.to_vec()];
    Ok(Arc::new(config))
}

/// Accepts a server chain only if it contains the pinned CA and the server certificate chains
/// to it (full webpki verification, name included).
#[derive(Debug)]
struct PinnedCa {
    pin: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| fingerprint(c) == self.pin)
            .ok_or_else(|| {
                rustls::Error::General(format!(
                    "the controller did not present the CA with fingerprint {}; check --ca-fingerprint",
                    self.pin
                ))
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        let others: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .filter(|c| fingerprint(c) != self.pin)
            .cloned()
            .collect();
        webpki.verify_server_cert(end_entity, &others, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
