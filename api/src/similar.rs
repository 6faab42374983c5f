//! Similar past incidents: `GET /api/v1/incidents/{id}/similar`, and the `similar` list in an
//! alert's answer, an incident's view and its report. Each comes with the reasons in words and
//! numbers, how it ended, and the containment that ran there.

use serde::{Deserialize, Serialize};

use crate::incidents::{Severity, Stage};

/// Default share of all incidents above which a value counts as noise: an address in more
/// than 5 % of incidents says nothing about any two of them.
pub const DEFAULT_NOISE_SHARE: f64 = 0.05;
/// Most similar incidents one answer lists.
pub const MAX_SIMILAR: usize = 50;
/// How many an alert's answer, an incident's view and a report list.
pub const SHOWN_SIMILAR: usize = 5;

/// What made two incidents alike.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    strum::IntoStaticStr,
    strum::Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ReasonKind {
    /// Both hold the value (weighted by how rare it is across all incidents).
    Observable,
    /// Both involve the host.
    Host,
    /// Both are of the same kind.
    Kind,
    /// An alert of the same rule opened or joined both.
    Rule,
    /// How recently the other one was opened.
    Recent,
}

/// One reason, with what it added to the score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reason {
    pub kind: ReasonKind,
    /// In words, e.g. `shares sha256 ab12… (seen in 1 of 40000 incidents)`.
    pub text: String,
    pub weight: f64,
}

/// How a past incident ended.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    strum::IntoStaticStr,
    strum::Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Outcome {
    /// Still open.
    Open,
    Closed,
    FalsePositive,
    /// Closed once and opened again: what was done there did not hold.
    Reopened,
}

/// A containment action that ran on a similar incident, with its receipt's word on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkedAction {
    pub action_id: String,
    pub agent_id: String,
    /// `kill`, `quarantine`, `block`, …
    pub kind: String,
    /// In a few words, e.g. "quarantine /tmp/x", "block 203.0.113.7 for 1h".
    pub what: String,
    /// When the agent's verified receipt came back.
    pub done_at_ms: Option<i64>,
    /// What the receipt says was done.
    pub done: Option<String>,
}

/// A similar incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SimilarIncident {
    pub id: String,
    pub title: String,
    pub kind: String,
    pub severity: Severity,
    pub stage: Stage,
    pub opened_at_ms: i64,
    pub closed_at_ms: Option<i64>,
    /// The sum of the reasons' weights.
    pub score: f64,
    /// Strongest first.
    pub reasons: Vec<Reason>,
    pub outcome: Outcome,
    /// Containment that ran there and came back done, oldest first.
    pub worked: Vec<WorkedAction>,
    /// From opening to the first containment receipt, when there was one.
    pub secs_to_contain: Option<i64>,
    /// From opening to closing, when it is closed.
    pub secs_to_close: Option<i64>,
}

/// `GET /api/v1/incidents/{id}/similar`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SimilarPage {
    pub incident_id: String,
    /// Most similar first.
    pub similar: Vec<SimilarIncident>,
    /// Values of this incident left out as noise (in more than `noise_share` of incidents).
    pub noise: Vec<String>,
    /// How many incidents there are in all (what rarity is measured against).
    pub incident_count: i64,
    pub noise_share: f64,
}
