//! Observables: typed values attached to an incident (`/api/v1/incidents/{id}/observables`),
//! each with a verdict, an "ignore for similarity" flag and its sightings.
//!
//! A value is validated and normalised for its type ([`ObservableType::normalize`]) wherever
//! it comes from (an alert, a task result, a person), so one address or hash is one observable
//! however it was written.

use serde::{Deserialize, Serialize};

mod normalize;

pub use normalize::InvalidObservable;

/// What kind of value an observable is.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ObservableType {
    Ipv4,
    Ipv6,
    Cidr,
    Domain,
    Url,
    Sha256,
    Sha1,
    Md5,
    FilePath,
    FileName,
    ProcessName,
    CommandLine,
    User,
    Hostname,
    Email,
    Port,
}

impl ObservableType {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Every type's name, for messages: "ipv4, ipv6, …".
    pub fn names() -> String {
        use strum::VariantArray;
        Self::VARIANTS
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What a responder (or a watch list) concluded about a value.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Verdict {
    Malicious,
    Suspicious,
    Benign,
    #[default]
    Unknown,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

crate::eq_name!(ObservableType, Verdict);

/// Where a sighting came from.
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
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum SightingSource {
    /// An alert named it (`ref_id`: the alert).
    Alert,
    /// A task's result held it (`ref_id`: the task).
    Task,
    /// A hunt matched it (`ref_id`: the hunt).
    Hunt,
    /// Containment acted on it (`ref_id`: the action).
    Action,
    /// A person added it.
    Person,
}

impl SightingSource {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One time a value was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SightingView {
    pub at_ms: i64,
    pub source: SightingSource,
    /// The alert, task, hunt or action it was seen in; absent when a person added it.
    pub ref_id: Option<String>,
    /// The host it was seen on, if one.
    pub agent_id: Option<String>,
    /// Who recorded it (a token's name, `playbook:…`, an alert source's actor).
    pub actor: String,
}

/// An observable of an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ObservableView {
    pub id: String,
    pub incident_id: String,
    #[serde(rename = "type")]
    pub kind: ObservableType,
    /// Normalised for its type.
    pub value: String,
    pub verdict: Verdict,
    /// Never counts when incidents are compared.
    pub ignore_for_similarity: bool,
    pub added_by: String,
    pub added_at_ms: i64,
    pub updated_at_ms: i64,
    /// Oldest first, at most [`MAX_SIGHTINGS_SHOWN`] (the newest are kept when there are more).
    pub sightings: Vec<SightingView>,
    /// All sightings, including those not listed.
    pub sighting_count: i64,
}

/// Most sightings an observable's view lists.
pub const MAX_SIGHTINGS_SHOWN: usize = 50;

/// Most observables one incident holds: beyond, new ones are refused (a flood of alerts
/// cannot grow an incident without bound).
pub const MAX_PER_INCIDENT: i64 = 10_000;

/// A responder adds a value to an incident (or, if it is there already, a sighting of it).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddObservable {
    #[serde(rename = "type")]
    pub kind: ObservableType,
    pub value: String,
    /// Sets the verdict (unknown for a new value when absent; an existing one's is kept).
    #[serde(default)]
    pub verdict: Option<Verdict>,
    #[serde(default)]
    pub ignore_for_similarity: Option<bool>,
    /// The host it was seen on (agent id or hostname).
    #[serde(default)]
    pub agent: Option<String>,
}

/// A responder changes what is known about an observable.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateObservable {
    #[serde(default)]
    pub verdict: Option<Verdict>,
    #[serde(default)]
    pub ignore_for_similarity: Option<bool>,
}

/// What adding did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ObservableAdded {
    /// False when the value was already there (a sighting was added to it).
    pub created: bool,
    pub observable: ObservableView,
}
