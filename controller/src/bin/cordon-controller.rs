//! `cordon-controller`: create a deployment, serve it, or run the whole thing locally.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use cordon_controller::{
    deployment::{self, DataDir, InitOptions},
    server::{self, ServeConfig},
};
use tokio_util::sync::CancellationToken;

const DEFAULT_DATA_DIR: &str = "/var/lib/cordon-controller";

#[derive(Parser)]
#[command(name = "cordon-controller", version, about = "Cordon controller")]
struct Cli {
    /// Log as JSON lines.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a deployment: CA, server certificate, admin token, automation key, store.
    /// Never overwrites anything that exists.
    Init {
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Extra DNS name or IP address for the server certificate (repeatable).
        #[arg(long = "san")]
        server_names: Vec<String>,
        /// Use PostgreSQL (postgres://…) instead of the embedded SQLite file.
        #[arg(long, env = "CORDON_DATABASE_URL")]
        database_url: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Serve agents (mTLS) and the API (HTTPS) until SIGINT or SIGTERM.
    Serve {
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        #[arg(long, default_value = "0.0.0.0:7443")]
        agent_listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:8443")]
        api_listen: SocketAddr,
        /// Overrides the deployment's database.
        #[arg(long, env = "CORDON_DATABASE_URL")]
        database_url: Option<String>,
        /// Seconds between agent heartbeats.
        #[arg(long, default_value_t = 15)]
        heartbeat_secs: u64,
        /// Most agent connections at once.
        #[arg(long, default_value_t = 20_000)]
        max_agents: usize,
    },
    /// Everything on this machine: a deployment in --data-dir, the controller, and a local
    /// agent enrolled and connected. Ctrl-C stops it; running it again reuses it.
    Quickstart {
        #[arg(long, default_value = ".cordon")]
        data_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:7443")]
        agent_listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:8443")]
        api_listen: SocketAddr,
    },
    /// Print the CA fingerprint agents pin at enrolment.
    Fingerprint {
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Print the OpenAPI 3.1 document of the HTTPS API (what `GET /api/v1/openapi.json`
    /// serves), or write it to a file: `openapi --out docs/openapi.json`.
    Openapi {
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Playbook files, checked here without a running controller.
    Playbooks {
        #[command(subcommand)]
        command: PlaybooksCommand,
    },
}

#[derive(Subcommand)]
enum PlaybooksCommand {
    /// Check every `*.toml` playbook in DIR; exit 2 naming each file:line at fault.
    Validate {
        /// Directory of playbooks (default: the data dir's `playbooks/`).
        #[arg(default_value = "/var/lib/cordon-controller/playbooks")]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    match run(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Init {
            data_dir,
            server_names,
            database_url,
            json,
        } => {
            let report = deployment::init(
                &DataDir::new(&data_dir),
                &InitOptions {
                    database_url,
                    server_names,
                },
            )
            .await
            .with_context(|| format!("initialising {}", data_dir.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
                return Ok(ExitCode::SUCCESS);
            }
            if report.created {
                println!("deployment ready in {}", report.data_dir);
            } else {
                println!(
                    "{} is already initialised; nothing changed",
                    report.data_dir
                );
            }
            println!("CA fingerprint: {}", report.ca_fingerprint);
            if let Some(token) = &report.admin_token {
                println!("admin API token (shown once, stored hashed): {token}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            data_dir,
            agent_listen,
            api_listen,
            database_url,
            heartbeat_secs,
            max_agents,
        } => {
            let config = ServeConfig {
                data_dir,
                agent_listen,
                api_listen,
                database_url,
                heartbeat_interval: Duration::from_secs(heartbeat_secs.max(1)),
                max_agents: max_agents.max(1),
            };
            let shutdown = CancellationToken::new();
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            server::run(config, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Quickstart {
            data_dir,
            agent_listen,
            api_listen,
        } => {
            let shutdown = CancellationToken::new();
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            cordon_controller::quickstart::run(
                cordon_controller::quickstart::QuickstartOptions {
                    data_dir,
                    agent_listen,
                    api_listen,
                },
                shutdown,
                |_| {},
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Playbooks {
            command: PlaybooksCommand::Validate { dir, json },
        } => Ok(validate_playbooks(&dir, json)),
        Command::Openapi { out } => {
            let text = cordon_controller::api::routes::openapi_text();
            match out {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Fingerprint { data_dir } => {
            let ca = DataDir::new(&data_dir).load_ca()?;
            println!("{}", ca.fingerprint());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `playbooks validate`: the names of the playbooks in `dir`, or every error (exit 2).
fn validate_playbooks(dir: &std::path::Path, json: bool) -> ExitCode {
    if !dir.is_dir() {
        eprintln!("error: {} is not a directory of playbooks", dir.display());
        return ExitCode::from(2);
    }
    match cordon_controller::playbooks::load_dir(dir) {
        Ok(set) => {
            let names: Vec<&str> = set.playbooks.iter().map(|p| p.name.as_str()).collect();
            if json {
                let report = serde_json::json!({
                    "ok": true,
                    "dir": dir.display().to_string(),
                    "playbooks": names,
                });
                println!("{report:#}");
            } else {
                println!(
                    "ok: {} playbooks in {} ({})",
                    names.len(),
                    dir.display(),
                    names.join(", ")
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: invalid playbooks:\n{e}");
            ExitCode::from(2)
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
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
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
