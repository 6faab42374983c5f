//! `cordon-fetch-bench`: fetch throughput over loopback mTLS on the real release binaries, and
//! the controller's memory while it receives. Writes a file of random bytes, fetches it into
//! the evidence store with `cordon files fetch --wait`, and reports MiB/s (task created → stored
//! and verified by the controller) and the controller's peak RSS sampled every 50 ms.
//!
//! ```text
//! cargo build --release -p cordon-agent -p cordon-controller -p cordon-tests
//! target/release/cordon-fetch-bench --mib 1024
//! ```

use std::{
    io::Write,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use clap::Parser;
use cordon_tests::{
    bench::{Binaries, ReleaseDeployment},
    procstat,
};
use sha2::Digest;

#[derive(Parser)]
#[command(
    name = "cordon-fetch-bench",
    about = "File fetch throughput and controller memory"
)]
struct Args {
    /// Size of the file to fetch, in MiB.
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Where to write the file (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Where the binaries are (default: next to this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bins = Binaries::locate(args.bin_dir)?;
    let deployment = ReleaseDeployment::start(&bins)?;
    deployment.wait_online()?;

    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => deployment.tmp.path().to_path_buf(),
    };
    let path = dir.join("cordon-fetch-bench.bin");
    let mut hasher = sha2::Sha256::new();
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let mut block = vec![0u8; 1024 * 1024];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..args.mib {
            for b in block.iter_mut() {
                // xorshift: incompressible, cheap, reproducible.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            hasher.update(&block);
            file.write_all(&block)?;
        }
        file.flush()?;
    }
    let expected = hex::encode(hasher.finalize());
    let path_s = path.to_str().context("path")?.to_string();

    let controller_pid = deployment.controller.0.id();
    let before = procstat::sample(controller_pid).context("controller exited")?;
    let peak = Arc::new(AtomicU64::new(before.rss_kib));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(s) = procstat::sample(controller_pid) {
                    peak.fetch_max(s.rss_kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let started = Instant::now();
    let out = deployment.cli(&[
        "--json",
        "files",
        "fetch",
        "--agent",
        &deployment.agent_id,
        &path_s,
        "--wait",
        "--max-bytes",
        &(args.mib * 1024 * 1024).to_string(),
    ])?;
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let after = procstat::sample(controller_pid).context("controller exited")?;
    let result: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    if result["sha256"] != expected.as_str() {
        bail!("stored hash {} is not {expected}", result["sha256"]);
    }
    let _ = std::fs::remove_file(&path);
    let secs = elapsed.as_secs_f64();
    println!(
        "fetched {} MiB over loopback mTLS in {:.2} s: {:.1} MiB/s (hash checked, manifest verified, stored)",
        args.mib,
        secs,
        args.mib as f64 / secs
    );
    println!(
        "controller RSS: {:.1} MiB before, {:.1} MiB peak during, {:.1} MiB after; CPU {:.0} % of a core during",
        before.rss_kib as f64 / 1024.0,
        peak.load(Ordering::Relaxed) as f64 / 1024.0,
        after.rss_kib as f64 / 1024.0,
        procstat::cpu_percent(&before, &after)
    );
    Ok(())
}
