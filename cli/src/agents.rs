//! `cordon agents list|show|revoke|label`.

use clap::Subcommand;

use cordon_api::agents::{AgentView, SetLabels};

use crate::{client::Client, output, resolve, CliError};

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// List enrolled agents with their status.
    List,
    /// Show one agent: inventory, labels, session.
    Show {
        /// Agent id, a unique prefix of one, or hostname (any case).
        id: String,
    },
    /// Revoke an agent's certificate: it is disconnected and refused at every later handshake.
    Revoke {
        /// Agent id, a unique prefix of one, or hostname (any case).
        id: String,
    },
    /// Replace an agent's labels (used by hunts and playbooks to pick hosts).
    Label {
        /// Agent id, a unique prefix of one, or hostname (any case).
        id: String,
        /// Labels, e.g. `env=prod role=web`. None clears them.
        labels: Vec<String>,
    },
}

pub async fn run(client: &Client, command: AgentsCommand, json: bool) -> Result<String, CliError> {
    match command {
        AgentsCommand::List => {
            let agents: Vec<AgentView> = client.get("/api/v1/agents").await?;
            if json {
                return Ok(output::json(&agents));
            }
            let rows: Vec<Vec<String>> = agents
                .iter()
                .map(|a| {
                    vec![
                        a.id.clone(),
                        a.hostname.clone(),
                        a.status.as_str().to_string(),
                        output::time(a.last_seen_at_ms),
                        a.inventory
                            .as_ref()
                            .map(|i| i.addresses.join(","))
                            .unwrap_or_default(),
                        a.labels.join(","),
                    ]
                })
                .collect();
            Ok(output::table(
                &[
                    "ID",
                    "HOSTNAME",
                    "STATUS",
                    "LAST SEEN",
                    "ADDRESSES",
                    "LABELS",
                ],
                &rows,
            ))
        }
        AgentsCommand::Show { id } => {
            let id = resolve::agent(client, &id).await?;
            let agent: AgentView = client.get(&format!("/api/v1/agents/{}", id)).await?;
            Ok(if json {
                output::json(&agent)
            } else {
                describe(&agent)
            })
        }
        AgentsCommand::Revoke { id } => {
            let id = resolve::agent(client, &id).await?;
            let agent: AgentView = client
                .post(
                    &format!("/api/v1/agents/{}/revoke", id),
                    &serde_json::json!({}),
                )
                .await?;
            Ok(if json {
                output::json(&agent)
            } else {
                format!("agent {} ({}) revoked\n", agent.id, agent.hostname)
            })
        }
        AgentsCommand::Label { id, labels } => {
            let id = resolve::agent(client, &id).await?;
            let agent: AgentView = client
                .put(
                    &format!("/api/v1/agents/{}/labels", id),
                    &SetLabels { labels },
                )
                .await?;
            Ok(if json {
                output::json(&agent)
            } else {
                format!("agent {} labels: {}\n", agent.id, agent.labels.join(", "))
            })
        }
    }
}

fn describe(a: &AgentView) -> String {
    let mut rows = vec![
        vec!["id".to_string(), a.id.clone()],
        vec!["hostname".into(), a.hostname.clone()],
        vec!["status".into(), a.status.as_str().into()],
        vec!["enrolled".into(), output::time(Some(a.enrolled_at_ms))],
        vec!["last seen".into(), output::time(a.last_seen_at_ms)],
        vec!["labels".into(), a.labels.join(", ")],
    ];
    if let Some(peer) = &a.peer {
        rows.push(vec!["connected from".into(), peer.clone()]);
        rows.push(vec![
            "connected since".into(),
            output::time(a.connected_at_ms),
        ]);
    }
    if let Some(t) = a.revoked_at_ms {
        rows.push(vec!["revoked".into(), output::time(Some(t))]);
    }
    if let Some(inv) = &a.inventory {
        rows.push(vec!["os".into(), inv.os.clone()]);
        rows.push(vec!["kernel".into(), inv.kernel.clone()]);
        rows.push(vec!["arch".into(), inv.arch.clone()]);
        rows.push(vec!["addresses".into(), inv.addresses.join(", ")]);
        rows.push(vec!["agent version".into(), inv.agent_version.clone()]);
        rows.push(vec!["booted".into(), output::time(Some(inv.boot_time_ms))]);
    }
    output::table(&["FIELD", "VALUE"], &rows)
}
