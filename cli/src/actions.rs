//! `cordon approve` and `cordon actions`, and how every containment command shows an action:
//! who signed it, its state, and the agent's receipt — or, for one that failed, an error whose
//! exit code says why (3 when the agent refused it). The signing commands themselves are in
//! [`crate::contain`]. An action whose agent asks for more distinct signers than have
//! signed waits as `pending` until `cordon approve` adds another key's signature.

use std::{
    io::{BufRead, IsTerminal, Write},
    path::PathBuf,
};

use clap::{Args, Subcommand};
use cordon_protocol::action::signing_bytes;

use cordon_api::{
    actions::{ActionState, ActionView, SignatureSpec},
    lookup::LookupKind,
};

use crate::{
    client::Client,
    config,
    follow::{self, Backoff},
    keys, output, resolve, CliError,
};

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The pending action's id, or a unique prefix of it.
    pub id: String,
    /// The approver's signing key (default: signing_key in the config file).
    #[arg(long, env = "CORDON_SIGNING_KEY")]
    pub key: Option<PathBuf>,
    /// Do not ask for confirmation (asked only when stdin is a terminal).
    #[arg(long, short)]
    pub yes: bool,
    /// Return once approved instead of waiting for the agent's receipt.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum ActionsCommand {
    /// Recent actions, newest first.
    List {
        /// Only this agent's (id, id prefix or hostname).
        #[arg(long)]
        agent: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One action: its request, signers, state and the agent's receipt.
    Show {
        /// The id, or a unique prefix of it.
        id: String,
        /// Block until it ends: while it awaits more signatures (until it expires), then while
        /// its agent runs it.
        #[arg(long)]
        wait: bool,
    },
}

/// `cordon approve`: shows the pending request, signs exactly it, and adds the signature.
pub async fn approve(
    client: &Client,
    args: ApproveArgs,
    config_path: Option<PathBuf>,
    json: bool,
) -> Result<String, CliError> {
    let key = keys::load_signing_key(&config::signing_key_path(args.key, config_path)?)?;
    let id = resolve::id(client, LookupKind::Action, &args.id).await?;
    let view: ActionView = client.get(&format!("/api/v1/actions/{id}")).await?;
    if view.state != ActionState::Pending {
        return Err(CliError::Usage(format!(
            "action {} is {}: there is nothing to approve",
            view.id,
            view.state.as_str()
        )));
    }
    // Sign what the request says, recomputed here, never bytes the controller hands over.
    let bytes = signing_bytes(&view.request)
        .map_err(|e| CliError::Other(format!("encoding the request: {e}")))?;
    if hex::encode(&bytes) != view.signing_bytes || view.request.action_id.to_string() != view.id {
        return Err(CliError::Other(format!(
            "action {}: the controller's copy of the request does not match what it asks to sign; not signing",
            view.id
        )));
    }
    let my_id = keys::id_of(&key);
    if view.signatures.iter().any(|s| s.key_id == my_id) {
        return Err(CliError::Usage(format!(
            "key {my_id} already signed action {}; it counts once: another trusted key must approve it",
            view.id
        )));
    }
    let summary = describe(&view);
    if !args.yes && std::io::stdin().is_terminal() && !confirm(&summary)? {
        return Err(CliError::Other("not approved".into()));
    }
    let spec: SignatureSpec = keys::sign(&key, &view.request)?;
    let approved: ActionView = client
        .post(&format!("/api/v1/actions/{}/signatures", view.id), &spec)
        .await?;
    let mut out = if json {
        String::new()
    } else {
        format!("approved with key {my_id}:\n{summary}")
    };
    out.push_str(&follow(client, approved, Wait::unless(args.no_wait), json).await?);
    Ok(out)
}

/// `cordon actions list|show`.
pub async fn run(client: &Client, command: ActionsCommand, json: bool) -> Result<String, CliError> {
    match command {
        ActionsCommand::Show { id, wait } => {
            let id = resolve::id(client, LookupKind::Action, &id).await?;
            let view: ActionView = client.get(&format!("/api/v1/actions/{id}")).await?;
            let wait = if wait { Wait::End } else { Wait::No };
            follow(client, view, wait, json).await
        }
        ActionsCommand::List { agent, limit } => {
            let mut path = format!("/api/v1/actions?limit={limit}");
            if let Some(agent) = agent {
                path.push_str(&format!(
                    "&agent_id={}",
                    resolve::agent(client, &agent).await?
                ));
            }
            let views: Vec<ActionView> = client.get(&path).await?;
            if json {
                return Ok(output::json(&views));
            }
            let hosts = resolve::Hostnames::fetch(client, !views.is_empty()).await?;
            let rows: Vec<Vec<String>> = views
                .iter()
                .map(|v| {
                    vec![
                        v.id.clone(),
                        v.agent_id.clone(),
                        hosts.of(&v.agent_id),
                        v.kind.clone(),
                        v.state.as_str().to_string(),
                        format!("{}/{}", v.signatures.len(), v.required_signers),
                        output::time(Some(v.created_at_ms)),
                        v.created_by.clone(),
                    ]
                })
                .collect();
            Ok(output::table(
                &[
                    "ID", "AGENT", "HOSTNAME", "KIND", "STATE", "SIGNED", "CREATED", "BY",
                ],
                &rows,
            ))
        }
    }
}

/// How long [`follow`] waits before it prints an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Print it as it is.
    No,
    /// Wait while it is with its agent (signed and sent), not while it awaits signatures.
    Submitted,
    /// Wait until it ends, through `pending` too (another responder's approval).
    End,
}

impl Wait {
    /// [`Wait::Submitted`], or [`Wait::No`] with `--no-wait`.
    pub(crate) fn unless(no_wait: bool) -> Self {
        if no_wait {
            Wait::No
        } else {
            Wait::Submitted
        }
    }

    fn waits_on(self, state: ActionState) -> bool {
        match self {
            Wait::No => false,
            Wait::Submitted => state == ActionState::Submitted,
            Wait::End => matches!(state, ActionState::Submitted | ActionState::Pending),
        }
    }
}

/// Prints an action, once it is past what `wait` waits for (through controller restarts). A
/// failed action is an error whose exit code says why (3 when the agent refused it).
pub(crate) async fn follow(
    client: &Client,
    mut view: ActionView,
    wait: Wait,
    json: bool,
) -> Result<String, CliError> {
    let mut backoff = Backoff::new();
    let path = format!("/api/v1/actions/{}?wait=60", view.id);
    let mut told = false;
    while wait.waits_on(view.state) {
        if view.state == ActionState::Pending && !told {
            told = true;
            eprintln!(
                "action {} has {} of {} required signatures; waiting until {} for another \
                 responder to approve it (cordon approve {})",
                view.id,
                view.signatures.len(),
                view.required_signers,
                output::time(Some(view.request.expires_at_ms)),
                view.id
            );
        }
        view = follow::get(client, &path, &mut backoff).await?;
    }
    if let Some(err) = failure(&view) {
        return Err(err);
    }
    if json {
        return Ok(output::json(&view));
    }
    let mut out = describe(&view);
    match view.state {
        ActionState::Pending => out.push_str(&format!(
            "pending: {} of {} required distinct signers; another responder approves it with:\n  cordon approve {}\n",
            view.signatures.len(),
            view.required_signers,
            view.id
        )),
        ActionState::Submitted => out.push_str(&format!(
            "submitted; follow it with: cordon actions show {} --wait\n",
            view.id
        )),
        _ => {}
    }
    if let Some(receipt) = &view.receipt {
        out.push_str(&format!(
            "receipt, signed by the agent (key {}) at {}:\n  before: {}\n  done:   {}\n  after:  {}\n",
            output::escape(receipt.agent_public_key.get(..16).unwrap_or(&receipt.agent_public_key)),
            output::time(Some(receipt.at_ms)),
            // The agent's words: one line each, escaped.
            output::escape(receipt.before.get()),
            output::escape(&receipt.done),
            output::escape(receipt.after.get())
        ));
    }
    Ok(out)
}

/// The error for an action that failed or expired; `None` otherwise.
fn failure(view: &ActionView) -> Option<CliError> {
    if !matches!(view.state, ActionState::Failed | ActionState::Expired) {
        return None;
    }
    let (code, message) = view
        .error
        .as_ref()
        .map(|e| (e.code.as_str(), e.message.as_str()))
        .unwrap_or((view.state.as_str(), ""));
    let text = format!(
        "action {} ({} on agent {}) {}: {code}: {message}",
        view.id,
        view.kind,
        view.agent_id,
        view.state.as_str()
    );
    Some(CliError::failed_with(
        view.error.as_ref().map(|e| e.code),
        text,
    ))
}

/// Who signed what, for people.
fn describe(view: &ActionView) -> String {
    let r = &view.request;
    let signers: Vec<String> = view
        .signatures
        .iter()
        .map(|s| format!("{} (key {})", s.signer, s.key_id))
        .collect();
    format!(
        "action {}: {} on agent {}: {}\n  valid {} to {}; signed by {}\n",
        view.id,
        what(&r.action),
        view.agent_id,
        view.state.as_str(),
        output::time(Some(r.issued_at_ms)),
        output::time(Some(r.expires_at_ms)),
        if signers.is_empty() {
            "nobody".into()
        } else {
            signers.join(", ")
        }
    )
}

pub use cordon_api::format::what;

/// Asks on the terminal; true for yes.
fn confirm(summary: &str) -> Result<bool, CliError> {
    let mut err = std::io::stderr();
    let _ = write!(err, "{summary}approve and sign this action? [y/N] ");
    let _ = err.flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::Other(format!("reading the answer: {e}")))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

#[cfg(test)]
mod tests {
    use cordon_protocol::action::Action;

    use super::*;

    #[test]
    fn actions_read_as_sentences() {
        assert_eq!(
            what(&Action::Block {
                targets: vec!["192.0.2.1".into()],
                ttl_secs: 3600
            }),
            "block 192.0.2.1 for 1h"
        );
        assert_eq!(
            what(&Action::Isolate { ttl_secs: 1800 }),
            "isolate the host for 30m"
        );
    }
}
