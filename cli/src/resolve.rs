//! What a person types where the CLI wants a thing: a hostname (any case) for an agent, a full
//! id, or a unique prefix of an id or a SHA-256 as the tables print them. The controller's
//! lookup route does the matching; an ambiguous prefix lists its candidates.

use std::collections::HashMap;

use cordon_api::{
    agents::AgentView,
    lookup::{id_prefix, Lookup, LookupKind},
};

use crate::{client::Client, output, CliError};

/// The agent `text` names: its id, a unique id prefix, or a hostname naming one agent.
pub async fn agent(client: &Client, text: &str) -> Result<String, CliError> {
    id(client, LookupKind::Agent, text).await
}

/// Each agent `texts` name, in order.
pub async fn agents(client: &Client, texts: &[String]) -> Result<Vec<String>, CliError> {
    let mut ids = Vec::with_capacity(texts.len());
    for text in texts {
        ids.push(agent(client, text).await?);
    }
    Ok(ids)
}

/// The incident `text` names.
pub async fn incident(client: &Client, text: &str) -> Result<String, CliError> {
    id(client, LookupKind::Incident, text).await
}

/// The one thing of `kind` that `text` names, as its whole id (or SHA-256).
pub async fn id(client: &Client, kind: LookupKind, text: &str) -> Result<String, CliError> {
    let text = text.trim();
    if kind.is_whole(text) {
        return Ok(text.to_ascii_lowercase());
    }
    if kind != LookupKind::Agent && id_prefix(kind, text).is_none() {
        return Err(CliError::NotFound(format!(
            "no {kind} {}: {key}s are made of hex digits{dash}",
            output::escape(text),
            key = kind.key(),
            dash = if kind == LookupKind::Evidence {
                ""
            } else {
                " and -"
            },
        )));
    }
    if text.is_empty() {
        return Err(CliError::Usage("an empty agent hostname or id".into()));
    }
    let lookup: Lookup = client
        .get_query(&format!("/api/v1/lookup/{kind}"), &[("q", text)])
        .await?;
    choose(kind, text, lookup)
}

/// One match, or why not.
fn choose(kind: LookupKind, text: &str, lookup: Lookup) -> Result<String, CliError> {
    let by_hostname: Vec<_> = lookup.matches.iter().filter(|m| m.by_hostname).collect();
    let candidates = if by_hostname.is_empty() {
        lookup.matches.iter().collect()
    } else {
        by_hostname
    };
    match candidates.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => Err(CliError::NotFound(match kind {
            LookupKind::Agent => format!("no agent with hostname {text:?} or an id starting so"),
            _ => format!("no {kind} whose {} starts with {text:?}", kind.key()),
        })),
        many => {
            let what = if many[0].by_hostname {
                format!("hostname {text:?} names {} agents", many.len())
            } else if lookup.more {
                format!(
                    "{text:?} starts more than {} {kind} {}s",
                    many.len(),
                    kind.key()
                )
            } else {
                format!("{text:?} starts {} {kind} {}s", many.len(), kind.key())
            };
            let rows: Vec<String> = many
                .iter()
                .map(|m| format!("  {}  {}", m.id, output::escape(&m.label)))
                .collect();
            Err(CliError::Usage(format!(
                "{what}; give more of the {}:\n{}",
                kind.key(),
                rows.join("\n")
            )))
        }
    }
}

/// Agent ids to hostnames, for the HOST column beside an AGENT column.
pub struct Hostnames(HashMap<String, String>);

impl Hostnames {
    /// Every agent's hostname; none fetched when no row names an agent.
    pub async fn fetch(client: &Client, needed: bool) -> Result<Self, CliError> {
        if !needed {
            return Ok(Self(HashMap::new()));
        }
        let agents: Vec<AgentView> = client.get("/api/v1/agents").await?;
        Ok(Self(
            agents.into_iter().map(|a| (a.id, a.hostname)).collect(),
        ))
    }

    /// The hostname of `agent_id`, or `-` for an agent the controller no longer lists.
    pub fn of(&self, agent_id: &str) -> String {
        self.0.get(agent_id).cloned().unwrap_or_else(|| "-".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_api::lookup::LookupMatch;

    fn found(ids: &[(&str, bool)], more: bool) -> Lookup {
        Lookup {
            kind: LookupKind::Agent,
            query: "x".into(),
            matches: ids
                .iter()
                .map(|(id, by_hostname)| LookupMatch {
                    id: (*id).into(),
                    label: format!("host-{id}"),
                    by_hostname: *by_hostname,
                })
                .collect(),
            more,
        }
    }

    #[test]
    fn one_match_is_the_answer_and_a_hostname_beats_id_prefixes() {
        let one = choose(LookupKind::Task, "ab", found(&[("abc", false)], false));
        assert_eq!(one.ok().as_deref(), Some("abc"));
        let host = found(&[("111", true), ("abc", false), ("abd", false)], false);
        assert_eq!(
            choose(LookupKind::Agent, "ab", host).ok().as_deref(),
            Some("111")
        );
    }

    #[test]
    fn an_ambiguous_prefix_lists_every_candidate_and_none_is_not_found() {
        let many = choose(
            LookupKind::Task,
            "ab",
            found(&[("abc", false), ("abd", false)], true),
        );
        let Err(CliError::Usage(text)) = many else {
            panic!("ambiguous must be a usage error: {many:?}");
        };
        assert!(text.contains("abc") && text.contains("abd") && text.contains("more than 2"));
        let none = choose(LookupKind::Incident, "ff", found(&[], false));
        assert!(matches!(none, Err(CliError::NotFound(t)) if t.contains("incident")));
    }
}
