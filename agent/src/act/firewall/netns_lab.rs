//! A test lab for the firewall: two network namespaces joined by a veth pair, the "agent" side
//! where the nftables table lives and the "peer" side holding a target, other hosts and a
//! controller. The host's own ruleset and interfaces are never touched. Sockets in a namespace
//! come from this test binary re-run there as a helper (`netns_helper`), since the crate forbids
//! the `unsafe` that `setns` needs. Without root, `ip` or `nft`, [`Lab::new`] prints `SKIPPED`
//! and returns `None`.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use super::nft::Nft;
use crate::{act::ActEnv, policy::Policy};

const HELPER_ENV: &str = "CORDON_FW_NETNS_HELPER";
const HELPER_TEST: &str = "act::firewall::netns_lab::netns_helper";
const MARK: &str = "cordon-helper:";
const PROBE_TIMEOUT: Duration = Duration::from_millis(400);

// Addresses exist only inside the test namespaces.
pub const AGENT: &str = "10.231.0.1";
pub const TARGET: &str = "10.231.0.2"; // the peer's primary address: its probes come from here
pub const OTHER: &str = "10.231.0.3";
pub const ALLOWED: &str = "10.231.0.4";
pub const CONTROLLER: &str = "10.231.0.9";
pub const AGENT6: &str = "fd00:c0d0::1";
pub const TARGET6: &str = "fd00:c0d0::2";
pub const SERVICE: u16 = 18080;
pub const CONTROL: u16 = 18443;

/// Run in a namespace by [`Helper::spawn`]: listens on the addresses in `HELPER_ENV`, then
/// answers `connect ADDR` lines on stdin with `ok` or `fail`. Does nothing in a normal run.
#[test]
fn netns_helper() {
    let Ok(listen) = std::env::var(HELPER_ENV) else {
        return;
    };
    let mut out = std::io::stdout();
    for addr in listen.split(',').filter(|a| !a.is_empty()) {
        let listener = match TcpListener::bind(addr) {
            Ok(l) => l,
            Err(e) => {
                let _ = writeln!(out, "{MARK} bind {addr} failed: {e}");
                return;
            }
        };
        thread::spawn(move || {
            for conn in listener.incoming() {
                drop(conn);
            }
        });
    }
    let _ = writeln!(out, "{MARK} ready");
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let Some(target) = line.strip_prefix("connect ") else {
            continue;
        };
        let answer = match target.parse::<SocketAddr>() {
            Ok(addr) => match TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) {
                Ok(_) => "ok".to_owned(),
                Err(e) => format!("fail {e}"),
            },
            Err(e) => format!("fail bad address: {e}"),
        };
        let _ = writeln!(out, "{MARK} {answer}");
    }
}

/// A helper process living in one namespace.
pub struct Helper {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Helper {
    fn spawn(netns: &str, listen: &[String]) -> Helper {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns])
            .arg(exe)
            .args([HELPER_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(HELPER_ENV, listen.join(","))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut helper = Helper {
            child,
            stdin,
            stdout,
        };
        let answer = helper.answer();
        assert_eq!(answer, "ready", "helper in {netns} did not start");
        helper
    }

    fn answer(&mut self) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "helper exited");
            if let Some(at) = line.find(MARK) {
                return line[at + MARK.len()..].trim().to_owned();
            }
        }
    }

    /// Whether a TCP connection to `addr` succeeds from this namespace.
    pub fn reaches(&mut self, addr: &str, port: u16) -> bool {
        let target = SocketAddr::new(addr.parse().unwrap(), port);
        writeln!(self.stdin, "connect {target}").unwrap();
        self.answer() == "ok"
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two namespaces, a veth pair, a helper in each; all removed on drop, also after a panic.
/// Fields drop in order: the helpers end before their namespaces are deleted.
pub struct Lab {
    pub agent: Helper,
    pub peer: Helper,
    pub nft: Nft,
    pub agent_ns: String,
    pub data: tempfile::TempDir,
    _namespaces: Cleanup,
}

static LABS: AtomicU32 = AtomicU32::new(0);

/// Says loudly, past the test harness's capture, that a test did not run.
fn skipped(why: &str) -> Option<Lab> {
    let test = thread::current().name().unwrap_or("firewall").to_owned();
    let _ = writeln!(std::io::stderr(), "\nSKIPPED: {test}: {why}");
    None
}

pub fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Lab {
    pub fn new() -> Option<Lab> {
        if crate::collect::effective_uid() != Some(0) {
            return skipped("needs root");
        }
        if let Err(e) = sh(&["ip", "-V"]) {
            return skipped(&format!("no `ip` (iproute2): {e}"));
        }
        if let Err(e) = sh(&["nft", "--version"]) {
            return skipped(&format!("no `nft` (nftables): {e}"));
        }
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let base = format!("cordon-test-{}-{n}", std::process::id());
        let (a, p) = (format!("{base}-a"), format!("{base}-p"));
        let mut names = Vec::new();
        for ns in [&a, &p] {
            if let Err(e) = sh(&["ip", "netns", "add", ns]) {
                drop(Cleanup(names));
                return skipped(&format!("cannot create a network namespace: {e}"));
            }
            names.push(ns.clone());
        }
        // Past this point the environment works; failures are test failures.
        let cleanup = Cleanup(names);
        let setup: &[&[&str]] = &[
            &[
                "ip", "-n", &a, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0",
                "netns", &p,
            ],
            &[
                "ip",
                "-n",
                &a,
                "addr",
                "add",
                &format!("{AGENT}/24"),
                "dev",
                "veth0",
            ],
            &[
                "ip",
                "-n",
                &a,
                "addr",
                "add",
                &format!("{AGENT6}/64"),
                "dev",
                "veth0",
                "nodad",
            ],
            &[
                "ip",
                "-n",
                &p,
                "addr",
                "add",
                &format!("{TARGET}/24"),
                "dev",
                "veth0",
            ],
            &[
                "ip",
                "-n",
                &p,
                "addr",
                "add",
                &format!("{OTHER}/24"),
                "dev",
                "veth0",
            ],
            &[
                "ip",
                "-n",
                &p,
                "addr",
                "add",
                &format!("{ALLOWED}/24"),
                "dev",
                "veth0",
            ],
            &[
                "ip",
                "-n",
                &p,
                "addr",
                "add",
                &format!("{CONTROLLER}/24"),
                "dev",
                "veth0",
            ],
            &[
                "ip",
                "-n",
                &p,
                "addr",
                "add",
                &format!("{TARGET6}/64"),
                "dev",
                "veth0",
                "nodad",
            ],
            &["ip", "-n", &a, "link", "set", "lo", "up"],
            &["ip", "-n", &p, "link", "set", "lo", "up"],
            &["ip", "-n", &a, "link", "set", "veth0", "up"],
            &["ip", "-n", &p, "link", "set", "veth0", "up"],
        ];
        for cmd in setup {
            sh(cmd).unwrap();
        }
        let addr = |ip: &str, port: u16| SocketAddr::new(ip.parse().unwrap(), port).to_string();
        let agent = Helper::spawn(
            &a,
            &[
                addr("127.0.0.1", SERVICE),
                addr(AGENT, SERVICE),
                addr(AGENT6, SERVICE),
            ],
        );
        let mut peer_listen: Vec<String> = [TARGET, OTHER, ALLOWED, CONTROLLER, TARGET6]
            .iter()
            .map(|ip| addr(ip, SERVICE))
            .collect();
        peer_listen.push(addr(CONTROLLER, CONTROL));
        let peer = Helper::spawn(&p, &peer_listen);
        let mut lab = Lab {
            agent,
            peer,
            nft: Nft::in_netns(&a),
            agent_ns: a,
            data: tempfile::tempdir().unwrap(),
            _namespaces: cleanup,
        };
        // The link, and IPv6 neighbour discovery on it, may take a moment to come up.
        wait_for(
            "the veth pair to carry traffic",
            Duration::from_secs(5),
            || lab.agent.reaches(TARGET, SERVICE) && lab.agent.reaches(TARGET6, SERVICE),
        );
        Some(lab)
    }

    pub fn env(&self, allowlist: &[&str]) -> ActEnv {
        ActEnv {
            data_dir: self.data.path().to_owned(),
            agent_id: "agent-under-test".into(),
            controller: format!("{CONTROLLER}:{CONTROL}"),
            agent_pid: std::process::id(),
            policy: Arc::new(Policy {
                isolation_allowlist: allowlist.iter().map(|s| s.to_string()).collect(),
                ..Policy::default()
            }),
        }
    }

    /// The agent namespace's ruleset as text.
    pub fn ruleset(&self) -> String {
        sh(&[
            "ip",
            "netns",
            "exec",
            &self.agent_ns,
            "nft",
            "list",
            "ruleset",
        ])
        .unwrap()
    }

    pub fn nft_command(&self, script: &str) {
        sh(&["ip", "netns", "exec", &self.agent_ns, "nft", script]).unwrap();
    }
}

/// Deletes namespaces; used alone while a lab is half built.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
    }
}

pub fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

pub fn targets(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}
