//! `suggest`: what worked on similar past incidents, proposed again here.
//!
//! Only incidents that were closed and never reopened are learnt from (a reopened one is
//! evidence its response did not hold; a false positive needed none). Each containment that
//! came back done there is mapped onto this incident:
//! - a quarantine: the files this incident's alerts named together with a hash the past
//!   incident shares, on the host each alert was about — else files of the same name;
//! - a block: the same targets, on each of this incident's hosts;
//! - an isolation: each of this incident's hosts;
//! - a kill is bound to a process's start time, so it is not proposed: the note says how.
//!
//! Each becomes an ordinary pending action (see [`Controller::propose_action`]) attached to the
//! incident, awaiting a responder's own signature; its id is derived from what it is, so
//! suggesting twice proposes nothing twice. Nothing is signed or run here.

use std::collections::BTreeSet;

use cordon_api::{
    actions::{ActionState, ActionView},
    incidents::LinkKind,
    observables::ObservableType,
    similar::{Outcome, ReasonKind, SimilarIncident},
    suggest::{SuggestPage, Suggestion, SuggestionState},
};
use cordon_protocol::action::{Action, ActionKind, ActionRequest};
use sha2::{Digest, Sha256};

use crate::{actions::ActionError, incidents::IncidentError, now_ms, state::Controller};

/// How long a suggested action waits for its signatures (cut to what the agent lets a key
/// give).
const VALID_FOR_SECS: u64 = 3600;
/// How many times a suggestion is made again after expiring or failing unapproved.
const MAX_GENERATIONS: u32 = 16;
/// How many similar incidents are learnt from.
const LEARN_FROM: usize = 10;

/// The id of suggesting `action` for `host` on `incident`: the same suggestion, the same id.
/// `generation` counts earlier proposals of it that expired or failed unapproved.
fn suggestion_id(incident: &str, host: &str, action: &Action, generation: u32) -> String {
    let mut hash = Sha256::new();
    let what = serde_json::to_string(action).unwrap_or_default();
    let generation = generation.to_string();
    for part in ["cordon-suggestion-v1", incident, host, &what, &generation] {
        hash.update(part.as_bytes());
        hash.update([0u8]);
    }
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash.finalize()[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// A file an alert of this incident named: its host, path and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NamedFile {
    agent_id: String,
    path: String,
    sha256: Option<String>,
}

/// What a past response is mapped onto: this incident's files, counted address values and
/// hosts, and what the past incident said about the file it quarantined.
struct Here<'a> {
    files: &'a [NamedFile],
    /// Counted (not benign, not ignored) sha256 values of this incident.
    hashes: &'a BTreeSet<String>,
    /// Counted address values of this incident, as CIDRs (`192.0.2.7/32`).
    addresses: &'a BTreeSet<String>,
    hosts: &'a [String],
    /// The hashes the past incident's alerts gave the file it quarantined.
    quarantined_hashes: &'a BTreeSet<String>,
    /// Whether the past incident shares an observable with this one (not just a host or rule).
    shares_values: bool,
}

/// `text` as a CIDR (`192.0.2.7` → `192.0.2.7/32`), if it is an address or block.
fn as_cidr(text: &str) -> Option<String> {
    ObservableType::Cidr.normalize(text).ok()
}

/// (host, action) pairs this incident would need for what `past` did.
fn mapped(past: &Action, here: &Here<'_>) -> Result<Vec<(String, Action)>, String> {
    match past {
        Action::Quarantine { path } => {
            // The files this incident's alerts named with the hash of the very file quarantined
            // there, on the host each alert was about.
            let mut out: Vec<(String, Action)> = here
                .files
                .iter()
                .filter(|f| {
                    f.sha256.as_ref().is_some_and(|h| {
                        here.quarantined_hashes.contains(h) && here.hashes.contains(h)
                    })
                })
                .filter_map(|f| {
                    let path = ObservableType::FilePath.normalize(&f.path).ok()?;
                    Some((f.agent_id.clone(), Action::Quarantine { path }))
                })
                .collect();
            out.dedup();
            if out.is_empty() {
                Err(format!(
                    "no alert of this incident named a file with the hash of {path} (as the \
                     earlier incident's alerts gave it) on a known host"
                ))
            } else {
                Ok(out)
            }
        }
        Action::Block { .. } | Action::Isolate { .. } if !here.shares_values => Err(
            "the incidents share no observable (only a host, rule or kind): not reason enough \
             to contain"
                .into(),
        ),
        Action::Block { .. } | Action::Isolate { .. } if here.hosts.is_empty() => {
            Err("this incident has no hosts yet".into())
        }
        Action::Block { targets, ttl_secs } => {
            // Only what this incident saw too.
            let targets: Vec<String> = targets
                .iter()
                .filter(|t| as_cidr(t).is_some_and(|c| here.addresses.contains(&c)))
                .cloned()
                .collect();
            if targets.is_empty() {
                return Err(
                    "none of the addresses blocked there is an observable of this incident".into(),
                );
            }
            Ok(here
                .hosts
                .iter()
                .map(|h| {
                    (
                        h.clone(),
                        Action::Block {
                            targets: targets.clone(),
                            ttl_secs: *ttl_secs,
                        },
                    )
                })
                .collect())
        }
        Action::Isolate { ttl_secs } => Ok(here
            .hosts
            .iter()
            .map(|h| {
                (
                    h.clone(),
                    Action::Isolate {
                        ttl_secs: *ttl_secs,
                    },
                )
            })
            .collect()),
        Action::Kill { .. } | Action::Terminate { .. } => Err(
            "a kill is bound to a process's start time: list the host's processes (cordon ps \
             HOST) and kill what runs there now"
                .into(),
        ),
        other => Err(format!("{} is not a response to repeat", other.kind())),
    }
}

fn with_ttl(action: Action, longest: u64) -> Action {
    match action {
        Action::Block { targets, ttl_secs } => Action::Block {
            targets,
            ttl_secs: ttl_secs.min(longest),
        },
        Action::Isolate { ttl_secs } => Action::Isolate {
            ttl_secs: ttl_secs.min(longest),
        },
        other => other,
    }
}

impl Controller {
    /// Proposes for `incident_id` what worked on its closed, never reopened, similar incidents.
    pub async fn suggest_responses(
        &self,
        incident_id: &str,
        actor: &str,
    ) -> Result<SuggestPage, IncidentError> {
        let page = self
            .similar_incidents(
                incident_id,
                LEARN_FROM,
                cordon_api::similar::DEFAULT_NOISE_SHARE,
            )
            .await?;
        let files = self.named_files(incident_id).await?;
        let hosts: Vec<String> = self
            .store
            .incident_hosts(incident_id)
            .await?
            .into_iter()
            .map(|h| h.agent_id)
            .collect();
        let counted = self.store.counted_observables(incident_id).await?;
        let hashes: BTreeSet<String> = counted
            .iter()
            .filter(|o| o.kind == ObservableType::Sha256)
            .map(|o| o.value.clone())
            .collect();
        let addresses: BTreeSet<String> = counted
            .iter()
            .filter(|o| {
                matches!(
                    o.kind,
                    ObservableType::Ipv4 | ObservableType::Ipv6 | ObservableType::Cidr
                )
            })
            .filter_map(|o| as_cidr(&o.value))
            .collect();
        let mut suggestions = Vec::new();
        let mut passed_over = Vec::new();
        for similar in &page.similar {
            if similar.outcome != Outcome::Closed {
                passed_over.push(format!(
                    "{} ({}): not learnt from",
                    similar.id, similar.outcome
                ));
                continue;
            }
            let theirs = self.named_files(&similar.id).await?;
            let shares_values = similar
                .reasons
                .iter()
                .any(|r| r.kind == ReasonKind::Observable);
            for worked in &similar.worked {
                let Some(record) = self.store.get_action(&worked.action_id).await? else {
                    continue;
                };
                let past = ActionView::try_from(record)?;
                let quarantined_hashes: BTreeSet<String> = match &past.request.action {
                    Action::Quarantine { path } => theirs
                        .iter()
                        .filter(|f| &f.path == path && f.agent_id == past.agent_id)
                        .filter_map(|f| f.sha256.clone())
                        .collect(),
                    _ => BTreeSet::new(),
                };
                let here = Here {
                    files: &files,
                    hashes: &hashes,
                    addresses: &addresses,
                    hosts: &hosts,
                    quarantined_hashes: &quarantined_hashes,
                    shares_values,
                };
                let skip = |note: String| Suggestion {
                    from_incident: similar.id.clone(),
                    from_action: worked.action_id.clone(),
                    agent_id: None,
                    what: worked.what.clone(),
                    state: SuggestionState::Skipped,
                    action_id: None,
                    note,
                };
                match mapped(&past.request.action, &here) {
                    Err(why) => suggestions.push(skip(why)),
                    Ok(pairs) => {
                        for (host, action) in pairs {
                            suggestions.push(
                                self.suggest_one(
                                    incident_id,
                                    similar,
                                    worked,
                                    &host,
                                    action,
                                    actor,
                                )
                                .await?,
                            );
                        }
                    }
                }
            }
        }
        Ok(SuggestPage {
            incident_id: incident_id.to_owned(),
            suggestions,
            passed_over,
        })
    }

    /// The files this incident's alerts named, on hosts they were matched to.
    async fn named_files(&self, incident_id: &str) -> Result<Vec<NamedFile>, IncidentError> {
        let mut files = Vec::new();
        for alert in self.store.list_alerts(Some(incident_id), 1000).await? {
            let Some(agent_id) = alert.agent_id else {
                continue;
            };
            let file = &alert.detail["file"];
            let Some(path) = file["path"].as_str() else {
                continue;
            };
            let named = NamedFile {
                agent_id,
                path: path.to_owned(),
                sha256: file["sha256"].as_str().map(str::to_ascii_lowercase),
            };
            if !files.contains(&named) {
                files.push(named);
            }
        }
        Ok(files)
    }

    async fn suggest_one(
        &self,
        incident_id: &str,
        similar: &SimilarIncident,
        worked: &cordon_api::similar::WorkedAction,
        host: &str,
        action: Action,
        actor: &str,
    ) -> Result<Suggestion, IncidentError> {
        // A proposal that expired or failed unapproved may be made again, under a new id.
        let mut generation = 0;
        let (id, before) = loop {
            let id = suggestion_id(incident_id, host, &action, generation);
            match self.store.get_action(&id).await? {
                Some(a) if matches!(a.state, ActionState::Expired | ActionState::Failed) => {
                    generation += 1;
                    if generation > MAX_GENERATIONS {
                        break (id, Some(a.state));
                    }
                }
                found => break (id, found.map(|a| a.state)),
            }
        };
        let what = cordon_api::format::what(&action);
        let made = |state: SuggestionState, action_id: Option<String>, note: String| Suggestion {
            from_incident: similar.id.clone(),
            from_action: worked.action_id.clone(),
            agent_id: Some(host.to_owned()),
            what: what.clone(),
            state,
            action_id,
            note,
        };
        if let Some(state) = before {
            // Attached even if an earlier run stopped between proposing and attaching.
            self.link_incident(incident_id, LinkKind::Action, &id, actor)
                .await?;
            return Ok(made(
                SuggestionState::Exists,
                Some(id.clone()),
                format!("proposed before: action {id} ({state})"),
            ));
        }
        let kind: ActionKind = action.kind();
        let policy = match self.store.get_agent(host).await? {
            Some(agent) if agent.revoked_at_ms.is_none() => {
                agent.inventory.map(|i| i.action_policy)
            }
            _ => {
                return Ok(made(
                    SuggestionState::Skipped,
                    None,
                    format!("no agent {host}"),
                ))
            }
        };
        let Some(policy) = policy else {
            return Ok(made(
                SuggestionState::Skipped,
                None,
                format!("agent {host} has never reported its containment policy"),
            ));
        };
        let Some(longest) = policy
            .signers
            .iter()
            .filter(|s| s.actions.contains(&kind))
            .map(|s| s.max_ttl_secs)
            .max()
        else {
            return Ok(made(
                SuggestionState::Skipped,
                None,
                format!(
                    "agent {host} trusts no key for {kind}; trust a responder's key on the host \
                     (cordon-agent trust add --actions {kind}) first"
                ),
            ));
        };
        let action = with_ttl(action, longest);
        let lifetime_ms =
            i64::try_from(VALID_FOR_SECS.min(longest).max(1) * 1000).unwrap_or(3_600_000);
        let now = now_ms();
        let request = ActionRequest {
            action_id: id
                .parse()
                .map_err(|_| IncidentError::Invalid(format!("suggestion id {id} is not a UUID")))?,
            agent_id: host.to_owned(),
            issued_at_ms: now,
            expires_at_ms: now + lifetime_ms,
            nonce: rand::random(),
            action,
        };
        let by = format!("{actor} (suggested from incident {})", similar.id);
        match self
            .propose_action(&request, policy.required(kind), &by)
            .await
        {
            Ok(()) => {}
            Err(ActionError::Exists(_)) => {
                return Ok(made(
                    SuggestionState::Exists,
                    Some(id.clone()),
                    format!("proposed before: action {id}"),
                ))
            }
            Err(ActionError::Store(e)) => return Err(e.into()),
            Err(e) => return Ok(made(SuggestionState::Skipped, None, e.to_string())),
        }
        self.link_incident(incident_id, LinkKind::Action, &id, actor)
            .await?;
        tracing::info!(%incident_id, action_id = %id, agent_id = host, %kind, from = %similar.id, "response suggested");
        Ok(made(
            SuggestionState::Proposed,
            Some(id.clone()),
            format!(
                "awaiting {} signature(s): cordon approve {id}",
                policy.required(kind)
            ),
        ))
    }
}

#[cfg(test)]
mod tests;
