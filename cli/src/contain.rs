//! The signing commands — `cordon kill`, `quarantine`, `restore`, `block`, `unblock`,
//! `isolate`, `release`. Each builds the action's envelope here (fresh id and nonce, valid from
//! now for `--ttl`), signs it with the responder's own key ([`crate::keys`]) and submits it;
//! by default it then waits for the agent's receipt ([`crate::actions`] prints it), and
//! `--no-wait` prints the action id instead.

use std::path::PathBuf;

use clap::Args;
use cordon_protocol::{action::Action, collect::ProcessDetail};

use cordon_api::{
    actions::ActionView,
    format::duration as format_duration,
    incidents::LinkKind,
    tasks::{CreateTask, TaskSpec, TaskState, TaskView},
};

use crate::{
    actions::{follow, Wait},
    client::Client,
    config, keys, tasks,
    tokens::parse_duration_secs,
    CliError,
};

/// Options every signing command takes.
#[derive(Debug, Args)]
pub struct Signer {
    /// Agent: hostname, id, or a unique prefix of an id.
    #[arg(long)]
    pub agent: String,
    /// The responder's signing key (default: signing_key in the config file, then
    /// ~/.config/cordon/signing.key).
    #[arg(long, env = "CORDON_SIGNING_KEY")]
    pub key: Option<PathBuf>,
    /// Print the action id and return instead of waiting for the agent's receipt.
    #[arg(long)]
    pub no_wait: bool,
    /// Attach the action to this incident (checked before anything is signed).
    #[arg(long)]
    pub incident: Option<String>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    #[command(flatten)]
    pub signer: Signer,
    #[arg(long)]
    pub pid: u32,
    /// Also kill its descendants (frozen first, so none can fork away; SIGKILL only).
    #[arg(long)]
    pub tree: bool,
    /// The first signal: `kill` (SIGKILL at once) or `term` (SIGTERM, so the process can
    /// clean up, then SIGKILL if it is still running after --grace).
    #[arg(long, value_enum, default_value_t = KillSignal::Kill)]
    pub signal: KillSignal,
    /// With --signal term: how long the process has to end before SIGKILL (1s to 5m).
    #[arg(long, default_value = "10s", value_parser = parse_duration_secs)]
    pub grace: u64,
    /// The process's start time (ms since the epoch); looked up on the agent when not given.
    #[arg(long)]
    pub start_time_ms: Option<i64>,
    /// How long the signed order stays valid (an agent offline longer never runs it).
    #[arg(long, visible_alias = "valid-for", default_value = "5m", value_parser = parse_duration_secs)]
    pub ttl: u64,
}

/// How much longer than the grace a `--signal term` order must stay valid: time to reach the
/// agent and for the process to go after SIGKILL.
const GRACE_MARGIN_SECS: u64 = 60;

/// How `cordon kill` ends a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KillSignal {
    /// SIGKILL at once.
    Kill,
    /// SIGTERM, then SIGKILL after the grace.
    Term,
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

/// `cordon kill`: looks up the process's start time (unless given), then signs and submits.
pub async fn kill(
    client: &Client,
    args: KillArgs,
    config_path: Option<PathBuf>,
    json: bool,
) -> Result<String, CliError> {
    // The agent's own rule, before anything is looked up or signed.
    if args.signal == KillSignal::Term {
        if args.tree {
            return Err(CliError::Usage(
                "--tree kills with SIGKILL only: a tree is frozen first so nothing forks away, \
                 and a frozen process cannot act on SIGTERM"
                    .into(),
            ));
        }
        cordon_protocol::action::check_grace(args.grace)
            .map_err(|why| CliError::Usage(format!("--grace: {why}")))?;
        // The order must outlive the grace, or it expires while the agent still waits.
        if args.grace + GRACE_MARGIN_SECS > args.ttl {
            return Err(CliError::Usage(format!(
                "--grace {} needs an order valid for at least {}: give --ttl {}",
                format_duration(args.grace),
                format_duration(args.grace + GRACE_MARGIN_SECS),
                format_duration(args.grace + GRACE_MARGIN_SECS)
            )));
        }
    }
    let key = signing_key(&args.signer, config_path)?;
    let agent_id = crate::resolve::agent(client, &args.signer.agent).await?;
    let start_time_ms = match args.start_time_ms {
        Some(ms) => ms,
        None => start_time(client, &agent_id, args.pid).await?,
    };
    let action = match args.signal {
        KillSignal::Kill => Action::Kill {
            pid: args.pid,
            start_time_ms,
            tree: args.tree,
        },
        KillSignal::Term => Action::Terminate {
            pid: args.pid,
            start_time_ms,
            grace_secs: args.grace,
        },
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
    let agent_id = crate::resolve::agent(client, &signer.agent).await?;
    submit(client, &key, signer, agent_id, action, valid_for, json).await
}

fn signing_key(
    signer: &Signer,
    config_path: Option<PathBuf>,
) -> Result<keys::ResponderKey, CliError> {
    keys::load_signing_key(&config::signing_key_path(signer.key.clone(), config_path)?)
}

/// Builds the envelope (fresh id and nonce, valid from now for `valid_for` seconds), signs it
/// and submits it; then follows it as asked.
async fn submit(
    client: &Client,
    key: &keys::ResponderKey,
    signer: &Signer,
    agent_id: String,
    action: Action,
    valid_for: u64,
    json: bool,
) -> Result<String, CliError> {
    let incident = crate::attach::check(client, signer.incident.as_deref()).await?;
    let submit = keys::sign_new(key, agent_id, action, valid_for)?;
    let view: ActionView = client.post("/api/v1/actions", &submit).await?;
    crate::attach::attach(client, incident.as_deref(), LinkKind::Action, &view.id).await;
    follow(client, view, Wait::unless(signer.no_wait), json).await
}

/// Parameters the agent would refuse anyway, refused here with exit code 2.
fn check_parameters(action: &Action) -> Result<(), CliError> {
    match action {
        Action::Quarantine { path } if !path.starts_with('/') => Err(CliError::Usage(format!(
            "{path:?}: give the file's absolute path on the host"
        ))),
        // The agent's own rule (cordon_protocol::cidr), before anything is signed.
        Action::Block { targets, .. } | Action::Unblock { targets } => {
            cordon_protocol::cidr::parse_targets(targets)
                .map(|_| ())
                .map_err(CliError::Usage)
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
        return Err(CliError::failed_with(
            task.error.as_ref().map(|e| e.code),
            message,
        ));
    }
    let detail: ProcessDetail = task
        .result
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| CliError::Other(format!("unexpected process detail: {e}")))?
        .ok_or_else(|| CliError::Other("the agent returned no process detail".into()))?;
    Ok(detail.process.start_time_ms)
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
        // What only the agent refused before: host bits set, overlapping targets, none.
        let err = check_parameters(&block("10.0.0.5/24")).unwrap_err();
        assert!(
            err.to_string().contains("did you mean 10.0.0.0/24"),
            "{err}"
        );
        let overlapping = Action::Block {
            targets: vec!["10.0.0.0/8".into(), "10.1.2.3".into()],
            ttl_secs: 60,
        };
        assert!(check_parameters(&overlapping)
            .unwrap_err()
            .to_string()
            .contains("overlap"));
        let none = Action::Unblock { targets: vec![] };
        assert_eq!(check_parameters(&none).unwrap_err().exit_code(), 2);
        let relative = Action::Quarantine {
            path: "tmp/x".into(),
        };
        assert_eq!(check_parameters(&relative).unwrap_err().exit_code(), 2);
    }
}
