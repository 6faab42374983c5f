//! An incident's observables for other tools: a STIX 2.1 bundle ([`stix`]) or a MISP event
//! ([`misp`]).

pub mod misp;
pub mod stix;

use crate::{incidents::IncidentError, now_ms, state::Controller};

/// What to export as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Stix,
    Misp,
}

impl std::str::FromStr for Format {
    type Err = IncidentError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "stix" => Ok(Format::Stix),
            "misp" => Ok(Format::Misp),
            other => Err(IncidentError::Invalid(format!(
                "unknown export format {other:?}: expected stix or misp"
            ))),
        }
    }
}

impl Controller {
    /// The incident's observables as `format`.
    pub async fn export_incident(
        &self,
        id: &str,
        format: Format,
    ) -> Result<serde_json::Value, IncidentError> {
        let incident = self.incident(id).await?;
        let observables = self.store.incident_observables(id).await?;
        Ok(match format {
            Format::Stix => stix::bundle(&incident, &observables, now_ms()),
            Format::Misp => misp::event(&incident, &observables),
        })
    }
}
