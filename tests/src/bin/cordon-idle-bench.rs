//! `cordon-idle-bench`: the agent's idle cost, measured on the real release binaries. Creates a
//! throwaway deployment, serves it, enrols and runs one `cordon-agent`, lets it settle, then
//! reports the agent's RSS and CPU over the measuring window, plus the binaries' sizes.
//!
//! ```text
//! cargo build --release -p cordon-agent -p cordon-controller -p cordon-tests
//! target/release/cordon-idle-bench --seconds 60
//! ```

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context};
use clap::Parser;
use cordon_tests::procstat;

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

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn run(bin: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .args(args)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} {:?} failed: {}",
            bin.display(),
            args,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = match args.bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .context("binary directory")?
            .to_path_buf(),
    };
    let controller = bin_dir.join("cordon-controller");
    let agent = bin_dir.join("cordon-agent");
    let cordon = bin_dir.join("cordon");
    for bin in [&controller, &agent, &cordon] {
        let size = std::fs::metadata(bin)
            .with_context(|| format!("{} (build with cargo build --release)", bin.display()))?
            .len();
        println!(
            "binary {:<18} {:>6.2} MiB",
            bin.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
            size as f64 / 1048576.0
        );
    }

    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("controller");
    let data_s = data.to_str().context("temp path")?;
    let init: serde_json::Value = serde_json::from_str(&run(
        &controller,
        &["init", "--data-dir", data_s, "--json"],
    )?)?;
    let token = init["admin_token"]
        .as_str()
        .context("admin token")?
        .to_string();
    let fingerprint = init["ca_fingerprint"]
        .as_str()
        .context("fingerprint")?
        .to_string();
    let (agent_port, api_port) = (free_port()?, free_port()?);
    let agent_addr = format!("127.0.0.1:{agent_port}");
    let _server = Killed(
        Command::new(&controller)
            .args(["serve", "--data-dir", data_s, "--agent-listen", &agent_addr])
            .args(["--api-listen", &format!("127.0.0.1:{api_port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    std::thread::sleep(Duration::from_secs(1));
    let cli_env = |cmd: &mut Command| {
        cmd.env("CORDON_URL", format!("https://127.0.0.1:{api_port}"))
            .env("CORDON_TOKEN", &token)
            .env("CORDON_CA", data.join("ca.pem"));
    };
    let mut create = Command::new(&cordon);
    create.args(["tokens", "create", "--ttl", "10m", "--json"]);
    cli_env(&mut create);
    let out = create.output()?;
    if !out.status.success() {
        bail!("token: {}", String::from_utf8_lossy(&out.stderr));
    }
    let created: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let enroll_token = created["token"].as_str().context("token")?;
    let agent_dir = tmp.path().join("agent");
    let agent_dir_s = agent_dir.to_str().context("temp path")?;
    run(
        &agent,
        &[
            "enroll",
            "--data-dir",
            agent_dir_s,
            "--controller",
            &agent_addr,
            "--ca-fingerprint",
            &fingerprint,
            "--token",
            enroll_token,
        ],
    )?;
    let running = Killed(
        Command::new(&agent)
            .args(["run", "--data-dir", agent_dir_s])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let pid = running.0.id();
    // Let it connect and settle before measuring.
    std::thread::sleep(Duration::from_secs(5));
    let (rss, cpu) =
        procstat::measure(pid, Duration::from_secs(args.seconds)).context("agent exited")?;
    let mut list = Command::new(&cordon);
    list.args(["agents", "list"]);
    cli_env(&mut list);
    let listed = String::from_utf8_lossy(&list.output()?.stdout).into_owned();
    if !listed.contains("online") {
        bail!("the agent was not online during the measurement:\n{listed}");
    }
    println!(
        "agent idle over {} s: RSS {:.2} MiB, CPU {:.3} % of a core (budget: 10 MiB, 0.1 %)",
        args.seconds, rss, cpu
    );
    Ok(())
}
