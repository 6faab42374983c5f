//! Which enrolled agent an alert's host is: by agent id, then host name, then IP address.
//!
//! Only agents that are not revoked count. Host names compare ignoring case, and a short name
//! matches the full one it begins (`web-01` ↔ `web-01.corp.example`), but two different full
//! names never match through their short names (`web-01.prod` is not `web-01.dev`); an exact
//! name match is preferred over a short-name one. When a name fits several agents the
//! address decides between them if it can; when nothing decides, no agent is chosen and the
//! candidates are reported, so a responder picks rather than the controller guessing.

use super::{fields::parse_ip, AlertHost};
use crate::{
    state::Controller,
    store::{HostCandidate, StoreError},
};
pub use cordon_api::alerts::HostMatch;

impl Controller {
    /// Matches the host an alert names to an enrolled agent (see the module docs).
    pub async fn match_host(&self, host: &AlertHost) -> Result<HostMatch, StoreError> {
        if let Some(id) = &host.agent_id {
            if let Some(agent) = self.store.get_agent(id).await? {
                if agent.revoked_at_ms.is_none() {
                    return Ok(HostMatch::agent(&agent.id, "agent_id"));
                }
            }
        }
        if host.hostname.is_none() && host.ips.is_empty() {
            return Ok(HostMatch::default());
        }
        let candidates = self
            .store
            .alert_host_candidates(host.hostname.as_deref(), &host.ips)
            .await?;
        Ok(choose(host, &candidates))
    }
}

/// Whether an agent's host name is the one an alert gives (see the module docs): `Some(true)`
/// for the same name, `Some(false)` for a short name matching a full one.
fn name_fits(alert: &str, agent: &str) -> Option<bool> {
    let (alert, agent) = (alert.to_lowercase(), agent.to_lowercase());
    if alert == agent {
        return Some(true);
    }
    let short_of = |full: &str, short: &str| {
        !short.contains('.') && full.split('.').next() == Some(short) && !short.is_empty()
    };
    (short_of(&agent, &alert) || short_of(&alert, &agent)).then_some(false)
}

/// Picks the agent among `candidates` (a generous first cut from the store).
pub fn choose(host: &AlertHost, candidates: &[HostCandidate]) -> HostMatch {
    let by_name: Vec<&HostCandidate> = match &host.hostname {
        None => Vec::new(),
        Some(name) => {
            let fits: Vec<(&HostCandidate, bool)> = candidates
                .iter()
                .filter_map(|c| name_fits(name, &c.hostname).map(|exact| (c, exact)))
                .collect();
            let exact = fits.iter().any(|(_, exact)| *exact);
            fits.into_iter()
                .filter(|(_, e)| *e == exact)
                .map(|(c, _)| c)
                .collect()
        }
    };
    let has_ip = |c: &HostCandidate| {
        host.ips
            .iter()
            .filter_map(|ip| parse_ip(ip))
            .any(|ip| c.addresses.iter().any(|a| parse_ip(a) == Some(ip.clone())))
    };
    match by_name.as_slice() {
        [one] => return HostMatch::agent(&one.id, "hostname"),
        [] => {}
        many => {
            let both: Vec<&&HostCandidate> = many.iter().filter(|c| has_ip(c)).collect();
            if let [one] = both.as_slice() {
                return HostMatch::agent(&one.id, "hostname and ip");
            }
            return ambiguous(many.iter().copied());
        }
    }
    let by_ip: Vec<&HostCandidate> = candidates.iter().filter(|c| has_ip(c)).collect();
    match by_ip.as_slice() {
        [] => HostMatch::default(),
        [one] => HostMatch::agent(&one.id, "ip"),
        many => ambiguous(many.iter().copied()),
    }
}

fn ambiguous<'a>(many: impl Iterator<Item = &'a HostCandidate>) -> HostMatch {
    HostMatch {
        agent_id: None,
        matched_by: None,
        candidates: many.map(|c| c.id.clone()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, hostname: &str, addresses: &[&str]) -> HostCandidate {
        HostCandidate {
            id: id.into(),
            hostname: hostname.into(),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn host(hostname: Option<&str>, ips: &[&str]) -> AlertHost {
        AlertHost {
            agent_id: None,
            hostname: hostname.map(str::to_owned),
            ips: ips.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn names_match_ignoring_case_and_by_short_name() {
        assert_eq!(name_fits("WEB-01", "web-01"), Some(true));
        assert_eq!(name_fits("web-01", "web-01.corp.example"), Some(false));
        assert_eq!(name_fits("web-01.corp.example", "WEB-01"), Some(false));
        assert_eq!(name_fits("web-01.prod", "web-01.dev"), None);
        assert_eq!(name_fits("web-0", "web-01"), None);
    }

    #[test]
    fn an_exact_name_beats_a_short_one() {
        let agents = [
            agent("a1", "web-01.corp.example", &[]),
            agent("a2", "web-01", &[]),
        ];
        let found = choose(&host(Some("web-01"), &[]), &agents);
        assert_eq!(found.agent_id.as_deref(), Some("a2"));
        assert_eq!(found.matched_by.as_deref(), Some("hostname"));
        let found = choose(&host(Some("WEB-01.corp.example"), &[]), &agents);
        assert_eq!(found.agent_id.as_deref(), Some("a1"));
    }

    #[test]
    fn the_address_decides_between_agents_of_one_name() {
        let agents = [
            agent("a1", "web-01", &["10.0.0.5"]),
            agent("a2", "web-01", &["10.0.0.6", "fd00::6"]),
        ];
        let found = choose(&host(Some("web-01"), &["10.0.0.6"]), &agents);
        assert_eq!(found.agent_id.as_deref(), Some("a2"));
        assert_eq!(found.matched_by.as_deref(), Some("hostname and ip"));
        // Nothing tells them apart: none is chosen, both are named.
        let found = choose(&host(Some("web-01"), &[]), &agents);
        assert_eq!(found.agent_id, None);
        assert_eq!(found.candidates, vec!["a1".to_owned(), "a2".to_owned()]);
    }

    #[test]
    fn an_address_alone_matches() {
        let agents = [
            agent("a1", "db-01", &["10.0.0.5"]),
            agent("a2", "web-01", &["fd00::6"]),
        ];
        let found = choose(&host(Some("unknown"), &["fd00:0::6"]), &agents);
        assert_eq!(found.agent_id.as_deref(), Some("a2"));
        assert_eq!(found.matched_by.as_deref(), Some("ip"));
        assert_eq!(
            choose(&host(None, &["192.0.2.1"]), &agents),
            HostMatch::default()
        );
    }
}
