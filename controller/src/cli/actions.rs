//! Containment commands — `cordon kill`, `quarantine`, `restore`, `block`, `unblock`,
//! `isolate`, `release` — plus `cordon approve` and `cordon actions`.
//!
//! Each builds the action envelope here (fresh id and nonce, valid from now for `--ttl`), signs
//! it with the responder's own key ([`crate::cli::keys`]) and submits it. By default it then
//! waits for the agent's receipt; `--no-wait` prints the action id instead. An action whose
//! agent asks for more signers than have signed waits as `pending` until `cordon approve`.

use std::{
    io::{BufRead, IsTerminal, Write},
    path::PathBuf,
};

use clap::{Args, Subcommand};
use cordon_protocol::{
    action::{signing_bytes, Action, ActionRequest},
    collect::ProcessDetail,
};

use crate::{
    actions::{ActionView, SignatureSpec, SubmitAction},
    api::types::{CreateTask, TaskSpec, TaskView},
    cli::{client::Client, config, keys, output, tasks, tokens::parse_duration_secs, CliError},
    store::{ActionState, TaskState},
};

/// Options every signing command takes.
#[derive(Debug, Args)]
pub struct Signer {
    /// Agent id or hostname.
    #[arg(long)]
    pub agent: String,
    /// The responder's signing key (default: signing_key in the config file, then
    /// ~/.config/cordon/signing.key).
    #[arg(long, env = "CORDON_SIGNING_KEY")]
    pub key: Option<PathBuf>,
    /// Print the action id and return instead of waiting for the agent's receipt.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    #[command(flatten)]
    pub signer: Signer,
    #[arg(long)]
    pub pid: u32,
    /// Also kill its descendants.
    #[arg(long)]
    pub tree: bool,
    /// The process's start time (ms since the epoch); looked up on the agent when not given.
    #[arg(long)]
    pub start_time_ms: Option<i64>,
    /// How long the signed order stays valid (an agent offline longer never runs it).
    #[arg(long, visible_alias = "valid-for", default_value = "5m", value_parser = parse_duration_secs)]
    pub ttl: u64,
}

/// An action whose only parameters are positional, with a validity.
#[derive(Debug, Args)]
pub struct PathArgs {
    #[command(flatten)]
    pub signer: Signer,
    /// Absolute path of the file (quarantine) or the quarantine id (restore).
    pub target: String,
    /// How long the signed order stays valid (an agent offline longer never runs it).
    #[arg(long, visible_alias = "valid-for", default_value = "5m", value_parser = parse_duration_secs)]
    pub ttl: u64,
}

#[derive(Debug, Args)]
pub struct BlockArgs {
    #[command(flatten)]
    pub signer: Signer,
    /// IPv4/IPv6 addresses or CIDRs.
    #[arg(required = true)]
    pub targets: Vec<String>,
    /// How long the block lasts (the kernel lifts it by itself), e.g. 30m, 1h.
    #[arg(long, value_parser = parse_duration_secs)]
    pub ttl: u64,
    /// How long the signed order stays valid.
    #[arg(long, default_value = "5m", value_parser = parse_duration_secs)]
    pub valid_for: u64,
}

#[derive(Debug, Args)]
pub struct UnblockArgs {
    #[command(flatten)]
    pub signer: Signer,
    /// IPv4/IPv6 addresses or CIDRs.
    #[arg(required = true)]
    pub targets: Vec<String>,
    /// How long the signed order stays valid.
    #[arg(long, visible_alias = "valid-for", default_value = "5m", value_parser = parse_duration_secs)]
    pub ttl: u64,
}

#[derive(Debug, Args)]
pub struct IsolateArgs {
    #[command(flatten)]
    pub signer: Signer,
    /// How long the isolation lasts (always limited; the kernel enforces it), e.g. 30m.
    #[arg(long, value_parser = parse_duration_secs)]
    pub ttl: u64,
    /// How long the signed order stays valid.
    #[arg(long, default_value = "5m", value_parser = parse_duration_secs)]
    pub valid_for: u64,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    #[command(flatten)]
    pub signer: Signer,
    /// How long the signed order stays valid.
    #[arg(long, visible_alias = "valid-for", default_value = "5m", value_parser = parse_duration_secs)]
    pub ttl: u64,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The pending action's id.
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
        /// Only this agent's (id or hostname).
        #[arg(long)]
        agent: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One action: its request, signers, state and the agent's receipt.
    Show {
        id: String,
        /// Block until it ends.
        #[arg(long)]
        wait: bool,
    },
}

/// `cordon kill`: looks up the process's start time (unless given), then signs and submits.
pub async fn kill(
    client: &Client,
    args: KillArgs,
    config_path: Option<PathBuf>,
    json: bool,
) -> Result<String, CliError> {
    let key = signing_key(&args.signer, config_path)?;
    let agent_id = tasks::resolve_agent(client, &args.signer.agent).await?;
    let start_time_ms = match args.start_time_ms {
        Some(ms) => ms,
        None => start_time(client, &agent_id, args.pid).await?,
    };
    let action = Action::Kill {
        pid: args.pid,
        start_time_ms,
        tree: args.tree,
    };
    submit(client, &key, &args.signer, agent_id, action, args.ttl, json).await
}

/// `cordon quarantine`.
pub async fn quarantine(
    client: &Client,
    args: PathArgs,
    config_path: Option<PathBuf>,
    json: bool,
) -> Result<String, CliError> {
    let action = Action::Quarantine { path: args.target };
    contain(client, &args.signer, action, args.ttl, config_path, json).await
}

/// `cordon restore`.
pub async fn restore(
    client: &Client,
    args: PathArgs,
    config_path: Option<PathBuf>,
    json: bool,
) -> Result<String, CliError> {
    let action = Action::Restore {
        quarantine_id: args.target,
    };
    contain(client, &args.signer, action, args.ttl, config_path, json).await
}

/// `cordon block`.
pub async fn block(
    client: &Client,
    args: BlockArgs,
    config_path: Option<PathBuf>,
    json: bool,
) -> Result<String, CliError> {
    let action = Action::Block {
        targets: args.targets,
        ttl_secs: args.ttl,
    };
    contain(
        client,
        &args.signer,
        action,
        args.valid_for,
        config_path,
        json,
    )
    .await
}

/// `cordon unblock`.
pub async fn unblock(
    client: &Client,
    args: UnblockArgs,
    config_path: Option<PathBuf>,
    json: bool,
) -> Result<String, CliError> {
    let action = Action::Unblock {
        targets: args.targets,
    };
    contain(client, &args.signer, action, args.ttl, config_path, json).await
}

/// `cordon isolate`.
pub async fn isolate(
    client: &Client,
    args: IsolateArgs,
    config_path: Option<PathBuf>,
    json: bool,
) -> Result<String, CliError> {
    let action = Action::Isolate { ttl_secs: args.ttl };
    contain(
        client,
        &args.signer,
        action,
        args.valid_for,
        config_path,
        json,
    )
    .await
}

/// `cordon release`.
pub async fn release(
    client: &Client,
    args: ReleaseArgs,
    config_path: Option<PathBuf>,
    json: bool,
) -> Result<String, CliError> {
    contain(
        client,
        &args.signer,
        Action::Release,
        args.ttl,
        config_path,
        json,
    )
    .await
}

/// The signing commands other than kill: checks, signs and submits `action`.
async fn contain(
    client: &Client,
    signer: &Signer,
    action: Action,
    valid_for: u64,
    config_path: Option<PathBuf>,
    json: bool,
) -> Result<String, CliError> {
    check_parameters(&action)?;
    let key = signing_key(signer, config_path)?;
    let agent_id = tasks::resolve_agent(client, &signer.agent).await?;
    submit(client, &key, signer, agent_id, action, valid_for, json).await
}

/// `cordon approve`: shows the pending request, signs exactly it, and adds the signature.
pub async fn approve(
    client: &Client,
    args: ApproveArgs,
    config_path: Option<PathBuf>,
    json: bool,
) -> Result<String, CliError> {
    let key = keys::load_signing_key(&config::signing_key_path(args.key, config_path)?)?;
    let view: ActionView = client.get(&format!("/api/v1/actions/{}", args.id)).await?;
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
    out.push_str(&follow(client, approved, args.no_wait, json).await?);
    Ok(out)
}

/// `cordon actions list|show`.
pub async fn run(client: &Client, command: ActionsCommand, json: bool) -> Result<String, CliError> {
    match command {
        ActionsCommand::Show { id, wait } => {
            let view: ActionView = client.get(&format!("/api/v1/actions/{id}")).await?;
            follow(client, view, !wait, json).await
        }
        ActionsCommand::List { agent, limit } => {
            let mut path = format!("/api/v1/actions?limit={limit}");
            if let Some(agent) = agent {
                path.push_str(&format!(
                    "&agent_id={}",
                    tasks::resolve_agent(client, &agent).await?
                ));
            }
            let views: Vec<ActionView> = client.get(&path).await?;
            if json {
                return Ok(output::json(&views));
            }
            let rows: Vec<Vec<String>> = views
                .iter()
                .map(|v| {
                    vec![
                        v.id.clone(),
                        v.agent_id.clone(),
                        v.kind.clone(),
                        v.state.as_str().to_string(),
                        format!("{}/{}", v.signatures.len(), v.required_signers),
                        output::time(Some(v.created_at_ms)),
                        v.created_by.clone(),
                    ]
                })
                .collect();
            Ok(output::table(
                &["ID", "AGENT", "KIND", "STATE", "SIGNED", "CREATED", "BY"],
                &rows,
            ))
        }
    }
}

fn signing_key(
    signer: &Signer,
    config_path: Option<PathBuf>,
) -> Result<ed25519_dalek::SigningKey, CliError> {
    keys::load_signing_key(&config::signing_key_path(signer.key.clone(), config_path)?)
}

/// Builds the envelope (fresh id and nonce, valid from now for `valid_for` seconds), signs it
/// and submits it; then follows it as asked.
async fn submit(
    client: &Client,
    key: &ed25519_dalek::SigningKey,
    signer: &Signer,
    agent_id: String,
    action: Action,
    valid_for: u64,
    json: bool,
) -> Result<String, CliError> {
    let now = crate::now_ms();
    let lifetime_ms = i64::try_from(valid_for)
        .ok()
        .and_then(|s| s.checked_mul(1000))
        .ok_or_else(|| CliError::Usage("--ttl is too long".into()))?;
    let request = ActionRequest {
        action_id: uuid::Uuid::new_v4(),
        agent_id,
        issued_at_ms: now,
        expires_at_ms: now.saturating_add(lifetime_ms),
        nonce: rand::random(),
        action,
    };
    let signature = keys::sign(key, &request)?;
    let view: ActionView = client
        .post(
            "/api/v1/actions",
            &SubmitAction {
                request,
                signatures: vec![signature],
            },
        )
        .await?;
    follow(client, view, signer.no_wait, json).await
}

/// Prints an action; unless `no_wait`, first waits for a submitted one to end. A failed action
/// is an error whose exit code says why (3 when the agent refused it).
async fn follow(
    client: &Client,
    mut view: ActionView,
    no_wait: bool,
    json: bool,
) -> Result<String, CliError> {
    if !no_wait {
        while view.state == ActionState::Submitted {
            view = client
                .get(&format!("/api/v1/actions/{}?wait=60", view.id))
                .await?;
        }
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
            receipt.agent_public_key.get(..16).unwrap_or(&receipt.agent_public_key),
            output::time(Some(receipt.at_ms)),
            receipt.before,
            receipt.done,
            receipt.after
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
    Some(match code {
        // The agent refused: a failed check of the signed envelope, or a safety rail.
        "unauthorized" | "policy_denied" => CliError::Denied(text),
        "not_found" => CliError::NotFound(text),
        "invalid_input" => CliError::Usage(text),
        _ => CliError::Other(text),
    })
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

/// An action in a few words.
pub fn what(action: &Action) -> String {
    match action {
        Action::Kill {
            pid,
            start_time_ms,
            tree,
        } => format!(
            "kill pid {pid}{} (started {})",
            if *tree { " and its descendants" } else { "" },
            output::time(Some(*start_time_ms))
        ),
        Action::Quarantine { path } => format!("quarantine {path}"),
        Action::Restore { quarantine_id } => format!("restore quarantined file {quarantine_id}"),
        Action::Block { targets, ttl_secs } => {
            format!("block {} for {}", targets.join(", "), duration(*ttl_secs))
        }
        Action::Unblock { targets } => format!("unblock {}", targets.join(", ")),
        Action::Isolate { ttl_secs } => format!("isolate the host for {}", duration(*ttl_secs)),
        Action::Release => "release the host's isolation".into(),
    }
}

fn duration(secs: u64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Parameters the agent would refuse anyway, refused here with exit code 2.
fn check_parameters(action: &Action) -> Result<(), CliError> {
    let address = |t: &String| {
        let (ip, len) = t
            .split_once('/')
            .map_or((t.as_str(), None), |(a, l)| (a, Some(l)));
        let ip: std::net::IpAddr = ip.parse().ok()?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        match len {
            None => Some(()),
            Some(l) => l.parse::<u8>().ok().filter(|l| *l <= max).map(|_| ()),
        }
    };
    match action {
        Action::Quarantine { path } if !path.starts_with('/') => Err(CliError::Usage(format!(
            "{path:?}: give the file's absolute path on the host"
        ))),
        Action::Block { targets, .. } | Action::Unblock { targets } => {
            match targets.iter().find(|t| address(t).is_none()) {
                Some(bad) => Err(CliError::Usage(format!(
                    "{bad:?} is not an IPv4/IPv6 address or CIDR"
                ))),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// The start time of `pid` on the agent, from a `process_detail` task.
async fn start_time(client: &Client, agent_id: &str, pid: u32) -> Result<i64, CliError> {
    let created: TaskView = client
        .post(
            "/api/v1/tasks",
            &CreateTask {
                agent_id: agent_id.to_string(),
                task: TaskSpec::ProcessDetail {
                    pid,
                    environment: false,
                },
                ttl_secs: Some(60),
            },
        )
        .await?;
    let task = tasks::wait(client, &created.id).await?;
    if task.state != TaskState::Done {
        let error = task
            .error
            .as_ref()
            .map(|e| format!("{}: {}", e.code, e.message))
            .unwrap_or_else(|| task.state.as_str().to_string());
        let message = format!("cannot read the start time of pid {pid} on agent {agent_id}: {error} (pass --start-time-ms to give it)");
        return Err(match task.error.as_ref().map(|e| e.code.as_str()) {
            Some("not_found") => CliError::NotFound(message),
            _ => CliError::Other(message),
        });
    }
    let detail: ProcessDetail = task
        .result
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| CliError::Other(format!("unexpected process detail: {e}")))?
        .ok_or_else(|| CliError::Other("the agent returned no process detail".into()))?;
    Ok(detail.process.start_time_ms)
}

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
    use super::*;

    #[test]
    fn parameters_the_agent_would_refuse_are_refused_first() {
        let block = |t: &str| Action::Block {
            targets: vec![t.into()],
            ttl_secs: 60,
        };
        assert!(check_parameters(&block("203.0.113.7")).is_ok());
        assert!(check_parameters(&block("2001:db8::/32")).is_ok());
        assert!(check_parameters(&block("10.0.0.0/33")).is_err());
        assert!(check_parameters(&block("example.org")).is_err());
        let relative = Action::Quarantine {
            path: "tmp/x".into(),
        };
        assert_eq!(check_parameters(&relative).unwrap_err().exit_code(), 2);
    }

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
