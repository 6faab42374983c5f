//! Containment still in force on an incident's hosts, worked out from the actions the agents
//! confirmed with a receipt: an isolation or a block lasts from its receipt until its TTL runs
//! out (the kernel lifts it then), unless a later `release` or `unblock` ended it first.
//!
//! Every done action on the hosts counts, whether or not it was attached to the incident: a
//! host isolated by hand is still isolated.

use std::collections::BTreeMap;

use cordon_protocol::action::Action;
use serde::{Deserialize, Serialize};

use crate::{actions::view::ActionView, now_ms, state::Controller, store::ActionState};

use super::IncidentError;

/// Actions looked at per host, newest first.
const ACTIONS_PER_HOST: i64 = 1000;

/// One containment measure still in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// What is still in force after `actions` (any order), at `now`.
pub fn in_force(agent_id: &str, actions: &[ActionView], now: i64) -> Vec<ActiveContainment> {
    let mut done: Vec<&ActionView> = actions
        .iter()
        .filter(|a| a.state == ActionState::Done)
        .collect();
    done.sort_by_key(|a| (a.finished_at_ms.unwrap_or(a.created_at_ms), a.id.clone()));
    let mut isolation: Option<(i64, String)> = None;
    let mut blocks: BTreeMap<String, (i64, String)> = BTreeMap::new();
    for action in done {
        let at = action.finished_at_ms.unwrap_or(action.created_at_ms);
        let until = |ttl_secs: u64| {
            at.saturating_add(i64::try_from(ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX))
        };
        match &action.request.action {
            Action::Isolate { ttl_secs } => isolation = Some((until(*ttl_secs), action.id.clone())),
            Action::Release => isolation = None,
            Action::Block { targets, ttl_secs } => {
                for target in targets {
                    blocks.insert(target.clone(), (until(*ttl_secs), action.id.clone()));
                }
            }
            Action::Unblock { targets } => {
                for target in targets {
                    blocks.remove(target);
                }
            }
            Action::Kill { .. } | Action::Quarantine { .. } | Action::Restore { .. } => {}
        }
    }
    let mut active = Vec::new();
    if let Some((until_ms, action_id)) = isolation.filter(|(until, _)| *until > now) {
        active.push(ActiveContainment {
            agent_id: agent_id.to_owned(),
            what: "isolated".into(),
            targets: Vec::new(),
            until_ms,
            action_id,
        });
    }
    // One entry per blocking action still (partly) in force.
    let mut by_action: BTreeMap<String, ActiveContainment> = BTreeMap::new();
    for (target, (until_ms, action_id)) in blocks.into_iter().filter(|(_, (u, _))| *u > now) {
        by_action
            .entry(action_id.clone())
            .or_insert_with(|| ActiveContainment {
                agent_id: agent_id.to_owned(),
                what: "blocked".into(),
                targets: Vec::new(),
                until_ms,
                action_id,
            })
            .targets
            .push(target);
    }
    active.extend(by_action.into_values());
    active
}

/// One line for humans: "host-1 isolated until …; host-2 blocked 203.0.113.7 until …".
pub fn describe(active: &[ActiveContainment]) -> String {
    active
        .iter()
        .map(|c| {
            let until = crate::cli::output::time(Some(c.until_ms));
            if c.targets.is_empty() {
                format!("{} {} until {until}", c.agent_id, c.what)
            } else {
                format!(
                    "{} {} {} until {until}",
                    c.agent_id,
                    c.what,
                    c.targets.join(", ")
                )
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl Controller {
    /// Containment in force now on the incident's hosts.
    pub async fn active_containment(
        &self,
        incident_id: &str,
    ) -> Result<Vec<ActiveContainment>, IncidentError> {
        let now = now_ms();
        let mut active = Vec::new();
        for host in self.store.incident_hosts(incident_id).await? {
            let records = self
                .store
                .list_actions(Some(&host.agent_id), ACTIONS_PER_HOST)
                .await?;
            let views = records
                .into_iter()
                .map(ActionView::try_from)
                .collect::<Result<Vec<_>, _>>()?;
            active.extend(in_force(&host.agent_id, &views, now));
        }
        Ok(active)
    }
}
