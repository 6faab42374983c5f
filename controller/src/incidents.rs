//! Incidents: created by a responder or from an alert, moved through the stages of
//! [`stage`], with the hosts involved, an assignee and escalation tier, and a timeline of
//! everything that happened to them.
//!
//! The timeline has two sources. Changes made to the incident itself (created, stage moves,
//! assignment, escalation, comments, hosts added, alerts joined, things attached) are stored as
//! entries, each in the same transaction as its change. What happened to the things attached —
//! a task's result, the evidence it stored, an action's receipt — is read from those things
//! when the timeline is shown ([`timeline`]), so it can never disagree with them or miss an
//! outcome that arrived while the controller was down.

pub mod containment;
mod create;
mod links;
pub mod report;
pub mod stage;
pub mod timeline;

use crate::{
    now_ms,
    state::Controller,
    store::{
        CreateOutcome, IncidentChange, IncidentFilter, IncidentLink, IncidentRecord, NewIncident,
        NewTimelineEntry, StoreError,
    },
};
pub use cordon_api::incidents::{
    is_closed_stage, CreateIncident, LinkKind, Severity, UnknownSeverity, MAX_TIER,
};
pub use stage::{MoveOptions, MoveRefused, Stage};

/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest description or comment, in characters.
pub const MAX_TEXT_CHARS: usize = 16 * 1024;
/// Most hosts named in one request.
pub const MAX_HOSTS: usize = 1000;
/// Most labels on an incident.
pub const MAX_LABELS: usize = 32;

/// Why an incident operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    #[error("no incident {0}")]
    UnknownIncident(String),
    #[error("no agent with id or hostname {0:?}")]
    UnknownAgent(String),
    #[error("hostname {0:?} names several agents ({1}); use an agent id")]
    AmbiguousHost(String, String),
    #[error("no {0} {1}")]
    UnknownLinked(&'static str, String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Refused(#[from] MoveRefused),
    #[error("incident {0} changed while this request was checked; look again and retry")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A checked create request: what the store writes to open the incident.
#[derive(Debug, Clone)]
pub(crate) struct PreparedIncident {
    pub incident: NewIncident,
    /// Agent ids.
    pub hosts: Vec<String>,
    /// `created`, then what opened it (e.g. the alert).
    pub entries: Vec<NewTimelineEntry>,
    pub stage_entry_id: String,
}

/// How a create request went.
#[derive(Debug, Clone)]
pub enum Created {
    New(IncidentRecord),
    /// An open incident already had the fingerprint; nothing was created.
    Existing(IncidentRecord),
}

fn check_text(what: &str, text: &str, max: usize) -> Result<(), IncidentError> {
    if text.chars().count() > max {
        return Err(IncidentError::Invalid(format!(
            "{what} is longer than {max} characters"
        )));
    }
    if text.chars().any(|c| c == '\0') {
        return Err(IncidentError::Invalid(format!("{what} contains a NUL")));
    }
    Ok(())
}

/// Checks an incident kind: a short word that playbooks can name.
pub fn check_kind(kind: &str) -> Result<(), IncidentError> {
    let ok = !kind.is_empty()
        && kind.len() <= 64
        && kind
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(IncidentError::Invalid(format!(
            "kind {kind:?} must be 1-64 of a-z, 0-9, '_', '-', '.' (e.g. malware, c2, brute_force, ransomware)"
        )))
    }
}

fn entry(actor: &str, kind: &str, summary: String, detail: serde_json::Value) -> NewTimelineEntry {
    NewTimelineEntry {
        at_ms: now_ms(),
        actor: actor.to_owned(),
        kind: kind.to_owned(),
        summary,
        detail,
    }
}

impl Controller {
    /// The incident, or `UnknownIncident`.
    pub async fn incident(&self, id: &str) -> Result<IncidentRecord, IncidentError> {
        self.store
            .get_incident(id)
            .await?
            .ok_or_else(|| IncidentError::UnknownIncident(id.to_owned()))
    }

    pub async fn list_incidents(
        &self,
        filter: &IncidentFilter,
    ) -> Result<Vec<IncidentRecord>, IncidentError> {
        Ok(self.store.list_incidents(filter).await?)
    }

    /// Moves an incident to another stage if the rules of [`stage`] allow it.
    pub async fn move_incident(
        &self,
        id: &str,
        to: Stage,
        force: bool,
        reason: Option<&str>,
        actor: &str,
    ) -> Result<IncidentRecord, IncidentError> {
        if let Some(reason) = reason {
            check_text("reason", reason, MAX_TEXT_CHARS)?;
        }
        let incident = self.incident(id).await?;
        let from: Stage = incident.stage;
        let active = if to.is_closed() {
            let active = self.active_containment(id).await?;
            (!active.is_empty()).then(|| containment::describe(&active))
        } else {
            None
        };
        stage::check_move(
            from,
            to,
            MoveOptions {
                force,
                reason,
                active_containment: active.as_deref(),
            },
        )?;
        let change = IncidentChange::Stage {
            from: from.as_str().to_owned(),
            to: to.as_str().to_owned(),
            closes: to.is_closed(),
            entry_id: uuid::Uuid::new_v4().to_string(),
        };
        let mut summary = format!("stage {from} → {to}");
        if let Some(reason) = reason {
            summary.push_str(&format!(": {reason}"));
        }
        let detail = serde_json::json!({
            "from": from.as_str(),
            "to": to.as_str(),
            "reason": reason,
            "forced": force,
            "active_containment": active,
        });
        let moved = entry(actor, "stage", summary, detail);
        if !self.store.change_incident(id, &change, &moved).await? {
            return Err(IncidentError::Conflict(id.to_owned()));
        }
        self.publish_incident(id, &moved).await;
        tracing::info!(incident_id = id, %from, %to, by = actor, "incident stage changed");
        // The stage entry is committed: its playbooks run now rather than at the next poll.
        self.playbooks.wake();
        self.incident(id).await
    }

    /// Sets (or clears, with None) who works on the incident.
    pub async fn assign_incident(
        &self,
        id: &str,
        assignee: Option<&str>,
        actor: &str,
    ) -> Result<IncidentRecord, IncidentError> {
        let assignee = assignee.map(str::trim).filter(|a| !a.is_empty());
        if let Some(assignee) = assignee {
            check_text("assignee", assignee, 128)?;
        }
        let summary = match assignee {
            Some(a) => format!("assigned to {a}"),
            None => "unassigned".to_owned(),
        };
        self.change(
            id,
            IncidentChange::Assignee(assignee.map(str::to_owned)),
            entry(
                actor,
                "assigned",
                summary,
                serde_json::json!({ "assignee": assignee }),
            ),
        )
        .await
    }

    /// Escalates to a tier (1 upwards) and optionally a team or role, with a reason.
    pub async fn escalate_incident(
        &self,
        id: &str,
        tier: i64,
        to: Option<&str>,
        reason: Option<&str>,
        actor: &str,
    ) -> Result<IncidentRecord, IncidentError> {
        if !(1..=MAX_TIER).contains(&tier) {
            return Err(IncidentError::Invalid(format!(
                "tier must be between 1 and {MAX_TIER}, not {tier}"
            )));
        }
        let to = to.map(str::trim).filter(|t| !t.is_empty());
        if let Some(to) = to {
            check_text("escalation target", to, 128)?;
        }
        if let Some(reason) = reason {
            check_text("reason", reason, MAX_TEXT_CHARS)?;
        }
        let current = self.incident(id).await?;
        let mut summary = format!("escalated from tier {} to tier {tier}", current.tier);
        if let Some(to) = to {
            summary.push_str(&format!(" ({to})"));
        }
        if let Some(reason) = reason {
            summary.push_str(&format!(": {reason}"));
        }
        self.change(
            id,
            IncidentChange::Escalation {
                tier,
                to: to.map(str::to_owned),
            },
            entry(
                actor,
                "escalated",
                summary,
                serde_json::json!({ "from_tier": current.tier, "tier": tier, "to": to, "reason": reason }),
            ),
        )
        .await
    }

    /// Changes the severity.
    pub async fn set_incident_severity(
        &self,
        id: &str,
        severity: Severity,
        actor: &str,
    ) -> Result<IncidentRecord, IncidentError> {
        self.change(
            id,
            IncidentChange::Severity(severity.as_str().to_owned()),
            entry(
                actor,
                "severity",
                format!("severity set to {}", severity.as_str()),
                serde_json::json!({ "severity": severity.as_str() }),
            ),
        )
        .await
    }

    /// Adds a comment to the timeline.
    pub async fn comment_incident(
        &self,
        id: &str,
        text: &str,
        actor: &str,
    ) -> Result<IncidentRecord, IncidentError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(IncidentError::Invalid("comment must not be empty".into()));
        }
        check_text("comment", text, MAX_TEXT_CHARS)?;
        self.change(
            id,
            IncidentChange::Nothing,
            entry(
                actor,
                "comment",
                text.to_owned(),
                serde_json::json!({ "text": text }),
            ),
        )
        .await
    }

    /// Adds hosts (agent ids or hostnames). Returns the ids newly added.
    pub async fn add_incident_hosts(
        &self,
        id: &str,
        names: &[String],
        actor: &str,
    ) -> Result<Vec<String>, IncidentError> {
        self.incident(id).await?;
        let ids = self.resolve_agents(names).await?;
        let added = self
            .store
            .add_incident_hosts(
                id,
                &ids,
                &entry(
                    actor,
                    "hosts",
                    format!("hosts added: {}", ids.join(", ")),
                    serde_json::Value::Null,
                ),
            )
            .await?;
        self.publish_hosts_added(id, &added, actor).await;
        Ok(added)
    }

    async fn change(
        &self,
        id: &str,
        change: IncidentChange,
        entry: NewTimelineEntry,
    ) -> Result<IncidentRecord, IncidentError> {
        if !self.store.change_incident(id, &change, &entry).await? {
            return Err(IncidentError::UnknownIncident(id.to_owned()));
        }
        self.publish_incident(id, &entry).await;
        self.incident(id).await
    }

    /// Publishes `incident.hosts_added` for the hosts newly added, if any.
    pub(crate) async fn publish_hosts_added(&self, id: &str, added: &[String], actor: &str) {
        if added.is_empty() {
            return;
        }
        let added_entry = entry(
            actor,
            "hosts",
            format!("hosts added: {}", added.join(", ")),
            serde_json::json!({ "agents": added }),
        );
        self.publish_incident(id, &added_entry).await;
    }
}

/// A severity as a request names it; a bad one is an invalid request.
pub fn parse_severity(s: &str) -> Result<Severity, IncidentError> {
    s.parse()
        .map_err(|e: UnknownSeverity| IncidentError::Invalid(e.to_string()))
}
