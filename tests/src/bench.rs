//! A deployment of the real release binaries for the benchmark programs: a controller serving
//! a throwaway data dir on free loopback ports, and one enrolled `cordon-agent` process.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use anyhow::{bail, Context};

/// A child process killed when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The release binaries next to the running benchmark (or in `dir`).
pub struct Binaries {
    pub controller: PathBuf,
    pub agent: PathBuf,
    pub cordon: PathBuf,
}

impl Binaries {
    pub fn locate(dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let dir = match dir {
            Some(dir) => dir,
            None => std::env::current_exe()?
                .parent()
                .context("binary directory")?
                .to_path_buf(),
        };
        let bins = Self {
            controller: dir.join("cordon-controller"),
            agent: dir.join("cordon-agent"),
            cordon: dir.join("cordon"),
        };
        for bin in bins.all() {
            if !bin.exists() {
                bail!(
                    "{} is missing: build with cargo build --release -p cordon-agent -p cordon-controller -p cordon-tests",
                    bin.display()
                );
            }
        }
        Ok(bins)
    }

    pub fn all(&self) -> [&PathBuf; 3] {
        [&self.controller, &self.agent, &self.cordon]
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

/// A served controller with one running agent.
pub struct ReleaseDeployment {
    pub tmp: tempfile::TempDir,
    pub data_dir: PathBuf,
    pub api_url: String,
    pub token: String,
    pub agent_id: String,
    pub controller: Killed,
    pub agent: Killed,
    cordon: PathBuf,
}

impl ReleaseDeployment {
    pub fn start(bins: &Binaries) -> anyhow::Result<Self> {
        let tmp = tempfile::tempdir()?;
        let data = tmp.path().join("controller");
        let data_s = data.to_str().context("temp path")?;
        let init: serde_json::Value = serde_json::from_str(&run(
            &bins.controller,
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
        let controller = Killed(
            Command::new(&bins.controller)
                .args(["serve", "--data-dir", data_s, "--agent-listen", &agent_addr])
                .args(["--api-listen", &format!("127.0.0.1:{api_port}")])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        std::thread::sleep(Duration::from_secs(1));
        let mut deployment = Self {
            data_dir: data.clone(),
            api_url: format!("https://127.0.0.1:{api_port}"),
            token,
            agent_id: String::new(),
            controller,
            agent: Killed(Command::new("true").spawn()?),
            cordon: bins.cordon.clone(),
            tmp,
        };
        let created: serde_json::Value = serde_json::from_slice(
            &deployment
                .cli(&["tokens", "create", "--ttl", "10m", "--json"])?
                .stdout,
        )?;
        let enroll_token = created["token"].as_str().context("enrolment token")?;
        let agent_dir = deployment.tmp.path().join("agent");
        let agent_dir_s = agent_dir.to_str().context("temp path")?;
        run(
            &bins.agent,
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
        let agent_file = std::fs::read_to_string(agent_dir.join("agent.toml"))?;
        deployment.agent_id = agent_file
            .lines()
            .find_map(|l| l.strip_prefix("agent_id = "))
            .map(|v| v.trim_matches('"').to_string())
            .context("agent id in agent.toml")?;
        deployment.agent = Killed(
            Command::new(&bins.agent)
                .args(["run", "--data-dir", agent_dir_s])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        Ok(deployment)
    }

    /// Runs `cordon` against this deployment; fails if it does.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<Output> {
        let out = Command::new(&self.cordon)
            .args(args)
            .env("CORDON_URL", &self.api_url)
            .env("CORDON_TOKEN", &self.token)
            .env("CORDON_CA", self.data_dir.join("ca.pem"))
            .env_remove("CORDON_CONFIG")
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("cordon {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(out)
    }

    /// Waits until the agent is listed online.
    pub fn wait_online(&self) -> anyhow::Result<()> {
        for _ in 0..100 {
            let listed = self.cli(&["agents", "list"])?;
            if String::from_utf8_lossy(&listed.stdout).contains("online") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("the agent never came online")
    }
}
