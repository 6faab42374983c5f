//! `cordon quarantined --agent A`: what an agent's quarantine vault holds, as the agent's own
//! manifests say — id, state, original path, hash, size, when — and which action put each item
//! there (from the receipts the controller keeps).

use std::collections::HashMap;

use clap::Args;
use cordon_api::{
    actions::ActionView,
    tasks::{TaskSpec, TaskState},
};
use cordon_protocol::collect::{VaultItem, VaultListing};
use serde::Serialize;

use crate::{
    client::{path_segment, Client},
    output, tasks, CliError,
};

#[derive(Debug, Args)]
pub struct QuarantinedArgs {
    /// Agent: hostname, id, or a unique prefix of an id.
    #[arg(long)]
    pub agent: String,
    /// How long to wait for an offline agent to answer, e.g. 10m, 1h.
    #[arg(long, default_value = "10m", value_parser = crate::tokens::parse_duration_secs)]
    pub ttl: u64,
}

/// One vault item with the action that quarantined it, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Listed<'a> {
    #[serde(flatten)]
    item: &'a VaultItem,
    /// The quarantine action whose receipt names this item; `None` when the controller has no
    /// such receipt (e.g. quarantined through another controller, or long ago).
    action_id: Option<&'a str>,
}

/// Asks the agent for its vault and prints it, waiting for the answer.
pub async fn run(client: &Client, args: QuarantinedArgs, json: bool) -> Result<String, CliError> {
    let target = tasks::Target {
        agent: args.agent,
        wait: true,
        ttl: args.ttl,
        incident: None,
    };
    let created = tasks::queue(client, &target, TaskSpec::Quarantined).await?;
    let done = tasks::wait(client, &created.id).await?;
    if done.state != TaskState::Done {
        return tasks::finish(&done, json, |_| Ok(String::new()));
    }
    let listing: VaultListing = tasks::parse(done.result.clone().unwrap_or_default())?;
    let by_action = quarantining_actions(client, &done.agent_id).await?;
    let listed: Vec<Listed> = listing
        .items
        .iter()
        .map(|item| Listed {
            item,
            action_id: by_action.get(&item.id).map(String::as_str),
        })
        .collect();
    if json {
        return Ok(output::json(&listed));
    }
    if listed.is_empty() {
        return Ok(format!("the vault of agent {} is empty\n", done.agent_id));
    }
    let rows: Vec<Vec<String>> = listed
        .iter()
        .map(|l| {
            vec![
                l.item.id.clone(),
                l.item.state.as_str().to_owned(),
                l.item.original_path.clone(),
                l.item.sha256.clone().unwrap_or_else(|| "-".into()),
                l.item.size.to_string(),
                output::time(Some(l.item.quarantined_at_ms)),
                l.action_id.unwrap_or("-").to_owned(),
            ]
        })
        .collect();
    let mut out = output::table(
        &[
            "ID",
            "STATE",
            "ORIGINAL PATH",
            "SHA256",
            "SIZE",
            "QUARANTINED",
            "ACTION",
        ],
        &rows,
    );
    if listing.truncated {
        out.push_str(&format!(
            "(the oldest {} items; the vault holds more)\n",
            listing.items.len()
        ));
    }
    Ok(out)
}

/// Quarantine id → the id of the action whose receipt says it put that item in the vault,
/// over the agent's most recent actions.
async fn quarantining_actions(
    client: &Client,
    agent_id: &str,
) -> Result<HashMap<String, String>, CliError> {
    let actions: Vec<ActionView> = client
        .get(&format!(
            "/api/v1/actions?agent_id={}&limit=1000",
            path_segment(agent_id)?
        ))
        .await?;
    Ok(actions
        .into_iter()
        .filter(|a| a.kind == "quarantine")
        .filter_map(|a| {
            let after: serde_json::Value = serde_json::from_str(a.receipt?.after.get()).ok()?;
            let id = after.get("quarantine_id")?.as_str()?.to_owned();
            Some((id, a.id))
        })
        .collect())
}
