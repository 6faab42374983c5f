//! The README's first command, run as a user would: the real binary, a fresh data dir, then the
//! real CLI with the responder config it wrote; Ctrl-C stops it cleanly; a second run reuses it.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use cordon_api::agents::{AgentStatus, AgentView};
use cordon_tests::binary;

struct Quickstart {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Quickstart {
    fn start(data_dir: &std::path::Path) -> Self {
        let mut child = Command::new(binary("e2e-cordon-controller"))
            .args(["quickstart", "--data-dir"])
            .arg(data_dir)
            .args([
                "--agent-listen",
                "127.0.0.1:0",
                "--api-listen",
                "127.0.0.1:0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn quickstart");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self { child, lines }
    }

    /// Reads output until a line contains `needle`; returns everything read.
    fn read_until(&self, needle: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                let done = line.contains(needle);
                seen.push(line);
                if done {
                    return seen;
                }
            }
        }
        panic!(
            "quickstart never printed {needle:?}; it printed:\n{}",
            seen.join("\n")
        );
    }

    fn interrupt(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "quickstart did not stop on SIGINT"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agents(config: &std::path::Path) -> Vec<AgentView> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new(binary("e2e-cordon"))
            .args(["agents", "list", "--json"])
            .env("CORDON_CONFIG", config)
            .env_remove("CORDON_URL")
            .env_remove("CORDON_TOKEN")
            .env_remove("CORDON_CA")
            .output()
            .expect("run cordon");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let list: Vec<AgentView> = serde_json::from_slice(&out.stdout).expect("JSON");
        if list.iter().all(|a| a.status == AgentStatus::Online) && !list.is_empty() {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "local agent never online: {list:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn quickstart_runs_a_local_deployment_and_reuses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("cordon");
    let config = data_dir.join("responder.toml");

    let mut first = Quickstart::start(&data_dir);
    let printed = first.read_until("Press Ctrl-C").join("\n");
    assert!(
        printed.contains("initialised a new deployment"),
        "{printed}"
    );
    assert!(printed.contains("API:"), "{printed}");
    assert!(printed.contains(&config.display().to_string()), "{printed}");
    let listed = agents(&config);
    assert_eq!(listed.len(), 1);
    let agent_id = listed[0].id.clone();
    assert!(first.interrupt().success(), "clean exit on Ctrl-C");

    let mut second = Quickstart::start(&data_dir);
    let printed = second.read_until("Press Ctrl-C").join("\n");
    assert!(printed.contains("reusing the deployment"), "{printed}");
    let listed = agents(&config);
    assert_eq!(listed.len(), 1, "no second agent enrolled");
    assert_eq!(listed[0].id, agent_id);
    assert!(second.interrupt().success());
}
