//! `cordon-agent`: enrol this host with a controller, decide which keys it trusts, then run.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use cordon_agent::{enroll, identity::DEFAULT_DATA_DIR, trust, AgentConfig};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "cordon-agent", version, about = "Cordon endpoint agent")]
struct Cli {
    /// Log as JSON lines.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enrol this host: make a key here, get a certificate from the controller.
    Enroll {
        /// Where the agent keeps its key, certificate and state.
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// The controller's agent listener, HOST:PORT.
        #[arg(long)]
        controller: String,
        /// SHA-256 of the controller's CA certificate, as `cordon tokens create` prints it.
        #[arg(long)]
        ca_fingerprint: String,
        /// One-time enrolment token (`cordon tokens create`). Also read from CORDON_ENROLL_TOKEN.
        #[arg(long, env = "CORDON_ENROLL_TOKEN", hide_env_values = true)]
        token: String,
    },
    /// Connect to the controller and serve tasks until SIGINT or SIGTERM.
    Run {
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Dial this HOST:PORT instead of the address recorded at enrolment.
        #[arg(long)]
        controller: Option<String>,
        /// Most tasks running at once.
        #[arg(long, default_value_t = 8)]
        max_tasks: usize,
    },
    /// Manage the keys this agent trusts to sign containment actions (DATA_DIR/policy.toml).
    Trust {
        #[command(subcommand)]
        command: TrustCommand,
    },
}

#[derive(Subcommand)]
enum TrustCommand {
    /// Trust a public key (64 hex digits, or a PUBLIC KEY PEM) for some actions.
    Add {
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// The signer's public key file, as `cordon keys generate` writes it.
        #[arg(long)]
        public_key: PathBuf,
        /// Actions it may sign: kill,quarantine,restore,block,unblock,isolate,release, or all.
        #[arg(long)]
        actions: String,
        /// Longest lifetime it may give an action, and longest block/isolate TTL (e.g. 1h).
        #[arg(long)]
        max_ttl: Option<String>,
        /// A label for people; defaults to the key file's name.
        #[arg(long)]
        name: Option<String>,
    },
    /// List the trusted keys.
    List {
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Stop trusting a key.
    Remove {
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// The key id `trust list` shows.
        key_id: String,
    },
    /// Require this many distinct signers for an action (M-of-N); 1 means any one.
    Require {
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        #[arg(long)]
        action: String,
        #[arg(long)]
        signers: u32,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Enroll {
            data_dir,
            controller,
            ca_fingerprint,
            token,
        } => {
            let file = enroll::enroll(&enroll::EnrollOptions {
                data_dir: data_dir.clone(),
                controller,
                ca_fingerprint,
                token,
            })
            .await
            .context("enrolment failed")?;
            println!("enrolled as agent {}", file.agent_id);
            println!(
                "start it with: cordon-agent run --data-dir {}",
                data_dir.display()
            );
            Ok(())
        }
        Command::Run {
            data_dir,
            controller,
            max_tasks,
        } => {
            let mut config = AgentConfig::new(data_dir);
            config.controller_override = controller;
            config.max_concurrent_tasks = max_tasks.max(1);
            let shutdown = CancellationToken::new();
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            cordon_agent::run(config, shutdown).await?;
            Ok(())
        }
        Command::Trust { command } => {
            println!("{}", run_trust(command)?);
            Ok(())
        }
    }
}

fn run_trust(command: TrustCommand) -> anyhow::Result<String> {
    Ok(match command {
        TrustCommand::Add {
            data_dir,
            public_key,
            actions,
            max_ttl,
            name,
        } => trust::add(
            &data_dir,
            &trust::AddOptions {
                public_key_file: &public_key,
                actions: &actions,
                max_ttl: max_ttl.as_deref(),
                name: name.as_deref(),
            },
        )?,
        TrustCommand::List { data_dir, json } => trust::list(&data_dir, json)?,
        TrustCommand::Remove { data_dir, key_id } => trust::remove(&data_dir, &key_id)?,
        TrustCommand::Require {
            data_dir,
            action,
            signers,
        } => trust::require(&data_dir, &action, signers)?,
    })
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only for a person at a terminal, never into a file or a journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
