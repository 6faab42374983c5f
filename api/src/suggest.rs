//! `POST /api/v1/incidents/{id}/suggest`: the responses that worked on similar past incidents
//! (closed, never reopened), proposed again for this incident's hosts and values — as pending
//! actions a responder approves with their own key. Nothing is signed or run by a suggestion.

use serde::{Deserialize, Serialize};

/// What became of one suggestion.
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
pub enum SuggestionState {
    /// A pending action now waits for signatures (`cordon approve ACTION`).
    Proposed,
    /// Proposed before (by an earlier `suggest`): the same pending or finished action.
    Exists,
    /// Not proposed; `note` says why.
    Skipped,
}

/// One response proposed again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Suggestion {
    /// The similar incident where it worked, and the action that ran there.
    pub from_incident: String,
    pub from_action: String,
    /// The host it is proposed for, and what, in a few words.
    pub agent_id: Option<String>,
    pub what: String,
    pub state: SuggestionState,
    /// The pending action, when proposed (or proposed before).
    pub action_id: Option<String>,
    /// How to approve it, or why it was skipped.
    pub note: String,
}

/// What `suggest` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SuggestPage {
    pub incident_id: String,
    pub suggestions: Vec<Suggestion>,
    /// The similar incidents not learnt from, and why (reopened, a false positive, open).
    pub passed_over: Vec<String>,
}
