//! `cordon-agent`: enrol this host with a controller, then run.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use cordon_agent::{enroll, identity::DEFAULT_DATA_DIR, AgentConfig};
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
    }
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
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
