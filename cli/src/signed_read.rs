//! Signing a fetch for a host whose policy requires signed reads (`signed_reads = true`): the
//! responder's key signs `{"Fetch": {"path"}}` for that host, and the signature travels with
//! the fetch task. The agent checks it as it checks containment, so neither a stolen API token
//! nor the controller alone reads file contents there.

use std::path::PathBuf;

use cordon_protocol::action::Action;

use cordon_api::{actions::SubmitAction, agents::AgentView};

use crate::{client::Client, config, keys, resolve, CliError};

/// How long a fetch signature stays valid: as long as the task may wait for its agent, within
/// what the host's policy lets the key sign.
pub async fn authorization(
    client: &Client,
    agent: &str,
    path: &str,
    key: Option<PathBuf>,
    valid_for_secs: u64,
    config_path: Option<PathBuf>,
) -> Result<Option<SubmitAction>, CliError> {
    let agent_id = resolve::agent(client, agent).await?;
    let view: AgentView = client.get(&format!("/api/v1/agents/{agent_id}")).await?;
    let required = view
        .inventory
        .as_ref()
        .is_some_and(|i| i.action_policy.signed_reads);
    if !required && key.is_none() {
        return Ok(None);
    }
    let key_path = config::signing_key_path(key, config_path).map_err(|e| {
        if required {
            CliError::Usage(format!(
                "agent {agent_id} requires a responder's signature to read file contents \
                 (signed_reads): {e}"
            ))
        } else {
            e
        }
    })?;
    let key = keys::load_signing_key(&key_path)?;
    let action = Action::Fetch {
        path: path.to_string(),
    };
    keys::sign_new(&key, agent_id, action, valid_for_secs).map(Some)
}
