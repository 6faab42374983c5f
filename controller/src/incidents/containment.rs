//! Containment still in force on an incident's hosts, worked out from the actions the agents
//! confirmed with a receipt: an isolation or a block lasts from its receipt until its TTL runs
//! out (the kernel lifts it then), unless a later `release` or `unblock` ended it first.
//!
//! Every done action on the hosts counts, whether or not it was attached to the incident: a
//! host isolated by hand is still isolated. Block targets are compared as the agent compares
//! them ([`normalize_target`]): `192.0.2.7/32` unblocks `192.0.2.7`.

use std::collections::BTreeMap;

use cordon_protocol::action::Action;

use crate::{actions::view::ActionView, now_ms, state::Controller, store::ActionState};

use super::IncidentError;
pub use cordon_api::incidents::ActiveContainment;

/// Actions looked at per host, newest first.
const ACTIONS_PER_HOST: i64 = 1000;

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
                    blocks.insert(
                        normalize_target(target),
                        (until(*ttl_secs), action.id.clone()),
                    );
                }
            }
            Action::Unblock { targets } => {
                for target in targets {
                    blocks.remove(&normalize_target(target));
                }
            }
            Action::Kill { .. }
            | Action::Terminate { .. }
            | Action::Quarantine { .. }
            | Action::Restore { .. }
            | Action::Fetch { .. } => {}
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

/// A block target in the one form the agent's firewall keeps it: an address or network as
/// `IpAddr` prints it, IPv4-mapped IPv6 as IPv4, and no prefix length for a single host. Text
/// that is no address is kept as it is (the agent would have refused it).
pub fn normalize_target(target: &str) -> String {
    let target = target.trim();
    target
        .parse::<cordon_protocol::cidr::Cidr>()
        .map_or_else(|_| target.to_owned(), |cidr| cidr.to_string())
}

/// One line for humans: "host-1 isolated until …; host-2 blocked 203.0.113.7 until …".
pub fn describe(active: &[ActiveContainment]) -> String {
    active
        .iter()
        .map(|c| {
            let until = cordon_api::format::time(Some(c.until_ms));
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

#[cfg(test)]
mod tests {
    use cordon_protocol::action::ActionRequest;

    use super::*;

    const AGENT: &str = "agent-1";

    /// A done action finished at `at` (ms).
    fn done(id: &str, at: i64, action: Action) -> ActionView {
        ActionView {
            id: id.into(),
            agent_id: AGENT.into(),
            kind: "x".into(),
            state: ActionState::Done,
            request: ActionRequest {
                action_id: uuid::Uuid::new_v4(),
                agent_id: AGENT.into(),
                issued_at_ms: at - 100,
                expires_at_ms: at + 300_000,
                nonce: [0; 16],
                action,
            },
            signing_bytes: String::new(),
            signatures: Vec::new(),
            required_signers: 1,
            task_id: None,
            receipt: None,
            error: None,
            created_by: "alice".into(),
            created_at_ms: at - 100,
            expires_at_ms: at + 300_000,
            submitted_at_ms: Some(at - 50),
            finished_at_ms: Some(at),
        }
    }

    fn failed(mut view: ActionView) -> ActionView {
        view.state = ActionState::Failed;
        view
    }

    fn block(targets: &[&str], ttl_secs: u64) -> Action {
        Action::Block {
            targets: targets.iter().map(|t| t.to_string()).collect(),
            ttl_secs,
        }
    }

    fn unblock(targets: &[&str]) -> Action {
        Action::Unblock {
            targets: targets.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn an_isolation_holds_until_released() {
        let isolate = done("iso", 1_000, Action::Isolate { ttl_secs: 600 });
        let active = in_force(AGENT, std::slice::from_ref(&isolate), 2_000);
        assert_eq!(
            active,
            vec![ActiveContainment {
                agent_id: AGENT.into(),
                what: "isolated".into(),
                targets: vec![],
                until_ms: 601_000,
                action_id: "iso".into(),
            }]
        );
        // Released afterwards: nothing; the order in the slice does not matter.
        let release = done("rel", 1_500, Action::Release);
        assert!(in_force(AGENT, &[release.clone(), isolate.clone()], 2_000).is_empty());
        // A release that failed releases nothing.
        assert_eq!(
            in_force(AGENT, &[isolate.clone(), failed(release.clone())], 2_000).len(),
            1
        );
        // Isolated again after the release: in force again.
        let again = done("iso2", 1_800, Action::Isolate { ttl_secs: 60 });
        let active = in_force(AGENT, &[isolate, release, again], 2_000);
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].action_id, "iso2");
        assert_eq!(active[0].until_ms, 61_800);
    }

    #[test]
    fn unblocking_part_of_a_block_leaves_the_rest() {
        let blocked = done(
            "b1",
            1_000,
            block(&["203.0.113.7", "198.51.100.0/24", "2001:db8::1"], 3600),
        );
        // Unblocked in other spellings of the same targets, as the agent matches them.
        let partly = done("u1", 2_000, unblock(&["203.0.113.7/32", "2001:DB8:0::1"]));
        let active = in_force(AGENT, &[blocked.clone(), partly], 3_000);
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].what, "blocked");
        assert_eq!(active[0].targets, vec!["198.51.100.0/24".to_owned()]);
        assert_eq!(active[0].until_ms, 1_000 + 3_600_000);
        assert_eq!(active[0].action_id, "b1");

        let rest = done("u2", 2_500, unblock(&["198.51.100.0/24"]));
        let all = done("u1", 2_000, unblock(&["203.0.113.7", "2001:db8::1"]));
        assert!(in_force(AGENT, &[blocked.clone(), all, rest], 3_000).is_empty());
        // An unblock before the block does not lift it.
        let early = done("u0", 500, unblock(&["198.51.100.0/24"]));
        assert_eq!(
            in_force(AGENT, &[blocked, early], 3_000)[0].targets.len(),
            3
        );
    }

    #[test]
    fn expired_containment_is_over_and_kills_never_count() {
        let isolate = done("iso", 1_000, Action::Isolate { ttl_secs: 10 });
        let block = done("b1", 1_000, block(&["192.0.2.7"], 5));
        let kill = done(
            "k1",
            1_000,
            Action::Kill {
                pid: 7,
                start_time_ms: 1,
                tree: false,
            },
        );
        let all = [isolate, block, kill];
        assert_eq!(in_force(AGENT, &all, 5_999).len(), 2);
        let at_block_end = in_force(AGENT, &all, 6_000);
        assert_eq!(at_block_end.len(), 1);
        assert_eq!(at_block_end[0].what, "isolated");
        assert!(in_force(AGENT, &all, 11_000).is_empty());
        // An isolation that never ran (failed) never held.
        let failed_isolation = failed(done("iso", 1_000, Action::Isolate { ttl_secs: 600 }));
        assert!(in_force(AGENT, &[failed_isolation], 2_000).is_empty());
    }

    #[test]
    fn a_block_again_restarts_its_time() {
        let first = done("b1", 1_000, block(&["192.0.2.7"], 10));
        let second = done("b2", 8_000, block(&["192.0.2.7/32"], 10));
        let active = in_force(AGENT, &[second, first], 12_000);
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].action_id, "b2");
        assert_eq!(active[0].until_ms, 18_000);
    }

    #[test]
    fn targets_are_normalised_as_the_agent_does() {
        assert_eq!(normalize_target("192.0.2.7/32"), "192.0.2.7");
        assert_eq!(normalize_target(" 192.0.2.7 "), "192.0.2.7");
        assert_eq!(normalize_target("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(normalize_target("::ffff:192.0.2.0/120"), "192.0.2.0/24");
        assert_eq!(normalize_target("2001:DB8:0:0::1/128"), "2001:db8::1");
        assert_eq!(normalize_target("2001:db8::/32"), "2001:db8::/32");
        assert_eq!(normalize_target("198.51.100.0/24"), "198.51.100.0/24");
        assert_eq!(normalize_target("not-an-ip"), "not-an-ip");
        assert_eq!(normalize_target("192.0.2.7/40"), "192.0.2.7/40");
    }

    #[test]
    fn described_for_people() {
        let active = in_force(
            AGENT,
            &[
                done("iso", 0, Action::Isolate { ttl_secs: 60 }),
                done("b1", 0, block(&["192.0.2.7"], 60)),
            ],
            1,
        );
        assert_eq!(
            describe(&active),
            "agent-1 isolated until 1970-01-01 00:01:00Z; \
             agent-1 blocked 192.0.2.7 until 1970-01-01 00:01:00Z"
        );
    }
}
