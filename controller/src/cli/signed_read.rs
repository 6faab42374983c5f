//! Signing a fetch for a host whose policy requires signed reads (`signed_reads = true`): the
//! responder's key signs `{"Fetch": {"path"}}` for that host, and the signature travels with
//! the fetch task. The agent checks it as it checks containment, so neither a stolen API token
//! nor the controller alone reads file contents there.

use std::path::PathBuf;

use cordon_protocol::action::{Action, ActionRequest};

use crate::{
    actions::SubmitAction,
    api::types::AgentView,
    cli::{client::Client, config, keys, tasks::resolve_agent, CliError},
};

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
    let agent_id = resolve_agent(client, agent).await?;
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
    let now = crate::now_ms();
    let lifetime_ms = i64::try_from(valid_for_secs)
        .ok()
        .and_then(|s| s.checked_mul(1000))
        .ok_or_else(|| CliError::Usage("--ttl is too long".into()))?;
    let request = ActionRequest {
        action_id: uuid::Uuid::new_v4(),
        agent_id,
        issued_at_ms: now,
        expires_at_ms: now.saturating_add(lifetime_ms),
        nonce: rand::random(),
        action: Action::Fetch {
            path: path.to_string(),
        },
    };
    let signature = keys::sign(&key, &request)?;
    Ok(Some(SubmitAction {
        request,
        signatures: vec![signature],
    }))
}
