//! `cordon-loadgen`: many simulated agents from one process, each enrolled with a real
//! certificate and holding a real mTLS session: hello, heartbeats, and answers to tasks. Prints
//! how long the fleet took to connect and, given the controller's pid, the controller's memory
//! and CPU while it holds them.
//!
//! ```text
//! cordon-loadgen --agents 1000 --controller 127.0.0.1:7443 --responder-config .cordon/responder.toml \
//!     --state-dir /tmp/fleet --hold 60 --controller-pid $(pgrep -f 'cordon-controller serve')
//! ```
//!
//! With `--hunt N`, once the fleet is online it runs N hunts across all of it through the API
//! (simulated hosts answer from a canned process list, [`cordon_tests::simhost`]; only agent 0
//! runs the marker) and reports the time from creating each hunt until every agent's result is
//! stored, checking that exactly agent 0 matched.
//!
//! With `--actions N`, the simulated agents trust a signing key the load generator makes for
//! the run (they report it in their hello's policy, as real agents report theirs), verify the
//! envelopes they are sent and answer each with a receipt signed by their own key. The load
//! generator then signs N kills, one at a time, each for the next agent in turn, and reports
//! the time from `POST /api/v1/actions` until the verified receipt is stored (p50, p99).

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
    action::PolicySummary,
    connection::Connection,
    hello::{decode_hello, ControllerHello, HelloOutcome},
    message::{
        AgentMessage, ControllerMessage, TaskError, TaskErrorCode, TaskKind, TaskOutput, TaskResult,
    },
};
use cordon_tests::{procstat, simaction};
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
    /// Once online, run this many hunts across the fleet and time each until all results are in.
    #[arg(long, default_value_t = 0)]
    hunt: usize,
    /// Once online, sign and submit this many kills (round-robin over the fleet), one at a
    /// time, and time each from the API request until its receipt is stored.
    #[arg(long, default_value_t = 0)]
    actions: usize,
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
    // The key the fleet trusts for kills in this run (made fresh; it signs only here).
    let signer = Arc::new(simaction::random_key());
    let policy = Arc::new(if args.actions > 0 {
        simaction::fleet_policy(&signer)
    } else {
        Default::default()
    });
    let started = Instant::now();
    let mut sessions = tokio::task::JoinSet::new();
    for i in 0..args.agents {
        let dir = agent_dir(&args.state_dir, i);
        let controller = args.controller.clone();
        let (online, failed, limit, shutdown, policy, trusted) = (
            online.clone(),
            failed.clone(),
            limit.clone(),
            shutdown.clone(),
            policy.clone(),
            signer.verifying_key(),
        );
        sessions.spawn(async move {
            let sim = Sim {
                online: &online,
                limit: &limit,
                shutdown: &shutdown,
                policy: &policy,
                trusted,
            };
            if let Err(e) = simulate(i, &dir, &controller, &sim).await {
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

    if args.hunt > 0 {
        hunts(&args, online.load(Ordering::Relaxed)).await?;
    }
    if args.actions > 0 {
        actions(&args, &signer, online.load(Ordering::Relaxed)).await?;
    }

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

/// The API settings from `--responder-config`.
fn responder_settings(args: &Args) -> anyhow::Result<cordon_cli::config::Resolved> {
    let text = std::fs::read_to_string(&args.responder_config)
        .with_context(|| format!("reading {}", args.responder_config.display()))?;
    let responder: cordon_cli::config::ResponderConfig = toml::from_str(&text)
        .with_context(|| format!("parsing {}", args.responder_config.display()))?;
    cordon_cli::config::resolve(
        responder.url,
        responder.token,
        responder.ca_cert,
        None,
        true,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Runs `args.hunt` hunts for the marker process across the fleet, one after another, and
/// prints how long each took to gather every agent's result.
async fn hunts(args: &Args, online: usize) -> anyhow::Result<()> {
    use cordon_controller::hunts::{CreateHunt, HuntQuerySpec, HuntView};

    let client = cordon_cli::client::Client::new(&responder_settings(args)?)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let marked = cordon_agent::identity::AgentDir::new(agent_dir(&args.state_dir, 0))
        .load()?
        .file
        .agent_id;
    let mut totals = Vec::new();
    for round in 1..=args.hunt {
        let started = Instant::now();
        let created: HuntView = client
            .post(
                "/api/v1/hunts",
                &CreateHunt {
                    query: HuntQuerySpec {
                        process_name: Some(cordon_tests::simhost::MARKER_PROCESS.into()),
                        ..Default::default()
                    },
                    label: None,
                    ttl_secs: Some(600),
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("creating the hunt: {e}"))?;
        let create_time = started.elapsed();
        let mut view = created.clone();
        while !view.progress.complete {
            if started.elapsed() > Duration::from_secs(300) {
                bail!(
                    "hunt {} incomplete after 300 s: {:?}",
                    created.id,
                    view.progress
                );
            }
            view = client
                .get(&format!(
                    "/api/v1/hunts/{}?results=none&wait=30",
                    created.id
                ))
                .await
                .map_err(|e| anyhow::anyhow!("following the hunt: {e}"))?;
        }
        let all_in = started.elapsed();
        let matched: HuntView = client
            .get(&format!("/api/v1/hunts/{}?results=matched", created.id))
            .await
            .map_err(|e| anyhow::anyhow!("reading the hunt: {e}"))?;
        let hits: Vec<&str> = matched
            .results
            .iter()
            .flatten()
            .map(|r| r.agent_id.as_str())
            .collect();
        let p = &view.progress;
        let server_ms = p
            .last_result_at_ms
            .map_or(0, |last| last - view.created_at_ms);
        println!(
            "hunt {round}: {} agents ({online} online): created in {} ms, all results in {:.3} s \
             (controller: created → last result {:.3} s); done {}, failed {}, expired {}; \
             matched {:?}{}",
            p.targeted,
            create_time.as_millis(),
            all_in.as_secs_f64(),
            server_ms as f64 / 1000.0,
            p.tasks.done,
            p.tasks.failed,
            p.tasks.expired,
            hits,
            if hits == [marked.as_str()] {
                " (agent 0, as expected)"
            } else {
                " (WRONG: expected only agent 0)"
            }
        );
        totals.push(all_in.as_secs_f64());
    }
    totals.sort_by(f64::total_cmp);
    if let (Some(best), Some(worst)) = (totals.first(), totals.last()) {
        println!(
            "hunts: {} rounds, time to all results best {best:.3} s, median {:.3} s, worst {worst:.3} s",
            totals.len(),
            totals[totals.len() / 2]
        );
    }
    Ok(())
}

/// Enrols the agents that have no identity yet.
async fn enrol_missing(args: &Args) -> anyhow::Result<()> {
    let settings = responder_settings(args)?;
    let client = cordon_cli::client::Client::new(&settings).map_err(|e| anyhow::anyhow!("{e}"))?;
    let missing: Vec<usize> = (0..args.agents)
        .filter(|i| !agent_dir(&args.state_dir, *i).join("agent.toml").exists())
        .collect();
    let ca = std::fs::read_to_string(&settings.ca_cert)?;
    let fingerprint = cordon_protocol::fingerprint::of_der(
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
            let created: cordon_api::tokens::EnrollmentTokenCreated = client
                .post(
                    "/api/v1/enrollment-tokens",
                    &cordon_api::tokens::CreateEnrollmentToken {
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

/// Signs `args.actions` kills one after another, round-robin over the fleet, and prints the
/// distribution of the time from the API request until each action's receipt is stored.
async fn actions(
    args: &Args,
    signer: &ed25519_dalek::SigningKey,
    online: usize,
) -> anyhow::Result<()> {
    let client = cordon_cli::client::Client::new(&responder_settings(args)?)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let agents: Vec<String> = (0..args.agents)
        .map(|i| {
            cordon_agent::identity::AgentDir::new(agent_dir(&args.state_dir, i))
                .load()
                .map(|identity| identity.file.agent_id)
        })
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    let mut times = simaction::measure(&client, &agents, signer, args.actions).await?;
    println!(
        "actions: {} signed kills over {} agents ({online} online) in {:.2} s, each done with a verified receipt",
        args.actions,
        agents.len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "  POST /api/v1/actions → receipt stored (client clock): {}",
        simaction::summary(&mut times.round_trip)
    );
    println!(
        "  POST /api/v1/actions answered: {}",
        simaction::summary(&mut times.submit)
    );
    println!(
        "  created → receipt stored (controller clock, ms resolution): {}",
        simaction::summary(&mut times.server)
    );
    Ok(())
}

/// What every simulated agent shares.
struct Sim<'a> {
    online: &'a AtomicUsize,
    limit: &'a Semaphore,
    shutdown: &'a CancellationToken,
    /// The containment policy reported in the hello.
    policy: &'a PolicySummary,
    /// The public key of the policy's one signer.
    trusted: ed25519_dalek::VerifyingKey,
}

/// One simulated agent (host `index`): connect, hello, then heartbeats and task answers.
async fn simulate(index: usize, dir: &Path, controller: &str, sim: &Sim<'_>) -> anyhow::Result<()> {
    let Sim {
        online,
        limit,
        shutdown,
        policy,
        trusted,
    } = *sim;
    let identity = cordon_agent::identity::AgentDir::new(dir).load()?;
    let agent_id = identity.file.agent_id.clone();
    let tls = cordon_agent::tls::session_config(identity.ca, identity.cert, identity.key)?;
    let connector = tokio_rustls::TlsConnector::from(tls);
    let permit = limit.acquire().await?;
    let tcp = tokio::net::TcpStream::connect(controller)
        .await
        .context("connect")?;
    // As the real agent does: a task's `TaskStarted` and its result are two small frames, and
    // Nagle would hold the second until the first is acknowledged (a delayed ACK, ~40 ms).
    let _ = tcp.set_nodelay(true);
    let stream = connector
        .connect(cordon_agent::tls::controller_name()?, tcp)
        .await
        .context("TLS")?;
    let mut conn = Connection::new(stream);
    let mut hello = cordon_tests::hello_for(&agent_id);
    hello.inventory.agent_version = "loadgen".into();
    hello.inventory.action_policy = policy.clone();
    let key = cordon_tests::simulated_signing_key(&agent_id);
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
                        TaskKind::Hunt(query) => {
                            // As a real agent does for a stored task: one more write per agent.
                            let started = AgentMessage::TaskStarted { task_id: task.task_id.clone() };
                            if let Err(e) = conn.send(&started).await { break Err(e.into()); }
                            cordon_tests::simhost::answer_hunt(index, &query)
                        }
                        TaskKind::Action(signed) => {
                            let started = AgentMessage::TaskStarted { task_id: task.task_id.clone() };
                            if let Err(e) = conn.send(&started).await { break Err(e.into()); }
                            simaction::answer_action(&agent_id, &key, &trusted, &signed)
                        }
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
