//! The deployment's private certificate authority: the CA itself, the controller's server
//! certificate, agent certificates issued from CSRs, and the CRL.
//!
//! An agent's identity is the common name of its certificate, and the controller always chooses
//! it: nothing but the public key is taken from an agent's CSR.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams,
    CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use thiserror::Error;
use time::{Duration, OffsetDateTime};

/// How long an agent certificate is valid.
pub const AGENT_CERT_VALIDITY: Duration = Duration::days(365);
/// How long the controller's server certificate is valid.
pub const SERVER_CERT_VALIDITY: Duration = Duration::days(365);
/// How long the CA is valid.
pub const CA_VALIDITY: Duration = Duration::days(3650);

/// PKI failures.
#[derive(Debug, Error)]
pub enum PkiError {
    #[error("invalid certificate signing request: {0}")]
    BadCsr(String),
    #[error("cannot parse certificate: {0}")]
    BadCertificate(String),
    #[error("cannot load CA key or certificate: {0}")]
    BadCa(String),
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A certificate and, where we generated it, its private key.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    /// Lowercase hex of the serial number.
    pub serial: String,
    pub not_after: OffsetDateTime,
}

/// The CA: certificate and signing key.
pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Creates a new CA. Returns it and its key in PEM (to be written 0600).
    pub fn generate(name: &str) -> Result<(Ca, String), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.key_identifier_method = KeyIdMethod::Sha256;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(random_serial().0);
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        let ca = Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        };
        Ok((ca, key_pem))
    }

    /// Loads a CA from its certificate and key PEM.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::BadCa(format!("key: {e}")))?;
        let cert_der = pem_to_der(cert_pem).map_err(PkiError::BadCa)?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| PkiError::BadCa(format!("certificate: {e}")))?;
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            cert_der,
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// SHA-256 of the CA certificate (DER), lowercase hex: what agents pin at enrolment.
    pub fn fingerprint(&self) -> String {
        cordon_protocol::fingerprint::of_der(&self.cert_der)
    }

    /// Issues the controller's server certificate for a fresh key. Always valid for
    /// [`cordon_protocol::CONTROLLER_SERVER_NAME`], localhost and loopback, plus `extra_names`
    /// (DNS names or IP addresses the API is reached on). Returns the certificate and key PEM.
    pub fn issue_server(&self, extra_names: &[String]) -> Result<(Issued, String), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn("cordon controller");
        let mut names = vec![
            cordon_protocol::CONTROLLER_SERVER_NAME.to_string(),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        for n in extra_names {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|e| PkiError::BadCertificate(format!("name {n:?}: {e}"))),
            })
            .collect::<Result<_, _>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let issued = self.sign(params, &key, SERVER_CERT_VALIDITY)?;
        Ok((issued, key.serialize_pem()))
    }

    /// Issues an agent's client certificate for the public key in `csr_pem`. The identity
    /// (common name) is `agent_id`; every name, usage and extension the CSR asked for is ignored.
    pub fn issue_agent(&self, csr_pem: &str, agent_id: &str) -> Result<Issued, PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::BadCsr(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(agent_id);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let (serial, serial_hex) = random_serial();
        params.serial_number = Some(serial);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + AGENT_CERT_VALIDITY;
        params.use_authority_key_identifier_extension = true;
        let request = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        };
        let not_after = request.params.not_after;
        let cert = request.signed_by(&self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            serial: serial_hex,
            not_after,
        })
    }

    fn sign(
        &self,
        mut params: CertificateParams,
        key: &KeyPair,
        validity: Duration,
    ) -> Result<Issued, PkiError> {
        let (serial, serial_hex) = random_serial();
        params.serial_number = Some(serial);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + validity;
        params.use_authority_key_identifier_extension = true;
        let not_after = params.not_after;
        let cert = params.signed_by(key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            serial: serial_hex,
            not_after,
        })
    }

    /// A CRL listing `revoked` (serial hex, revoked-at ms), numbered `number`.
    pub fn crl(
        &self,
        revoked: &[(String, i64)],
        number: u64,
    ) -> Result<CertificateRevocationListDer<'static>, PkiError> {
        let now = OffsetDateTime::now_utc();
        let revoked_certs = revoked
            .iter()
            .filter_map(|(serial, at_ms)| {
                let bytes = hex::decode(serial).ok()?;
                let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(*at_ms) * 1_000_000)
                    .unwrap_or(now);
                Some(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&bytes),
                    revocation_time: at,
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(30),
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.der().clone())
    }
}

/// The common name of a certificate: an agent's id.
pub fn common_name(der: &[u8]) -> Result<String, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .ok_or_else(|| PkiError::BadCertificate("no common name".into()))?;
    cn.as_str()
        .map(str::to_string)
        .map_err(|e| PkiError::BadCertificate(format!("common name: {e}")))
}

/// Decodes the first certificate in a PEM string.
pub fn pem_to_der(pem: &str) -> Result<CertificateDer<'static>, String> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| format!("certificate PEM: {e}"))
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "Cordon");
    dn
}

/// A random positive 16-byte serial (first byte 0x01..=0x7f so its DER encoding is exactly these
/// bytes, in the certificate and in the CRL alike).
fn random_serial() -> (SerialNumber, String) {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f).max(1);
    (SerialNumber::from_slice(&bytes), hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr_for(cn: &str) -> (KeyPair, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        params.distinguished_name = dn(cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        (key, csr)
    }

    #[test]
    fn agent_identity_comes_from_the_controller_not_the_csr() {
        let (ca, _) = Ca::generate("test ca").unwrap();
        let (_key, csr) = csr_for("i-am-the-controller");
        let issued = ca.issue_agent(&csr, "agent-123").unwrap();
        let der = pem_to_der(&issued.cert_pem).unwrap();
        assert_eq!(common_name(&der).unwrap(), "agent-123");
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(!cert.is_ca(), "a CSR asking to be a CA must not get one");
        assert!(cert.subject_alternative_name().unwrap().is_none());
        assert_eq!(hex::encode(cert.raw_serial()), issued.serial);
    }

    #[test]
    fn garbage_csr_is_refused_with_a_reason() {
        let (ca, _) = Ca::generate("test ca").unwrap();
        let err = ca.issue_agent("not a csr", "a").err().unwrap();
        assert!(matches!(err, PkiError::BadCsr(_)));
    }

    #[test]
    fn ca_reloads_from_pem_and_signs_for_the_same_root() {
        let (ca, key_pem) = Ca::generate("test ca").unwrap();
        let again = Ca::load(ca.cert_pem(), &key_pem).unwrap();
        assert_eq!(again.fingerprint(), ca.fingerprint());
        let (server, _) = again.issue_server(&["cordon.example.org".into()]).unwrap();
        let der = pem_to_der(&server.cert_pem).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let (_, ca_cert) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
        assert_eq!(cert.issuer().as_raw(), ca_cert.subject().as_raw());
    }

    #[test]
    fn crl_lists_revoked_serials() {
        let (ca, _) = Ca::generate("test ca").unwrap();
        let (_k, csr) = csr_for("x");
        let issued = ca.issue_agent(&csr, "a1").unwrap();
        let crl = ca
            .crl(&[(issued.serial.clone(), 1_700_000_000_000)], 3)
            .unwrap();
        use x509_parser::prelude::FromDer;
        let (_, parsed) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(&crl).unwrap();
        let serials: Vec<String> = parsed
            .iter_revoked_certificates()
            .map(|r| hex::encode(r.raw_serial()))
            .collect();
        assert_eq!(serials, vec![issued.serial]);
    }
}
