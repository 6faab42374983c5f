//! Similar-incident lookup at scale: a store filled with `--incidents` past incidents (default
//! 100,000) holding `--observables` observables in all (default 1,000,000) and an alert rule
//! each, served by the release controller; then `GET /api/v1/incidents/{id}/similar` for
//! `--lookups` random incidents, its p50 and p99 printed next to the same run's floor, a read
//! of one incident's observables (`GET …/observables`), and the store's growth per incident.
//!
//! Values are drawn so that most are rare and a few are common (an address in every tenth
//! incident, a rule in one of fifty), as in a real history.
//!
//! ```text
//! cargo build --release --bin cordon-controller --bin cordon-similar-bench
//! target/release/cordon-similar-bench [--database-url postgres://…] [--incidents N] …
//! ```

use std::{path::PathBuf, process::Command, time::Instant};

use anyhow::{bail, Context};
use clap::Parser;
use cordon_api::observables::ObservableType;
use cordon_controller::store::{observables::value_key, Store};
use cordon_tests::bench::Killed;

#[derive(Debug, Parser)]
struct Args {
    /// Where the controller's store is (default: SQLite in a temporary data dir). For
    /// PostgreSQL, an empty database or schema: the benchmark fills it.
    #[arg(long)]
    database_url: Option<String>,
    #[arg(long, default_value_t = 100_000)]
    incidents: usize,
    #[arg(long, default_value_t = 1_000_000)]
    observables: usize,
    #[arg(long, default_value_t = 200)]
    lookups: usize,
    /// Directory of the release binaries (default: next to this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

/// A small deterministic generator (xorshift), so every run fills the same store.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One value of `kind`: mostly rare (drawn from a space as large as the observables), one in
/// ten from a handful of common ones.
fn value(rng: &mut Rng, kind: ObservableType, space: u64) -> String {
    let n = if rng.below(10) == 0 {
        rng.below(20)
    } else {
        rng.below(space)
    };
    match kind {
        ObservableType::Sha256 => format!("{n:064x}"),
        ObservableType::Ipv4 => format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255),
        ObservableType::Domain => format!("host{n}.example.org"),
        _ => format!("/tmp/x/{n}.bin"),
    }
}

const KINDS: [ObservableType; 4] = [
    ObservableType::Sha256,
    ObservableType::Ipv4,
    ObservableType::Domain,
    ObservableType::FilePath,
];

async fn fill(store: &Store, args: &Args) -> anyhow::Result<()> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let per = (args.observables / args.incidents.max(1)).max(1);
    let space = args.observables as u64;
    let now = cordon_api::now_ms();
    let pool = store.pool();
    let mut tx = pool.begin().await?;
    for i in 0..args.incidents {
        let id = format!("{:08x}-0000-4000-8000-{:012x}", i, i);
        let at = now - (args.incidents - i) as i64 * 60_000;
        sqlx::query(
            "INSERT INTO incidents (id, title, kind, severity, stage, description, tier, \
             labels, alert_count, created_at, created_by, updated_at) \
             VALUES ($1, $2, 'malware', 'high', 'closed', '', 1, '[]', 1, $3, 'bench', $3)",
        )
        .bind(&id)
        .bind(format!("incident {i}"))
        .bind(at)
        .execute(&mut *tx)
        .await
        .context("insert incident")?;
        let rule = format!(
            "generic:rule-{}",
            rng.below((args.incidents / 50).max(1) as u64)
        );
        sqlx::query(
            "INSERT INTO alerts (id, received_at, source, fingerprint, incident_id, outcome, \
             actor, detail, raw, raw_sha256, rule) \
             VALUES ($1, $2, 'generic', $1, $3, 'opened', 'bench', '{}', '{}', '', $4)",
        )
        .bind(format!("alert-{i}"))
        .bind(at)
        .bind(&id)
        .bind(rule)
        .execute(&mut *tx)
        .await
        .context("insert alert")?;
        let mut seen = std::collections::HashSet::new();
        for j in 0..per {
            let kind = KINDS[j % KINDS.len()];
            let value = value(&mut rng, kind, space);
            let key = value_key(kind, &value);
            if !seen.insert(key.clone()) {
                continue;
            }
            let obs = format!("{id}-{j}");
            sqlx::query(
                "INSERT INTO observables (id, incident_id, kind, value, value_key, verdict, \
                 ignored, added_by, added_at, updated_at, sightings) \
                 VALUES ($1, $2, $3, $4, $5, 'unknown', 0, 'bench', $6, $6, 1)",
            )
            .bind(&obs)
            .bind(&id)
            .bind(kind.as_str())
            .bind(&value)
            .bind(&key)
            .bind(at)
            .execute(&mut *tx)
            .await
            .context("insert observable")?;
            sqlx::query(
                "INSERT INTO observable_sightings (id, observable_id, at, source, ref_id, \
                 agent_id, actor) VALUES ($1, $1, $2, 'alert', NULL, NULL, 'bench')",
            )
            .bind(&obs)
            .bind(at)
            .execute(&mut *tx)
            .await
            .context("insert sighting")?;
        }
        if i % 10_000 == 9_999 {
            tx.commit().await?;
            tx = pool.begin().await?;
            eprintln!("  {} incidents written", i + 1);
        }
    }
    tx.commit().await?;
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(f64::NAN)
}

async fn timed(client: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let response = client.get(url).bearer_auth(token).send().await?;
    let status = response.status();
    let _ = response.bytes().await?;
    if !status.is_success() {
        bail!("{url}: {status}");
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = match args.bin_dir.clone() {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .context("binary directory")?
            .to_path_buf(),
    };
    let controller = dir.join("cordon-controller");
    if !controller.exists() {
        bail!(
            "{} is missing: build with cargo build --release -p cordon-controller -p cordon-tests",
            controller.display()
        );
    }
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("controller");
    let data_s = data.to_str().context("temp path")?;
    let mut init = Command::new(&controller);
    init.args(["init", "--data-dir", data_s, "--json"]);
    if let Some(url) = &args.database_url {
        init.args(["--database-url", url]);
    }
    let out = init.output()?;
    if !out.status.success() {
        bail!("init: {}", String::from_utf8_lossy(&out.stderr));
    }
    let init: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let token = init["admin_token"]
        .as_str()
        .context("admin token")?
        .to_owned();
    let url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", data.join("cordon.db").display()));
    let store = Store::connect(&url).await.context("open the store")?;
    let postgres = args.database_url.is_some();
    let size_before = store_size(&store, &data, postgres).await;
    eprintln!(
        "filling: {} incidents, {} observables …",
        args.incidents, args.observables
    );
    let started = Instant::now();
    fill(&store, &args).await?;
    eprintln!("filled in {:.1} s", started.elapsed().as_secs_f64());
    let size_after = store_size(&store, &data, postgres).await;
    store.close().await;

    let api_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let agent_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut serve = Command::new(&controller);
    serve
        .args(["serve", "--data-dir", data_s])
        .args(["--agent-listen", &format!("127.0.0.1:{agent_port}")])
        .args(["--api-listen", &format!("127.0.0.1:{api_port}")])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null());
    if let Some(url) = &args.database_url {
        serve.args(["--database-url", url]);
    }
    let _controller = Killed(serve.spawn()?);
    let client = {
        use rustls_pki_types::{pem::PemObject, CertificateDer};
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(data.join("ca.pem"))?)?;
        let tls = rustls::ClientConfig::builder_with_provider(cordon_controller::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .build()?
    };
    let base = format!("https://127.0.0.1:{api_port}/api/v1");
    for _ in 0..100 {
        if client.get(format!("{base}/health")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let mut rng = Rng(42);
    let (mut similar, mut floor) = (Vec::new(), Vec::new());
    for _ in 0..args.lookups {
        let i = rng.below(args.incidents as u64);
        let id = format!("{:08x}-0000-4000-8000-{:012x}", i, i);
        floor.push(
            timed(
                &client,
                &format!("{base}/incidents/{id}/observables"),
                &token,
            )
            .await?,
        );
        similar.push(timed(&client, &format!("{base}/incidents/{id}/similar"), &token).await?);
    }
    similar.sort_by(f64::total_cmp);
    floor.sort_by(f64::total_cmp);
    let backend = if args.database_url.is_some() {
        "postgresql"
    } else {
        "sqlite"
    };
    println!(
        "similar lookup ({backend}, {} incidents, {} observables, {} lookups): p50 {:.1} ms, p99 {:.1} ms",
        args.incidents,
        args.observables,
        args.lookups,
        percentile(&similar, 0.5),
        percentile(&similar, 0.99)
    );
    println!(
        "floor, one incident's observables: p50 {:.1} ms, p99 {:.1} ms",
        percentile(&floor, 0.5),
        percentile(&floor, 0.99)
    );
    if let (Some(before), Some(after)) = (size_before, size_after) {
        println!(
            "store growth: {:.1} KiB per incident ({} observables each)",
            (after.saturating_sub(before)) as f64 / 1024.0 / args.incidents.max(1) as f64,
            args.observables / args.incidents.max(1)
        );
    }
    Ok(())
}

/// The store's size in bytes: the SQLite file (with its WAL), or the PostgreSQL database.
async fn store_size(store: &Store, data: &std::path::Path, postgres: bool) -> Option<u64> {
    if !postgres {
        let size = |name: &str| {
            std::fs::metadata(data.join(name))
                .map(|m| m.len())
                .unwrap_or(0)
        };
        return Some(size("cordon.db") + size("cordon.db-wal"));
    }
    sqlx::query_scalar::<_, i64>("SELECT pg_database_size(current_database())")
        .fetch_one(store.pool())
        .await
        .ok()
        .map(|n| n.max(0) as u64)
}
