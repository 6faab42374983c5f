//! `cordon-loadgen`: many simulated agents from one process, each enrolled with a real
//! certificate and holding a real mTLS session: hello, heartbeats, and answers to tasks. Prints
//! how long the fleet took to connect and, given the controller's pid, the controller's memory
//! and CPU while it holds them.
//!
//! ```text
//! cordon-loadgen --agents 1000 --controller 127.0.0.1:7443 --responder-config .cordon/responder.toml \
//!     --state-dir /tmp/fleet --hold 60 --controller-pid $(pgrep -f 'cordon-controller serve')
//! ```

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use clap::Parser;
use cordon_protocol::{
    connection::Connection,
    hello::{decode_hello, ControllerHello, HelloOutcome},
    message::{
        AgentMessage, ControllerMessage, TaskError, TaskErrorCode, TaskKind, TaskOutput, TaskResult,
    },
};
use cordon_tests::procstat;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "cordon-loadgen",
    about = "Simulated Cordon agents over real mTLS"
)]
struct Args {
    /// How many simulated agents.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// The controller's agent listener.
    #[arg(long, default_value = "127.0.0.1:7443")]
    controller: String,
    /// Responder config (url, token, ca_cert) used to create enrolment tokens.
    #[arg(long)]
    responder_config: PathBuf,
    /// Where simulated agents' keys and certificates are kept between runs.
    #[arg(long)]
    state_dir: PathBuf,
    /// Seconds to hold the fleet connected after the last one is online.
    #[arg(long, default_value_t = 30)]
    hold: u64,
    /// Controller process id, to report its memory and CPU.
    #[arg(long)]
    controller_pid: Option<u32>,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    enrol_missing(&args).await?;
    println!(
        "fleet: {} enrolled agents in {}",
        args.agents,
        args.state_dir.display()
    );

    let shutdown = CancellationToken::new();
    let online = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let limit = Arc::new(Semaphore::new(args.concurrency));
    let started = Instant::now();
    let mut sessions = tokio::task::JoinSet::new();
    for i in 0..args.agents {
        let dir = agent_dir(&args.state_dir, i);
        let controller = args.controller.clone();
        let (online, failed, limit, shutdown) = (
            online.clone(),
            failed.clone(),
            limit.clone(),
            shutdown.clone(),
        );
        sessions.spawn(async move {
            if let Err(e) = simulate(&dir, &controller, &online, &limit, &shutdown).await {
                if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("agent {i}: {e:#}");
                }
            }
        });
    }
    loop {
        let (up, down) = (
            online.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed),
        );
        if up + down >= args.agents {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!(
                "only {up} of {} agents online after 10 minutes",
                args.agents
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connect_time = started.elapsed();
    println!(
        "online: {} of {} in {:.2} s ({} failed)",
        online.load(Ordering::Relaxed),
        args.agents,
        connect_time.as_secs_f64(),
        failed.load(Ordering::Relaxed)
    );

    let before = args.controller_pid.and_then(procstat::sample);
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    let after = args.controller_pid.and_then(procstat::sample);
    if let (Some(b), Some(a)) = (before, after) {
        let cpu_pct = procstat::cpu_percent(&b, &a);
        println!(
            "controller: RSS {:.1} MiB, CPU {:.2} % of a core over {} s idle with {} agents",
            a.rss_kib as f64 / 1024.0,
            cpu_pct,
            args.hold,
            online.load(Ordering::Relaxed)
        );
    }
    if let Some(own) = procstat::sample(std::process::id()) {
        println!("loadgen: RSS {:.1} MiB", own.rss_kib as f64 / 1024.0);
    }
    println!(
        "still online after hold: {}",
        online.load(Ordering::Relaxed)
    );
    shutdown.cancel();
    while sessions.join_next().await.is_some() {}
    Ok(())
}

fn agent_dir(state: &Path, i: usize) -> PathBuf {
    state.join(format!("agent-{i:05}"))
}

/// Enrols the agents that have no identity yet.
async fn enrol_missing(args: &Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.responder_config)
        .with_context(|| format!("reading {}", args.responder_config.display()))?;
    let responder: cordon_controller::cli::config::ResponderConfig = toml::from_str(&text)
        .with_context(|| format!("parsing {}", args.responder_config.display()))?;
    let settings = cordon_controller::cli::config::resolve(
        responder.url,
        responder.token,
        responder.ca_cert,
        None,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let client = cordon_controller::cli::client::Client::new(&settings)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let missing: Vec<usize> = (0..args.agents)
        .filter(|i| !agent_dir(&args.state_dir, *i).join("agent.toml").exists())
        .collect();
    let ca = std::fs::read_to_string(&settings.ca_cert)?;
    let fingerprint = cordon_agent::tls::fingerprint(
        &cordon_agent::pem_cert(&ca).map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    if missing.is_empty() {
        return Ok(());
    }
    println!("enrolling {} agents…", missing.len());
    let started = Instant::now();
    let limit = Arc::new(Semaphore::new(32));
    let client = Arc::new(client);
    let mut jobs = tokio::task::JoinSet::new();
    for i in missing {
        let (client, limit, fingerprint) = (client.clone(), limit.clone(), fingerprint.clone());
        let dir = agent_dir(&args.state_dir, i);
        let controller = args.controller.clone();
        jobs.spawn(async move {
            let _permit = limit.acquire().await?;
            let created: cordon_controller::api::types::EnrollmentTokenCreated = client
                .post(
                    "/api/v1/enrollment-tokens",
                    &cordon_controller::api::types::CreateEnrollmentToken {
                        ttl_secs: 600,
                        note: Some("loadgen".into()),
                    },
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            cordon_agent::enroll::enroll(&cordon_agent::enroll::EnrollOptions {
                data_dir: dir,
                controller,
                ca_fingerprint: fingerprint,
                token: created.token,
            })
            .await?;
            anyhow::Ok(())
        });
    }
    while let Some(job) = jobs.join_next().await {
        job??;
    }
    println!("enrolled in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// One simulated agent: connect (retrying), hello, then heartbeats and task answers.
async fn simulate(
    dir: &Path,
    controller: &str,
    online: &AtomicUsize,
    limit: &Semaphore,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let identity = cordon_agent::identity::AgentDir::new(dir).load()?;
    let agent_id = identity.file.agent_id.clone();
    let tls = cordon_agent::tls::session_config(identity.ca, identity.cert, identity.key)?;
    let connector = tokio_rustls::TlsConnector::from(tls);
    let permit = limit.acquire().await?;
    let tcp = tokio::net::TcpStream::connect(controller)
        .await
        .context("connect")?;
    let stream = connector
        .connect(cordon_agent::tls::controller_name()?, tcp)
        .await
        .context("TLS")?;
    let mut conn = Connection::new(stream);
    let mut hello = cordon_tests::hello_for(&agent_id);
    hello.inventory.agent_version = "loadgen".into();
    conn.send(&hello).await?;
    let frame = conn.recv_frame().await?.context("closed before hello")?;
    let answer: ControllerHello = decode_hello(&frame)?;
    let heartbeat = match answer.outcome {
        HelloOutcome::Accepted {
            heartbeat_interval_ms,
        } => Duration::from_millis(heartbeat_interval_ms.max(100)),
        HelloOutcome::Refused { reason } => bail!("refused: {reason}"),
    };
    drop(permit);
    online.fetch_add(1, Ordering::Relaxed);
    let mut ticker = tokio::time::interval(heartbeat);
    let mut seq = 0;
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = ticker.tick() => {
                seq += 1;
                if let Err(e) = conn.send(&AgentMessage::Heartbeat { seq }).await { break Err(e.into()); }
            }
            message = conn.recv::<ControllerMessage>() => match message {
                Ok(Some(ControllerMessage::Task(task))) => {
                    let outcome = match task.kind {
                        TaskKind::Ping => Ok(TaskOutput::Pong),
                        _ => Err(TaskError { code: TaskErrorCode::Unsupported, message: "simulated agent".into() }),
                    };
                    let reply = AgentMessage::TaskResult(TaskResult { task_id: task.task_id, outcome });
                    if let Err(e) = conn.send(&reply).await { break Err(e.into()); }
                }
                Ok(Some(_)) => {}
                Ok(None) => break Err(anyhow::anyhow!("controller closed the session")),
                Err(e) => break Err(e.into()),
            },
        }
    };
    online.fetch_sub(1, Ordering::Relaxed);
    result
}
