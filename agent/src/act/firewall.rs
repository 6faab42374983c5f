//! Block/unblock hosts and isolate/release the host with nftables, in the agent's own table
//! (`inet cordon`) only, with kernel-enforced timeouts so a block or an isolation ends even if
//! the agent dies. The controller and loopback are never blocked.
//!
//! Design (the table itself is defined in `firewall/nft.rs`):
//! - A block is an element of `blocked4`/`blocked6` (interval sets, so CIDRs fit) added with
//!   `timeout TTL`: the kernel stops matching it after TTL and collects it, with no agent
//!   running. Base chains on the input, output and forward hooks drop traffic from and to the
//!   set. Blocking an already-blocked target deletes and re-adds it in one transaction, which
//!   resets its timeout; a target that overlaps a different blocked network is refused (the
//!   kernel's interval sets cannot hold overlaps), naming that network.
//! - An isolation is the set `isolation` holding `ipv4` and `ipv6` with `timeout TTL`; the rules
//!   `meta nfproto @isolation jump isolate_in|isolate_out` (and `drop` on forward) match only
//!   while those elements live, so the isolation ends by itself at TTL. The isolate chains
//!   accept loopback, TCP to the controller's resolved addresses and port (inbound only for
//!   established connections), the policy allowlist, ICMP errors for existing connections,
//!   IPv6 neighbour discovery and DHCP (so the host keeps the address the controller reaches it
//!   on), and drop the rest. The end time is also kept in `DATA_DIR/firewall.json` so
//!   [`reapply_on_start`] restores an isolation a reboot wiped, for the time left.
//! - Every change is one `nft -f -` transaction; receipts read the table back with `nft -j`.

mod block;
mod isolation;
mod nft;
mod record;
mod state;

#[cfg(test)]
mod netns_lab;
#[cfg(test)]
mod netns_tests;

use std::{
    net::{SocketAddr, ToSocketAddrs},
    sync::{Mutex, MutexGuard, PoisonError},
};

use cordon_protocol::message::{TaskError, TaskErrorCode};

use self::nft::Nft;
use super::{refused_by_rail, ActEnv, Outcome};
use cordon_protocol::cidr::Cidr;

/// Longest block or isolation one action may ask for.
pub const MAX_TTL_SECS: u64 = 30 * 24 * 60 * 60;
pub use cordon_protocol::cidr::MAX_TARGETS;

/// Firewall actions read the table, decide, and write it: one at a time.
static FIREWALL: Mutex<()> = Mutex::new(());

/// Blocks traffic to and from `targets` (addresses or CIDRs) for `ttl_secs`.
pub fn block(targets: &[String], ttl_secs: u64, env: &ActEnv) -> Result<Outcome, TaskError> {
    block::block_with(&Nft::host(), targets, ttl_secs, env)
}

/// Removes the blocks on exactly these targets.
pub fn unblock(targets: &[String], env: &ActEnv) -> Result<Outcome, TaskError> {
    block::unblock_with(&Nft::host(), targets, env)
}

/// Cuts the host off from everything but loopback, the controller and the policy allowlist for
/// `ttl_secs`.
pub fn isolate(ttl_secs: u64, env: &ActEnv) -> Result<Outcome, TaskError> {
    isolation::isolate_with(&Nft::host(), ttl_secs, env)
}

/// Ends an isolation before its time limit.
pub fn release(env: &ActEnv) -> Result<Outcome, TaskError> {
    isolation::release_with(&Nft::host(), env)
}

/// At agent start: re-applies an isolation recorded in `DATA_DIR/firewall.json` that has not
/// ended yet (a reboot empties the kernel's ruleset), for the time left; forgets one that has.
pub fn reapply_on_start(env: &ActEnv) -> Result<(), TaskError> {
    isolation::reapply_with(&Nft::host(), env).map(drop)
}

fn lock() -> MutexGuard<'static, ()> {
    FIREWALL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn invalid(message: impl Into<String>) -> TaskError {
    TaskError {
        code: TaskErrorCode::InvalidInput,
        message: message.into(),
    }
}

fn check_ttl(ttl_secs: u64, what: &str) -> Result<(), TaskError> {
    if ttl_secs == 0 || ttl_secs > MAX_TTL_SECS {
        return Err(invalid(format!(
            "{what}: ttl {ttl_secs} s is out of range (1 s to {MAX_TTL_SECS} s); every {what} \
             needs a time limit"
        )));
    }
    Ok(())
}

/// The controller as the agent dials it: its resolved addresses and port.
struct Controller {
    name: String,
    addrs: Vec<SocketAddr>,
}

fn resolve_controller(env: &ActEnv, doing: &str) -> Result<Controller, TaskError> {
    let refused = |why: String| {
        refused_by_rail(format!(
            "cannot resolve the controller address {:?} ({why}); refusing to {doing}, since that \
             could cut the agent off from its controller",
            env.controller
        ))
    };
    let mut addrs: Vec<SocketAddr> = env
        .controller
        .to_socket_addrs()
        .map_err(|e| refused(e.to_string()))?
        .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()))
        .collect();
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(refused("no address".into()));
    }
    Ok(Controller {
        name: env.controller.clone(),
        addrs,
    })
}

fn list_of(targets: &[Cidr]) -> String {
    targets
        .iter()
        .map(Cidr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod testing {
    use std::{path::PathBuf, sync::Arc};

    use super::{nft::Nft, ActEnv};
    use crate::policy::Policy;

    pub fn env(controller: &str) -> ActEnv {
        ActEnv {
            data_dir: PathBuf::from("/nonexistent/cordon-test"),
            agent_id: "agent-1".into(),
            controller: controller.into(),
            agent_pid: std::process::id(),
            policy: Arc::new(Policy::default()),
        }
    }

    pub fn targets(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// A runner whose program does not exist: checks that must refuse before nft runs use it.
    pub fn no_nft() -> Nft {
        Nft::with_program("/nonexistent/cordon-test/nft")
    }
}

#[cfg(test)]
mod tests {
    use super::{testing::*, *};

    #[test]
    fn an_unresolvable_controller_refuses_block_and_isolate() {
        // No port: resolution fails at once, without asking a DNS server.
        let env = env("controller.invalid");
        let err = block::block_with(&no_nft(), &targets(&["192.0.2.7"]), 60, &env).unwrap_err();
        assert_eq!(err.code, TaskErrorCode::PolicyDenied);
        let err = isolation::isolate_with(&no_nft(), 60, &env).unwrap_err();
        assert_eq!(err.code, TaskErrorCode::PolicyDenied);
    }

    #[test]
    fn missing_nft_is_unsupported() {
        let env = env("10.20.0.1:7443");
        let err = block::block_with(&no_nft(), &targets(&["192.0.2.7"]), 60, &env).unwrap_err();
        assert_eq!(err.code, TaskErrorCode::Unsupported);
        let err = isolation::release_with(&no_nft(), &env).unwrap_err();
        assert_eq!(err.code, TaskErrorCode::Unsupported);
    }
}
