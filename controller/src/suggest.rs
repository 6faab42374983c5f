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
    actions::ActionView,
    incidents::LinkKind,
    observables::ObservableType,
    similar::{Outcome, SimilarIncident},
    suggest::{SuggestPage, Suggestion, SuggestionState},
};
use cordon_protocol::action::{Action, ActionKind, ActionRequest};
use sha2::{Digest, Sha256};

use crate::{actions::ActionError, incidents::IncidentError, now_ms, state::Controller};

/// How long a suggested action waits for its signatures (cut to what the agent lets a key
/// give).
const VALID_FOR_SECS: u64 = 3600;
/// How many similar incidents are learnt from.
const LEARN_FROM: usize = 10;

/// The id of suggesting `action` for `host` on `incident`: the same suggestion, the same id.
fn suggestion_id(incident: &str, host: &str, action: &Action) -> String {
    let mut hash = Sha256::new();
    let what = serde_json::to_string(action).unwrap_or_default();
    for part in ["cordon-suggestion-v1", incident, host, &what] {
        hash.update(part.as_bytes());
        hash.update([0u8]);
    }
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash.finalize()[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

fn base_name(path: &str) -> Option<&str> {
    path.rsplit(['/', '\\']).next().filter(|n| !n.is_empty())
}

/// A file an alert of this incident named: its host, path and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NamedFile {
    agent_id: String,
    path: String,
    sha256: Option<String>,
}

/// (host, action) pairs this incident would need for what `past` did.
fn mapped(
    past: &Action,
    files: &[NamedFile],
    shared_hashes: &BTreeSet<String>,
    hosts: &[String],
) -> Result<Vec<(String, Action)>, String> {
    match past {
        Action::Quarantine { path } => {
            // The files this incident's alerts named with a hash the past incident shares, on
            // the host each alert was about; failing that, files of the same name.
            let with_hash: Vec<&NamedFile> = files
                .iter()
                .filter(|f| f.sha256.as_ref().is_some_and(|h| shared_hashes.contains(h)))
                .collect();
            let chosen: Vec<&NamedFile> = if with_hash.is_empty() {
                files
                    .iter()
                    .filter(|f| {
                        base_name(&f.path).is_some() && base_name(&f.path) == base_name(path)
                    })
                    .collect()
            } else {
                with_hash
            };
            let mut out: Vec<(String, Action)> = chosen
                .into_iter()
                .map(|f| {
                    (
                        f.agent_id.clone(),
                        Action::Quarantine {
                            path: f.path.clone(),
                        },
                    )
                })
                .collect();
            out.dedup();
            if out.is_empty() {
                Err(format!(
                    "no alert of this incident named a file with a shared hash or called {} on a \
                     known host",
                    base_name(path).unwrap_or(path)
                ))
            } else {
                Ok(out)
            }
        }
        Action::Block { .. } | Action::Isolate { .. } if hosts.is_empty() => {
            Err("this incident has no hosts yet".into())
        }
        Action::Block { targets, ttl_secs } => Ok(hosts
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
            .collect()),
        Action::Isolate { ttl_secs } => Ok(hosts
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
            let shared_hashes = self.shared_hashes(incident_id, similar).await?;
            for worked in &similar.worked {
                let Some(record) = self.store.get_action(&worked.action_id).await? else {
                    continue;
                };
                let past = ActionView::try_from(record)?;
                let skip = |note: String| Suggestion {
                    from_incident: similar.id.clone(),
                    from_action: worked.action_id.clone(),
                    agent_id: None,
                    what: worked.what.clone(),
                    state: SuggestionState::Skipped,
                    action_id: None,
                    note,
                };
                match mapped(&past.request.action, &files, &shared_hashes, &hosts) {
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

    /// The sha256 values both incidents hold.
    async fn shared_hashes(
        &self,
        incident_id: &str,
        similar: &SimilarIncident,
    ) -> Result<BTreeSet<String>, IncidentError> {
        let theirs: BTreeSet<String> = self
            .store
            .incident_observables(&similar.id)
            .await?
            .into_iter()
            .filter(|o| o.kind == ObservableType::Sha256)
            .map(|o| o.value)
            .collect();
        Ok(self
            .store
            .incident_observables(incident_id)
            .await?
            .into_iter()
            .filter(|o| o.kind == ObservableType::Sha256 && theirs.contains(&o.value))
            .map(|o| o.value)
            .collect())
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
        let id = suggestion_id(incident_id, host, &action);
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
        if self.store.get_action(&id).await?.is_some() {
            return Ok(made(
                SuggestionState::Exists,
                Some(id.clone()),
                format!("proposed before: action {id}"),
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
mod tests {
    use super::*;

    #[test]
    fn the_same_suggestion_has_the_same_id() {
        let block = Action::Block {
            targets: vec!["203.0.113.7".into()],
            ttl_secs: 3600,
        };
        let a = suggestion_id("i1", "h1", &block);
        assert_eq!(a, suggestion_id("i1", "h1", &block));
        assert_ne!(a, suggestion_id("i1", "h2", &block));
        assert_ne!(a, suggestion_id("i2", "h1", &block));
        assert!(a.parse::<uuid::Uuid>().is_ok());
    }

    #[test]
    fn kills_are_not_repeated_blind() {
        let kill = Action::Kill {
            pid: 1,
            start_time_ms: 0,
            tree: false,
        };
        let why = mapped(&kill, &[], &BTreeSet::new(), &["h".into()]).unwrap_err();
        assert!(why.contains("cordon ps"), "{why}");
    }
}
