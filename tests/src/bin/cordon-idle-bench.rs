//! `cordon-idle-bench`: the agent's idle cost, measured on the real release binaries. Creates a
//! throwaway deployment, serves it, enrols and runs one `cordon-agent`, lets it settle, then
//! reports the agent's RSS and CPU over the measuring window, plus the binaries' sizes.
//!
//! ```text
//! cargo build --release -p cordon-agent -p cordon-controller -p cordon-tests
//! target/release/cordon-idle-bench --seconds 60
//! ```

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use clap::Parser;
use cordon_tests::{
    bench::{Binaries, ReleaseDeployment},
    procstat,
};

#[derive(Parser)]
#[command(
    name = "cordon-idle-bench",
    about = "Idle RSS and CPU of a connected cordon-agent"
)]
struct Args {
    /// Length of the measuring window.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Where the binaries are (default: next to this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bins = Binaries::locate(args.bin_dir)?;
    for bin in bins.all() {
        let size = std::fs::metadata(bin)?.len();
        println!(
            "binary {:<18} {:>6.2} MiB",
            bin.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
            size as f64 / 1048576.0
        );
    }
    let deployment = ReleaseDeployment::start(&bins)?;
    deployment.wait_online()?;
    // Let it settle before measuring.
    std::thread::sleep(Duration::from_secs(5));
    let (rss, cpu) = procstat::measure(deployment.agent.0.id(), Duration::from_secs(args.seconds))
        .context("agent exited")?;
    let listed = deployment.cli(&["agents", "list"])?;
    if !String::from_utf8_lossy(&listed.stdout).contains("online") {
        bail!("the agent was not online during the measurement");
    }
    println!(
        "agent idle over {} s: RSS {:.2} MiB, CPU {:.3} % of a core (budget: 10 MiB, 0.1 %)",
        args.seconds, rss, cpu
    );
    Ok(())
}
