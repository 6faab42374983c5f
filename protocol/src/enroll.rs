//! Enrolment, spoken on the `cordon-enroll/1` ALPN before the agent has a certificate: the agent
//! sends its one-time token and a CSR for a key it made itself; the controller answers with a
//! certificate naming the agent id the controller chose.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Agent → controller. The only message accepted on an enrolment connection.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub protocol_version: u32,
    /// The one-time enrolment token. Never logged: see the `Debug` impl.
    pub token: String,
    /// PEM PKCS#10 request for the agent's own key.
    pub csr_pem: String,
    /// The host's name, recorded for the operator; identity comes from the controller.
    pub hostname: String,
}

impl fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("protocol_version", &self.protocol_version)
            .field("token", &"<redacted>")
            .field("csr_pem", &format_args!("<{} bytes>", self.csr_pem.len()))
            .field("hostname", &self.hostname)
            .finish()
    }
}

/// Controller → agent, the single reply on an enrolment connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub protocol_version: u32,
    pub outcome: EnrollOutcome,
}

/// Either a certificate or the reason there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnrollOutcome {
    Issued {
        agent_id: String,
        certificate_pem: String,
        ca_certificate_pem: String,
    },
    Refused {
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let req = EnrollRequest {
            protocol_version: 1,
            token: "super-secret-token".into(),
            csr_pem: "-----BEGIN CERTIFICATE REQUEST-----".into(),
            hostname: "h".into(),
        };
        let shown = format!("{req:?}");
        assert!(!shown.contains("super-secret-token"));
        assert!(shown.contains("redacted"));
    }
}
