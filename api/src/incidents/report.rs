//! An incident's report: `GET /api/v1/incidents/{id}/report?format=json`.

use serde::{Deserialize, Serialize};

use super::{ActiveContainment, IncidentLink, TimelineItem};
use crate::tasks::TaskErrorView;

/// A report as `GET /api/v1/incidents/{id}/report?format=json` returns it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IncidentReport {
    pub generated_at_ms: i64,
    pub summary: ReportSummary,
    pub hosts: Vec<ReportHost>,
    /// Oldest first.
    pub timeline: Vec<TimelineItem>,
    pub evidence: Vec<ReportEvidence>,
    pub actions: Vec<ReportAction>,
    /// Isolations and blocks in force on the hosts when the report was made.
    pub active_containment: Vec<ActiveContainment>,
    /// The tasks, hunts, actions and evidence attached.
    pub attached: Vec<IncidentLink>,
    /// The values the incident holds (addresses, hashes, paths, names…), oldest first.
    pub observables: Vec<crate::observables::ObservableView>,
    /// The incidents most like this one, with how they ended and what worked there.
    pub similar: Vec<crate::similar::SimilarIncident>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReportSummary {
    pub id: String,
    pub title: String,
    pub kind: String,
    pub severity: super::Severity,
    pub stage: super::Stage,
    /// Whether the stage is `closed` or `false_positive`.
    pub closed: bool,
    pub description: String,
    pub assignee: Option<String>,
    pub tier: i64,
    pub escalated_to: Option<String>,
    pub opened_at_ms: i64,
    pub opened_by: String,
    pub closed_at_ms: Option<i64>,
    pub alert_count: i64,
    pub labels: Vec<String>,
    pub fingerprint: Option<String>,
}

/// A host of the incident, as the controller sees it now.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReportHost {
    pub agent_id: String,
    /// None if the agent is no longer known.
    pub hostname: Option<String>,
    /// None when the controller no longer knows the agent.
    pub status: Option<crate::agents::AgentStatus>,
    pub added_at_ms: i64,
    pub added_by: String,
}

/// One collection of evidence.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReportEvidence {
    pub sha256: String,
    pub size: i64,
    /// `file` or `snapshot`.
    pub kind: String,
    pub source_path: Option<String>,
    pub agent_id: String,
    pub task_id: String,
    pub received_at_ms: i64,
    /// Hex of the key the agent signed its manifest with.
    pub agent_public_key: String,
    /// Whether the stored bytes still hash to `sha256` and every manifest for them still
    /// verifies under its agent's pinned key, checked when the report was made.
    pub verified: bool,
    /// The checks that failed, if any.
    pub verify_failures: Vec<String>,
}

/// Who signed an action.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReportSigner {
    /// The name the agent's policy gives the key.
    pub name: String,
    pub key_id: String,
    /// The API token that added the signature.
    pub added_by: String,
}

/// The agent's receipt for an action.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReportReceipt {
    pub at_ms: i64,
    /// What the agent found before acting, as it signed it.
    #[schema(value_type = Object)]
    pub before: Box<serde_json::value::RawValue>,
    pub done: String,
    /// What it saw after, as it signed it.
    #[schema(value_type = Object)]
    pub after: Box<serde_json::value::RawValue>,
    /// Hex of the agent's key that signed it.
    pub agent_public_key: String,
    /// Whether the signature verifies now under the key the controller pinned for the agent.
    pub signature_verified: bool,
    /// Why it does not, if it does not.
    pub verify_error: Option<String>,
}

/// A containment action.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReportAction {
    pub id: String,
    pub agent_id: String,
    pub kind: String,
    /// In a few words, e.g. "block 203.0.113.7 for 1h".
    pub what: String,
    pub state: crate::actions::ActionState,
    pub created_by: String,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub signers: Vec<ReportSigner>,
    pub receipt: Option<ReportReceipt>,
    pub error: Option<TaskErrorView>,
}
