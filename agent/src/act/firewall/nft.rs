//! Driving the `nft` binary: the `inet cordon` table's definition, scripts fed through
//! `nft -f -` (one script is one kernel transaction: all of it applies or none), and the table
//! read back with `nft -j` (see [`super::state`]) so receipts show what the kernel holds.

use std::{
    io::{Read, Write},
    path::PathBuf,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use cordon_protocol::message::{TaskError, TaskErrorCode};

use super::state::TableState;

/// The only table the agent ever creates, changes or reads.
pub const TABLE: &str = "inet cordon";

/// Longest an `nft` invocation may take before it is killed.
const NFT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most of nft's stderr quoted in an error.
const MAX_ERROR_TEXT: usize = 600;

/// The table, its sets and chains, and all of its rules. Sets and chains are `add`ed (a no-op
/// when they exist, so their elements survive) and the chains are flushed and refilled in the
/// same transaction, so running this again never duplicates a rule and never leaves a moment
/// without them.
///
/// - `blocked4`/`blocked6`: blocked networks, each element with its own kernel timeout.
/// - `isolation`: holds `ipv4` and `ipv6` (the packet's `meta nfproto`) with a timeout while
///   the host is isolated. The isolation rules match only while those elements exist, so the
///   kernel ends an isolation by itself when they time out, whether or not the agent runs.
/// - `controller4`/`controller6` (address . TCP port) and `allow4`/`allow6` (the policy's
///   isolation allowlist): what stays reachable while isolated.
const DEFINITION: &str = r#"add table inet cordon
add set inet cordon blocked4 { type ipv4_addr; flags interval, timeout; }
add set inet cordon blocked6 { type ipv6_addr; flags interval, timeout; }
add set inet cordon isolation { type nf_proto; flags timeout; }
add set inet cordon controller4 { type ipv4_addr . inet_service; }
add set inet cordon controller6 { type ipv6_addr . inet_service; }
add set inet cordon allow4 { type ipv4_addr; flags interval; auto-merge; }
add set inet cordon allow6 { type ipv6_addr; flags interval; auto-merge; }
add chain inet cordon input { type filter hook input priority filter - 10; policy accept; }
add chain inet cordon output { type filter hook output priority filter - 10; policy accept; }
add chain inet cordon forward { type filter hook forward priority filter - 10; policy accept; }
add chain inet cordon isolate_in
add chain inet cordon isolate_out
flush chain inet cordon input
flush chain inet cordon output
flush chain inet cordon forward
flush chain inet cordon isolate_in
flush chain inet cordon isolate_out
add rule inet cordon input ip saddr @blocked4 drop
add rule inet cordon input ip6 saddr @blocked6 drop
add rule inet cordon input meta nfproto @isolation jump isolate_in
add rule inet cordon output ip daddr @blocked4 drop
add rule inet cordon output ip6 daddr @blocked6 drop
add rule inet cordon output meta nfproto @isolation jump isolate_out
add rule inet cordon forward ip saddr @blocked4 drop
add rule inet cordon forward ip daddr @blocked4 drop
add rule inet cordon forward ip6 saddr @blocked6 drop
add rule inet cordon forward ip6 daddr @blocked6 drop
add rule inet cordon forward meta nfproto @isolation drop
add rule inet cordon isolate_in iif lo accept
add rule inet cordon isolate_in ip saddr . tcp sport @controller4 ct state established accept
add rule inet cordon isolate_in ip6 saddr . tcp sport @controller6 ct state established accept
add rule inet cordon isolate_in ip saddr @allow4 accept
add rule inet cordon isolate_in ip6 saddr @allow6 accept
add rule inet cordon isolate_in meta l4proto { icmp, ipv6-icmp } ct state related accept
add rule inet cordon isolate_in icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } accept
add rule inet cordon isolate_in udp sport 67 udp dport 68 accept
add rule inet cordon isolate_in udp sport 547 udp dport 546 accept
add rule inet cordon isolate_in drop
add rule inet cordon isolate_out oif lo accept
add rule inet cordon isolate_out ip daddr . tcp dport @controller4 accept
add rule inet cordon isolate_out ip6 daddr . tcp dport @controller6 accept
add rule inet cordon isolate_out ip daddr @allow4 accept
add rule inet cordon isolate_out ip6 daddr @allow6 accept
add rule inet cordon isolate_out icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept
add rule inet cordon isolate_out udp sport 68 udp dport 67 accept
add rule inet cordon isolate_out udp sport 546 udp dport 547 accept
add rule inet cordon isolate_out drop
"#;

/// The table definition, to start every script that adds elements.
pub fn definition() -> &'static str {
    DEFINITION
}

/// Runs `nft`, on the host or (for tests) inside a named network namespace.
#[derive(Debug, Clone)]
pub struct Nft {
    program: PathBuf,
    netns: Option<String>,
}

impl Nft {
    /// `nft` from `PATH`, in the agent's own network namespace.
    pub fn host() -> Self {
        Nft {
            program: PathBuf::from("nft"),
            netns: None,
        }
    }

    /// `nft` run through `ip netns exec NAME`, so tests never touch the host's ruleset.
    #[cfg(test)]
    pub fn in_netns(name: &str) -> Self {
        Nft {
            program: PathBuf::from("nft"),
            netns: Some(name.to_owned()),
        }
    }

    /// A runner for a program that may not exist (tests of the "nft missing" path).
    #[cfg(test)]
    pub fn with_program(program: &str) -> Self {
        Nft {
            program: PathBuf::from(program),
            netns: None,
        }
    }

    /// Applies a script as one transaction.
    pub fn apply(&self, script: &str) -> Result<(), TaskError> {
        self.run(&["-f", "-"], Some(script))
            .map(drop)
            .map_err(TaskError::from)
    }

    /// Reads the table back; an absent table is a state, not an error.
    pub fn list(&self) -> Result<TableState, TaskError> {
        match self.run(&["-j", "list", "table", "inet", "cordon"], None) {
            Ok(text) => TableState::parse(&text),
            Err(Failure::Nft(stderr)) if stderr.contains("No such file or directory") => {
                Ok(TableState::default())
            }
            Err(failure) => Err(failure.into()),
        }
    }

    fn command(&self) -> Command {
        match &self.netns {
            None => Command::new(&self.program),
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(&self.program);
                cmd
            }
        }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, Failure> {
        let mut cmd = self.command();
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Failure::Missing(format!("{}: {e}", self.program.display()))
            } else {
                Failure::Other(format!("cannot run {}: {e}", self.program.display()))
            }
        })?;
        // Separate threads feed and drain the pipes so a large script or listing cannot
        // deadlock against a full pipe while we wait with a deadline.
        let writer = child.stdin.take().zip(stdin).map(|(mut pipe, text)| {
            let text = text.to_owned();
            thread::spawn(move || {
                let _ = pipe.write_all(text.as_bytes());
            })
        });
        let out = child.stdout.take().map(drain);
        let err = child.stderr.take().map(drain);
        let deadline = Instant::now() + NFT_TIMEOUT;
        let mut pause = Duration::from_millis(1);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Failure::Other(format!(
                        "nft did not finish within {} s and was killed",
                        NFT_TIMEOUT.as_secs()
                    )));
                }
                Ok(None) => {
                    thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Err(e) => return Err(Failure::Other(format!("waiting for nft: {e}"))),
            }
        };
        if let Some(w) = writer {
            let _ = w.join();
        }
        let stdout = out.and_then(|t| t.join().ok()).unwrap_or_default();
        let stderr = err.and_then(|t| t.join().ok()).unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr).trim().to_owned();
        if status.success() {
            return Ok(String::from_utf8_lossy(&stdout).into_owned());
        }
        // `ip netns exec` reports a missing program itself.
        if stderr.contains("exec of") && stderr.contains("No such file or directory") {
            return Err(Failure::Missing(stderr));
        }
        Err(Failure::Nft(stderr))
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// How running `nft` failed.
#[derive(Debug)]
pub enum Failure {
    /// The binary is not installed.
    Missing(String),
    /// nft ran and refused; its stderr.
    Nft(String),
    Other(String),
}

impl From<Failure> for TaskError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Missing(detail) => TaskError {
                code: TaskErrorCode::Unsupported,
                message: format!(
                    "nftables is not available on this host ({detail}); install the `nftables` \
                     package to block or isolate"
                ),
            },
            Failure::Nft(stderr) if stderr.contains("Operation not permitted") => TaskError {
                code: TaskErrorCode::PermissionDenied,
                message: format!(
                    "nft was refused (the agent needs root or CAP_NET_ADMIN): {}",
                    clip(&stderr)
                ),
            },
            Failure::Nft(stderr) => TaskError {
                code: TaskErrorCode::Internal,
                message: format!("nft failed: {}", clip(&stderr)),
            },
            Failure::Other(message) => TaskError {
                code: TaskErrorCode::Internal,
                message,
            },
        }
    }
}

fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_ERROR_TEXT) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_nft_binary_is_unsupported() {
        let err = Nft::with_program("/nonexistent/cordon-test/nft")
            .list()
            .unwrap_err();
        assert_eq!(err.code, TaskErrorCode::Unsupported);
        assert!(err.message.contains("nftables"), "{}", err.message);
    }
}
