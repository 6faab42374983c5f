//! `cordon`, the responder CLI. Talks to the controller's API; one module per command group.
//! Tables for people, `--json` for scripts, and exit codes scripts can trust:
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | success |
//! | 1 | any other failure |
//! | 2 | usage or bad input (also clap's own errors) |
//! | 3 | the token was refused (missing, unknown, or lacking the role), or a containment action was (untrusted key, or the agent's refusal) |
//! | 4 | the thing asked about does not exist |
//! | 5 | the controller could not be reached |

pub mod actions;
pub mod agents;
pub mod alerts;
pub mod attach;
pub mod audit;
pub mod client;
pub mod config;
pub mod contain;
pub mod events;
pub mod evidence;
pub mod follow;
pub mod hunt;
pub mod incidents;
pub mod keys;
pub mod netstat;
pub mod observables;
pub mod output;
pub mod playbooks;
pub mod progress;
pub mod quarantined;
pub mod reference;
pub mod resolve;
pub mod signed_read;
pub mod signer;
pub mod ssh_agent;
pub mod tasks;
pub mod tokens;
pub mod watch;
pub mod webhooks;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use cordon_api::tasks::{TaskErrorCode, TaskSpec};
use thiserror::Error;

/// CLI failures, each with its exit code.
#[derive(Debug, Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("refused: {0}")]
    Denied(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("cannot reach the controller: {0}")]
    Unreachable(String),
    /// TLS with the controller failed: trying again will not help.
    #[error("cannot talk to the controller over TLS: {0} (is --ca / CORDON_CA / ca_cert this controller's ca.pem?)")]
    Tls(String),
    #[error("{0}")]
    Other(String),
    /// Whoever read the output stopped reading (`| head`): not a failure.
    #[error("standard output closed")]
    OutputClosed,
}

impl CliError {
    /// The error for a task, action or watch that ended with `code` (`None`: no code was
    /// given), its exit code saying why: 3 when the host refused, 4 when the thing is not
    /// there, 2 when the request itself was at fault.
    pub fn failed_with(code: Option<TaskErrorCode>, text: String) -> Self {
        match code {
            Some(TaskErrorCode::NotFound) => CliError::NotFound(text),
            // A failed check of the signed order, a safety rail, or the agent's own rights.
            Some(
                TaskErrorCode::Unauthorized
                | TaskErrorCode::PolicyDenied
                | TaskErrorCode::PermissionDenied,
            ) => CliError::Denied(text),
            Some(TaskErrorCode::InvalidInput | TaskErrorCode::TooLarge) => CliError::Usage(text),
            _ => CliError::Other(text),
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::OutputClosed => 0,
            CliError::Other(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Denied(_) => 3,
            CliError::NotFound(_) => 4,
            CliError::Unreachable(_) | CliError::Tls(_) => 5,
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "cordon",
    version,
    about = "Cordon responder CLI: see and contain your hosts",
    after_help = "Configuration: --url/--token/--ca, or CORDON_URL/CORDON_TOKEN/CORDON_CA, or a TOML file \
                  (--config, CORDON_CONFIG, ~/.config/cordon/config.toml) with url, token and ca_cert."
)]
pub struct Cli {
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Responder config file.
    #[arg(long, global = true, env = "CORDON_CONFIG")]
    pub config: Option<PathBuf>,
    /// Controller API URL, e.g. https://127.0.0.1:8443
    #[arg(long, global = true, env = "CORDON_URL")]
    pub url: Option<String>,
    /// API bearer token.
    #[arg(long, global = true, env = "CORDON_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The deployment CA certificate (PEM).
    #[arg(long = "ca", global = true, env = "CORDON_CA")]
    pub ca_cert: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Enrolled agents.
    #[command(subcommand)]
    Agents(agents::AgentsCommand),
    /// One-time enrolment tokens.
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// Processes on a host (`--pid N` for one in detail).
    Ps {
        #[command(flatten)]
        target: tasks::Target,
        /// Also hash each executable (SHA-256).
        #[arg(long)]
        hash: bool,
        /// One process in detail: cwd, open files, children.
        #[arg(long)]
        pid: Option<u32>,
        /// With --pid: include its environment.
        #[arg(long, requires = "pid")]
        environment: bool,
    },
    /// TCP and UDP sockets with owning processes, and interfaces (`--pid`, `--port`,
    /// `--state` narrow the sockets and wait for the answer).
    Netstat(netstat::NetstatArgs),
    /// Hostname, OS, kernel, boot time, logged-in users.
    System {
        #[command(flatten)]
        target: tasks::Target,
    },
    /// Files on a host: ls, stat, hash, fetch.
    #[command(subcommand)]
    Files(tasks::FilesCommand),
    /// Processes (with executable hashes), sockets and system facts in one bundle signed by
    /// the agent, kept as evidence.
    Snapshot {
        #[command(flatten)]
        target: tasks::Target,
        /// Also save the bundle (JSON) to this file (implies --wait; never overwrites).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Stored evidence: list, show, get, verify.
    #[command(subcommand)]
    Evidence(evidence::EvidenceCommand),
    /// Collection tasks: show (with --wait), list, cancel.
    #[command(subcommand)]
    Tasks(tasks::TasksCommand),
    /// Watch paths on a host and follow what changes (Ctrl-C stops following, not the watch).
    Watch(watch::WatchArgs),
    /// File watches: list, show, events (--follow), stop.
    #[command(subcommand)]
    Watches(watch::WatchesCommand),
    /// Hunt across all agents (or those with --label): the filters are evaluated on each
    /// agent; with --wait, progress and then the agents that matched.
    Hunt(hunt::HuntArgs),
    /// Hunts: show (with --wait), list.
    #[command(subcommand)]
    Hunts(hunt::HuntsCommand),
    /// The audit log: list entries, verify the hash chain (admin).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Incidents: list, show, create, stage, assign, escalate, severity, comment, close,
    /// hosts add, attach, report.
    #[command(subcommand)]
    Incidents(incidents::IncidentsCommand),
    /// An incident's observables (addresses, hashes, paths, names…): add, list, set, remove.
    #[command(subcommand)]
    Observables(observables::ObservablesCommand),
    /// Alerts: send one (as a SIEM would; it opens or joins an incident), list, show.
    #[command(subcommand)]
    Alerts(alerts::AlertsCommand),
    /// Kill a process (bound to its start time, looked up first), signed with your key.
    Kill(contain::KillArgs),
    /// Move a file into the agent's vault (defanged), signed with your key.
    Quarantine(contain::PathArgs),
    /// Put a quarantined file back (by quarantine id), signed with your key.
    Restore(contain::PathArgs),
    /// What an agent's quarantine vault holds: id, state, original path, SHA-256, size, when,
    /// and the action that quarantined it.
    Quarantined(quarantined::QuarantinedArgs),
    /// Block addresses or CIDRs for --ttl (the kernel lifts the block), signed with your key.
    Block(contain::BlockArgs),
    /// Remove blocks, signed with your key.
    Unblock(contain::UnblockArgs),
    /// Cut the host off (loopback, the controller and the policy allowlist stay) for --ttl,
    /// signed with your key.
    Isolate(contain::IsolateArgs),
    /// End an isolation early, signed with your key.
    Release(contain::ReleaseArgs),
    /// Playbooks: list, show, reload (admin); validate files here without a controller.
    #[command(subcommand)]
    Playbooks(playbooks::PlaybooksCommand),
    /// Add your signature to a pending action that needs more distinct signers.
    Approve(actions::ApproveArgs),
    /// Containment actions: list, show (with --wait).
    #[command(subcommand)]
    Actions(actions::ActionsCommand),
    /// Your signing key: generate, show. Needs no controller.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Outgoing webhooks (admin): add, list, remove, deliveries, test.
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCommand),
    /// Follow live events (incidents, tasks, actions) until Ctrl-C, resuming after a break.
    Events(events::EventsArgs),
    /// Check that the controller answers.
    Health,
}

/// Runs a parsed command and returns what to print.
pub async fn run(cli: Cli) -> Result<String, CliError> {
    // Keys live on this machine only: no controller needed.
    if let Command::Keys(command) = cli.command {
        return keys::run(command, cli.config, cli.json);
    }
    let config_path = cli.config.clone();
    // The health check is the one route that needs no token.
    let needs_token = !matches!(cli.command, Command::Health);
    let settings = config::resolve(cli.url, cli.token, cli.ca_cert, cli.config, needs_token)?;
    let client = client::Client::new(&settings)?;
    match cli.command {
        Command::Keys(_) => Err(CliError::Other("unreachable: keys handled above".into())),
        Command::Kill(args) => contain::kill(&client, args, config_path, cli.json).await,
        Command::Quarantine(args) => {
            contain::quarantine(&client, args, config_path, cli.json).await
        }
        Command::Restore(args) => contain::restore(&client, args, config_path, cli.json).await,
        Command::Block(args) => contain::block(&client, args, config_path, cli.json).await,
        Command::Unblock(args) => contain::unblock(&client, args, config_path, cli.json).await,
        Command::Isolate(args) => contain::isolate(&client, args, config_path, cli.json).await,
        Command::Release(args) => contain::release(&client, args, config_path, cli.json).await,
        Command::Approve(args) => actions::approve(&client, args, config_path, cli.json).await,
        Command::Playbooks(command) => playbooks::run(&client, command, cli.json).await,
        Command::Actions(command) => actions::run(&client, command, cli.json).await,
        Command::Agents(command) => agents::run(&client, command, cli.json).await,
        Command::Tokens(command) => tokens::run(&client, command, cli.json).await,
        Command::Ps {
            target,
            hash,
            pid: None,
            ..
        } => {
            let spec = TaskSpec::Processes { hash_exes: hash };
            tasks::collect(&client, &target, spec, cli.json, tasks::render_processes).await
        }
        Command::Ps {
            target,
            pid: Some(pid),
            environment,
            ..
        } => {
            let spec = TaskSpec::ProcessDetail { pid, environment };
            tasks::collect(
                &client,
                &target,
                spec,
                cli.json,
                tasks::render_process_detail,
            )
            .await
        }
        Command::Netstat(args) => netstat::run(&client, args, cli.json).await,
        Command::Quarantined(args) => quarantined::run(&client, args, cli.json).await,
        Command::System { target } => {
            tasks::collect(
                &client,
                &target,
                TaskSpec::System,
                cli.json,
                tasks::render_system,
            )
            .await
        }
        Command::Files(command) => tasks::run_files(&client, command, config_path, cli.json).await,
        Command::Tasks(command) => tasks::run_tasks(&client, command, cli.json).await,
        Command::Watch(args) => watch::watch(&client, args, cli.json).await,
        Command::Watches(command) => watch::run(&client, command, cli.json).await,
        Command::Snapshot { target, output } => {
            evidence::collect(
                &client,
                &target,
                TaskSpec::Snapshot,
                output.as_deref(),
                cli.json,
            )
            .await
        }
        Command::Evidence(command) => evidence::run(&client, command, cli.json).await,
        Command::Hunt(args) => hunt::run_hunt(&client, args, cli.json).await,
        Command::Hunts(command) => hunt::run_hunts(&client, command, cli.json).await,
        Command::Audit(command) => audit::run(&client, command, cli.json).await,
        Command::Incidents(command) => incidents::run(&client, command, cli.json).await,
        Command::Alerts(command) => alerts::run(&client, command, cli.json).await,
        Command::Observables(command) => observables::run(&client, command, cli.json).await,
        Command::Webhooks(command) => webhooks::run(&client, command, cli.json).await,
        Command::Events(args) => events::run(&client, args, cli.json).await,
        Command::Health => {
            let health: cordon_api::agents::Health = client.get("/api/v1/health").await?;
            Ok(if cli.json {
                output::json(&health)
            } else {
                format!(
                    "{} (version {}, {} agents online)\n",
                    health.status, health.version, health.agents_online
                )
            })
        }
    }
}

/// The `cordon` binary's main.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli).await {
        Ok(out) => {
            let mut text = output::safe(&out, json).into_owned();
            // Commands that stream (e.g. `watch`) have printed already and return nothing.
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            match output::emit(&text) {
                Ok(()) | Err(CliError::OutputClosed) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(e.exit_code())
                }
            }
        }
        Err(CliError::OutputClosed) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                let body =
                    serde_json::json!({ "error": e.to_string(), "exit_code": e.exit_code() });
                let _ = output::emit(&format!("{}\n", output::json_terminal(&body.to_string())));
            }
            eprintln!("error: {}", output::terminal(&e.to_string()));
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_s_code_picks_its_exit_code() {
        let exit = |code| CliError::failed_with(code, "x".into()).exit_code();
        assert_eq!(exit(Some(TaskErrorCode::PolicyDenied)), 3);
        assert_eq!(exit(Some(TaskErrorCode::Unauthorized)), 3);
        assert_eq!(exit(Some(TaskErrorCode::PermissionDenied)), 3);
        assert_eq!(exit(Some(TaskErrorCode::NotFound)), 4);
        assert_eq!(exit(Some(TaskErrorCode::InvalidInput)), 2);
        assert_eq!(exit(Some(TaskErrorCode::Integrity)), 1);
        assert_eq!(exit(None), 1);
    }
}
