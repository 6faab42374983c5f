//! Incidents: `/api/v1/incidents`, their hosts, links, stages, timeline and report.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

pub mod report;

/// Highest escalation tier.
pub const MAX_TIER: i64 = 5;

/// How bad an incident is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// A severity name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown severity {0:?}: expected low, medium, high or critical")]
pub struct UnknownSeverity(pub String);

/// Any case, surrounding space ignored.
impl FromStr for Severity {
    type Err = UnknownSeverity;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        Severity::ALL
            .into_iter()
            .find(|severity| severity.as_str() == wanted)
            .ok_or_else(|| UnknownSeverity(s.to_owned()))
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What can be attached to an incident.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
    strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum LinkKind {
    Task,
    Hunt,
    Action,
    Evidence,
}

impl LinkKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A new incident, as a responder or an alert describes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIncident {
    pub title: String,
    /// What kind of incident: `malware`, `c2`, `brute_force`, `ransomware`, or any other word
    /// playbooks are written for.
    pub kind: String,
    /// low, medium (default), high or critical.
    #[serde(default)]
    pub severity: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Agent ids or hostnames.
    #[serde(default)]
    pub agents: Vec<String>,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub assignee: Option<String>,
    /// Alerts with the same fingerprint join the open incident that has it.
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// Where an incident is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Alert,
    Assessment,
    Collection,
    Analysis,
    Escalation,
    Response,
    Investigation,
    Remediation,
    Closed,
    FalsePositive,
}

impl Stage {
    /// Every stage, in process order.
    pub const ALL: [Stage; 10] = [
        Stage::Alert,
        Stage::Assessment,
        Stage::Collection,
        Stage::Analysis,
        Stage::Escalation,
        Stage::Response,
        Stage::Investigation,
        Stage::Remediation,
        Stage::Closed,
        Stage::FalsePositive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Alert => "alert",
            Stage::Assessment => "assessment",
            Stage::Collection => "collection",
            Stage::Analysis => "analysis",
            Stage::Escalation => "escalation",
            Stage::Response => "response",
            Stage::Investigation => "investigation",
            Stage::Remediation => "remediation",
            Stage::Closed => "closed",
            Stage::FalsePositive => "false_positive",
        }
    }

    /// Whether the incident is over in this stage.
    pub fn is_closed(self) -> bool {
        matches!(self, Stage::Closed | Stage::FalsePositive)
    }

    /// Its place in process order.
    pub fn position(self) -> usize {
        Stage::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stage name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown stage {0:?}: expected one of alert, assessment, collection, analysis, escalation, response, investigation, remediation, closed, false_positive")]
pub struct UnknownStage(pub String);

impl FromStr for Stage {
    type Err = UnknownStage;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
        Stage::ALL
            .into_iter()
            .find(|stage| stage.as_str() == wanted)
            .ok_or_else(|| UnknownStage(s.to_owned()))
    }
}

/// A stored incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IncidentRecord {
    pub id: String,
    pub title: String,
    pub kind: String,
    pub severity: Severity,
    pub stage: Stage,
    pub description: String,
    pub assignee: Option<String>,
    /// Escalation tier, 1 upwards.
    pub tier: i64,
    /// The team or role it was escalated to.
    pub escalated_to: Option<String>,
    pub labels: Vec<String>,
    pub fingerprint: Option<String>,
    pub alert_count: i64,
    pub created_at_ms: i64,
    pub created_by: String,
    pub updated_at_ms: i64,
    pub closed_at_ms: Option<i64>,
}

/// A host involved in an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IncidentHost {
    pub agent_id: String,
    pub added_at_ms: i64,
    pub added_by: String,
}

/// Something attached to an incident: `task`, `hunt`, `action` or `evidence` (a SHA-256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IncidentLink {
    pub incident_id: String,
    pub kind: LinkKind,
    pub ref_id: String,
    pub linked_at_ms: i64,
    pub linked_by: String,
}

/// A stored timeline entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    pub id: i64,
    pub incident_id: String,
    pub at_ms: i64,
    pub actor: String,
    pub kind: String,
    pub summary: String,
    pub detail: serde_json::Value,
}

/// A stage an incident entered, and whether its playbook has run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StageEntry {
    pub id: String,
    pub incident_id: String,
    pub stage: Stage,
    pub entered_at_ms: i64,
    pub entered_by: String,
    /// `pending` until the playbook runner has handled it, then `done`.
    pub playbook_state: String,
    /// What the runner did, or why it could not.
    pub playbook_detail: Option<serde_json::Value>,
}

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TimelineItem {
    pub at_ms: i64,
    /// Who: a token name, `controller`, `playbook:NAME`, or the agent that did it.
    pub actor: String,
    /// `created`, `stage`, `assigned`, `escalated`, `comment`, `hosts`, `alert`, `task`,
    /// `hunt`, `action`, `evidence` (stored); `task.done`, `task.failed`, `task.expired`,
    /// `task.cancelled`, `evidence.stored`, `action.done`, `action.failed`, `action.expired`
    /// (read from what is attached).
    pub kind: String,
    pub summary: String,
    pub detail: serde_json::Value,
    /// The stored entry's id; None for lines read from attached things.
    pub entry_id: Option<i64>,
}

impl From<TimelineEntry> for TimelineItem {
    fn from(e: TimelineEntry) -> Self {
        Self {
            at_ms: e.at_ms,
            actor: e.actor,
            kind: e.kind,
            summary: e.summary,
            detail: e.detail,
            entry_id: Some(e.id),
        }
    }
}

/// One containment measure still in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ActiveContainment {
    pub agent_id: String,
    /// `isolated` or `blocked`.
    pub what: String,
    /// For a block: the addresses or CIDRs.
    pub targets: Vec<String>,
    /// When the kernel lifts it.
    pub until_ms: i64,
    /// The action that put it in place.
    pub action_id: String,
}

/// An incident in a list.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IncidentSummary {
    #[serde(flatten)]
    pub incident: IncidentRecord,
    /// Agent ids.
    pub hosts: Vec<String>,
}

/// An incident with everything about it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IncidentView {
    #[serde(flatten)]
    pub incident: IncidentRecord,
    pub hosts: Vec<IncidentHost>,
    /// Tasks, hunts, actions and evidence attached.
    pub links: Vec<IncidentLink>,
    /// Isolations and blocks in force on its hosts now.
    pub active_containment: Vec<ActiveContainment>,
    /// The stages entered and whether their playbooks ran.
    pub stages: Vec<StageEntry>,
    pub timeline: Vec<TimelineItem>,
    /// The incidents most like this one, most similar first (at most
    /// [`crate::similar::SHOWN_SIMILAR`]); `GET …/similar` gives more, with the noise.
    pub similar: Vec<crate::similar::SimilarIncident>,
}

/// `POST /api/v1/incidents/{id}/stage`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveStage {
    pub stage: String,
    #[serde(default)]
    pub reason: Option<String>,
    /// Past the rules that can be overridden (closing early or with containment active); needs
    /// a reason.
    #[serde(default)]
    pub force: bool,
}

/// `POST /api/v1/incidents/{id}/close`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Close {
    /// `closed` (default) or `false_positive`.
    #[serde(default)]
    pub resolution: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub force: bool,
}

/// `POST /api/v1/incidents/{id}/assign`: `{"assignee": null}` unassigns.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Assign {
    pub assignee: Option<String>,
}

/// `POST /api/v1/incidents/{id}/escalate`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Escalate {
    /// The tier it goes to (1 upwards); default: one above the current.
    #[serde(default)]
    pub tier: Option<i64>,
    /// The team or role taking it, e.g. "ir-team" or "forensics".
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /api/v1/incidents/{id}/severity`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSeverity {
    pub severity: String,
}

/// `POST /api/v1/incidents/{id}/comments`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Comment {
    pub text: String,
}

/// `POST /api/v1/incidents/{id}/hosts`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddHosts {
    /// Agent ids or hostnames.
    pub agents: Vec<String>,
}

/// `POST /api/v1/incidents/{id}/links`: attach a task, hunt, action or evidence (SHA-256).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub kind: LinkKind,
    pub id: String,
}

/// Whether a stage name (as stored and shown) means the incident is over.
pub fn is_closed_stage(stage: &str) -> bool {
    stage.parse::<Stage>().is_ok_and(Stage::is_closed)
}

crate::eq_name!(Severity, Stage, LinkKind);
