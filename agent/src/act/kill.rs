//! Kill a process, bound to its start time so a recycled pid is never hit; optionally its whole
//! tree. Never pid 1, the agent itself or its ancestors, or a protected process — protected by
//! what it runs and as whom ([`protect`]), never by a name it can set.
//!
//! **Binding.** The action names a pid *and* the time that process started. The agent opens a
//! pidfd on the pid and only then compares the start time: a pidfd designates the process it was
//! opened on for good, so once the start time is seen to match after opening, every signal sent
//! through it reaches the process the signer meant, however fast pids are recycled afterwards.
//! Where the kernel has no pidfds (before 5.3, or a sandbox forbids them) the start time is
//! compared again right before `kill(2)`, which leaves a window of microseconds.
//!
//! A start time that differs is refused with `InvalidInput`, naming both times: the signed
//! parameters no longer describe a live process (the pid was recycled, or the signer read the
//! wrong time). It is not `PolicyDenied`, because no rail forbids the kill (a signature over the
//! right start time would be honoured), and the pid does exist, so not `NotFound` either.
//!
//! **Terminate.** `Terminate` is the same binding and rails, then SIGTERM (and SIGCONT, so a
//! stopped process can act on it), a wait of the signed grace, and SIGKILL only if the process
//! is still running then.
//!
//! **Trees.** With `tree`, the whole tree is frozen before anything dies: the root gets SIGSTOP,
//! then every descendant found through the parent pids in `/proc/PID/stat`, and `/proc` is scanned
//! again until no new descendant appears. A stopped process cannot fork, so the set stops
//! growing. (Killing children first without freezing would let the parent fork new ones; killing
//! the parent first would hand the children to init, out of reach of the tree walk.) Each member
//! is bound by its own pidfd and start time when it is found. Then SIGKILL, deepest first, root
//! last. A member a rail forbids (a protected executable or user, pid 1, the agent) is spared:
//! never stopped, never signalled, and named in the receipt with the reason; the rest of the
//! tree, its own descendants included, is killed. If a rail forbids the root, nothing is killed.

mod protect;
#[cfg(test)]
mod tests;
mod tree;

use std::{
    collections::HashSet,
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

use cordon_protocol::message::{TaskError, TaskErrorCode};
use rustix::{
    io::Errno,
    process::{Pid, PidfdFlags, Signal},
};
use serde_json::json;

use self::{protect::Protected, tree::freeze_tree};
use super::{refused_by_rail, ActEnv, Outcome};
use crate::collect::{
    process::{boot_time_ms, process_start_time_ms},
    process_detail,
    procfs::{parse_stat, ReadBuf, Stat},
    task_error,
};

/// How long a killed process may take to disappear before the action reports failure.
const EXIT_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(10);
/// Longest parent chain followed from the agent (guards against a loop in a racing `/proc`).
const MAX_ANCESTRY: usize = 4096;

/// Kills `pid` if it still is the process that started at `start_time_ms`; with `tree`, its
/// descendants too. Returns what was there, what was done, and `/proc` afterwards.
pub fn kill(pid: u32, start_time_ms: i64, tree: bool, env: &ActEnv) -> Result<Outcome, TaskError> {
    let (root, mut before, protected) = pin(pid, start_time_ms, env)?;
    if !tree {
        root.signal(Signal::KILL)
            .map_err(|e| signal_error(&root, "SIGKILL", e))?;
        wait_gone(std::slice::from_ref(&root))?;
        return Ok(Outcome {
            before,
            done: format!("killed pid {pid} ({})", root.name),
            after: json!({ "pid": pid, "running": false, "reaped": !exists(&root) }),
        });
    }
    kill_tree(root, &mut before, env, &protected)
}

/// Asks `pid` (if it still is the process that started at `start_time_ms`) to end with
/// SIGTERM; if it is still running after `grace_secs`, kills it. The rails are a kill's.
pub fn terminate(
    pid: u32,
    start_time_ms: i64,
    grace_secs: u64,
    env: &ActEnv,
) -> Result<Outcome, TaskError> {
    cordon_protocol::action::check_grace(grace_secs)
        .map_err(|why| task_error(TaskErrorCode::InvalidInput, why))?;
    let (root, before, _) = pin(pid, start_time_ms, env)?;
    root.signal(Signal::TERM)
        .map_err(|e| signal_error(&root, "SIGTERM", e))?;
    // A stopped process acts on SIGTERM only once it runs again.
    let _ = root.signal(Signal::CONT);
    let grace = Duration::from_secs(grace_secs);
    let deadline = Instant::now() + grace;
    while !root.is_gone() && Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
    let done = if root.is_gone() {
        format!("pid {pid} ({}) ended on SIGTERM", root.name)
    } else {
        match root.signal(Signal::KILL) {
            // It ended between the last look and the signal.
            Ok(()) | Err(Errno::SRCH) => {}
            Err(e) => return Err(signal_error(&root, "SIGKILL", e)),
        }
        wait_gone(std::slice::from_ref(&root))?;
        format!(
            "pid {pid} ({}) was still running {grace_secs} s after SIGTERM: killed",
            root.name
        )
    };
    Ok(Outcome {
        before,
        done,
        after: json!({ "pid": pid, "running": false, "reaped": !exists(&root) }),
    })
}

/// The checks every kill starts with: the rails, not a kernel thread, and the process pinned
/// by its start time. Returns it, what it was, and the protected set the rails used.
fn pin(
    pid: u32,
    start_time_ms: i64,
    env: &ActEnv,
) -> Result<(Bound, serde_json::Value, Protected), TaskError> {
    // NotFound for a missing pid, and for a thread id (a thread is not a process).
    let detail = process_detail::detail(pid, false)?;
    let info = detail.process;
    let protected =
        Protected::resolve(&env.policy.protected_processes, &env.policy.protected_users);
    // Rails first: they hold whatever the start time says, and name the reason a responder
    // most needs to hear.
    check_rails(pid, &info.name, env, &protected)?;
    let state = read_stat(pid);
    if state
        .as_ref()
        .is_some_and(|(stat, _)| stat.is_kernel_thread())
    {
        return Err(task_error(
            TaskErrorCode::InvalidInput,
            format!(
                "pid {pid} ({}) is a kernel thread: signals cannot end it",
                info.name
            ),
        ));
    }
    let root = Bound::open(pid, start_time_ms, &info.name)?;
    let before = json!({
        "pid": pid,
        "ppid": info.ppid,
        "name": info.name,
        "cmdline": info.cmdline,
        "exe": info.exe,
        "user": info.user,
        "uid": info.uid,
        "start_time_ms": info.start_time_ms,
        // `Z`: already exited, waiting for its parent; `T`: stopped.
        "state": state.map(|(_, s)| char::from(s).to_string()),
    });
    Ok((root, before, protected))
}

/// Freezes the tree under `root`, then kills it deepest first (see the module documentation).
fn kill_tree(
    root: Bound,
    before: &mut serde_json::Value,
    env: &ActEnv,
    protected: &Protected,
) -> Result<Outcome, TaskError> {
    let pid = root.pid;
    let (members, complete, spared) = freeze_tree(root, env, protected)?;
    before["descendants"] = members[1..]
        .iter()
        .map(|m| {
            json!({
                "pid": m.bound.pid,
                "ppid": m.ppid,
                "name": m.bound.name,
                "start_time_ms": m.bound.start_time_ms,
            })
        })
        .collect::<Vec<_>>()
        .into();
    before["tree_complete"] = complete.into();
    before["spared"] = spared
        .iter()
        .map(|s| json!({ "pid": s.pid, "name": s.name, "why": s.why }))
        .collect::<Vec<_>>()
        .into();
    // Deepest first, root last. Everything is stopped, so this order only keeps children
    // from being handed to init while they still wait for their signal.
    for m in members.iter().rev() {
        match m.bound.signal(Signal::KILL) {
            Ok(()) | Err(Errno::SRCH) => {}
            Err(e) => {
                // Nothing is left frozen by a kill that could not finish.
                tree::resume(&members);
                return Err(signal_error(&m.bound, "SIGKILL", e));
            }
        }
    }
    let bounds: Vec<Bound> = members.into_iter().map(|m| m.bound).collect();
    wait_gone(&bounds)?;
    let descendants = bounds.len() - 1;
    let mut done = format!(
        "killed pid {pid} ({}) and its {descendants} descendant{}",
        bounds[0].name,
        if descendants == 1 { "" } else { "s" }
    );
    if !spared.is_empty() {
        let named: Vec<String> = spared
            .iter()
            .map(|s| format!("pid {} ({}): {}", s.pid, s.name, s.why))
            .collect();
        done.push_str(&format!("; spared {}", named.join("; ")));
    }
    Ok(Outcome {
        before: before.take(),
        done,
        after: json!({
            "pid": pid,
            "running": false,
            "reaped": !exists(&bounds[0]),
            "descendants_killed": descendants,
            "descendants_spared": spared.len(),
            "descendants_running": 0,
        }),
    })
}

/// The rails for the process a kill names: not pid 1, not the agent, not one of the agent's
/// ancestors (its supervisor, whose death could take the agent down), not protected.
fn check_rails(pid: u32, name: &str, env: &ActEnv, protected: &Protected) -> Result<(), TaskError> {
    check_member_rails(pid, name, env, protected).map_err(refused_by_rail)?;
    if agent_ancestors(env.agent_pid).contains(&pid) {
        return Err(refused_by_rail(format!(
            "pid {pid} ({name}) is an ancestor of the Cordon agent (pid {}): never killed",
            env.agent_pid
        )));
    }
    Ok(())
}

/// The rails every member of a tree must pass; `Err` says why one is spared.
fn check_member_rails(
    pid: u32,
    name: &str,
    env: &ActEnv,
    protected: &Protected,
) -> Result<(), String> {
    if pid == 1 {
        return Err(format!("pid 1 ({name}) is the init process: never killed"));
    }
    if pid == env.agent_pid {
        return Err(format!(
            "pid {pid} ({name}) is the Cordon agent itself: never killed"
        ));
    }
    if let Some(why) = protected.why(pid) {
        return Err(format!(
            "pid {pid} ({name}) is protected: {why}; never killed"
        ));
    }
    Ok(())
}

/// The agent's parent, grandparent, … up to (not including) pid 0.
fn agent_ancestors(agent_pid: u32) -> HashSet<u32> {
    let mut seen = HashSet::new();
    let mut pid = agent_pid;
    while seen.len() < MAX_ANCESTRY {
        match read_stat(pid) {
            Some((stat, _)) if stat.ppid != 0 && seen.insert(stat.ppid) => pid = stat.ppid,
            _ => break,
        }
    }
    seen
}

/// A process pinned for signalling: by pidfd where the kernel has them.
struct Bound {
    pid: u32,
    start_time_ms: i64,
    name: String,
    handle: Handle,
}

enum Handle {
    Pidfd(OwnedFd),
    /// No pidfds here: the start time is compared again before each signal.
    Pid(Pid),
}

impl Bound {
    /// Pins `pid` if it is the process that started at `start_time_ms`.
    fn open(pid: u32, start_time_ms: i64, name: &str) -> Result<Self, TaskError> {
        let raw = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| no_process(pid))?;
        check_start_time(pid, start_time_ms)?;
        let handle = match rustix::process::pidfd_open(raw, PidfdFlags::empty()) {
            Ok(fd) => Handle::Pidfd(fd),
            // ENOSYS: kernel before 5.3; EPERM: a seccomp filter that forbids pidfds.
            Err(Errno::NOSYS) | Err(Errno::PERM) => Handle::Pid(raw),
            Err(Errno::SRCH) => return Err(no_process(pid)),
            Err(e) => {
                return Err(task_error(
                    TaskErrorCode::Internal,
                    format!("pid {pid}: pidfd_open: {e}"),
                ))
            }
        };
        // The handle now designates one process for good; if that is still the one that
        // started at the signed time, every signal through it reaches the intended process.
        check_start_time(pid, start_time_ms)?;
        Ok(Self {
            pid,
            start_time_ms,
            name: name.to_string(),
            handle,
        })
    }

    fn signal(&self, sig: Signal) -> Result<(), Errno> {
        match &self.handle {
            Handle::Pidfd(fd) => rustix::process::pidfd_send_signal(fd, sig),
            Handle::Pid(raw) => {
                if process_start_time_ms(self.pid) != Some(self.start_time_ms) {
                    return Err(Errno::SRCH);
                }
                rustix::process::kill_process(*raw, sig)
            }
        }
    }

    /// The state letter of this process (`R`, `S`, `T`, `Z`, …); `None` once it is reaped
    /// (or its pid names another process).
    fn state(&self) -> Option<u8> {
        let boot_ms = boot_time_ms()?;
        let (stat, state) = read_stat(self.pid)?;
        (stat.start_time_ms(boot_ms) == self.start_time_ms).then_some(state)
    }

    /// Not running: reaped, or a zombie waiting for its parent to reap it.
    fn is_gone(&self) -> bool {
        matches!(self.state(), None | Some(b'Z' | b'X'))
    }
}

/// Whether the process is still in `/proc` (a zombie counts).
fn exists(b: &Bound) -> bool {
    b.state().is_some()
}

/// `NotFound`, or `InvalidInput` naming both times when the pid now names another process.
fn check_start_time(pid: u32, expected: i64) -> Result<(), TaskError> {
    match process_start_time_ms(pid) {
        None => Err(no_process(pid)),
        Some(actual) if actual != expected => Err(task_error(
            TaskErrorCode::InvalidInput,
            format!(
                "pid {pid} started at {actual} ms since the epoch, not at {expected} as the \
                 action was signed: the pid now names another process (recycled) or the start \
                 time is wrong; nothing was signalled"
            ),
        )),
        Some(_) => Ok(()),
    }
}

fn no_process(pid: u32) -> TaskError {
    task_error(
        TaskErrorCode::NotFound,
        format!("no process with pid {pid}"),
    )
}

fn signal_error(b: &Bound, sig: &str, e: Errno) -> TaskError {
    let code = match e {
        Errno::SRCH => TaskErrorCode::NotFound,
        Errno::PERM => TaskErrorCode::PermissionDenied,
        _ => TaskErrorCode::Internal,
    };
    task_error(code, format!("pid {} ({}): {sig}: {e}", b.pid, b.name))
}

/// `/proc/PID/stat` parsed, with the state letter that follows the name.
fn read_stat(pid: u32) -> Option<(Stat, u8)> {
    let mut buf = ReadBuf::new();
    let bytes = buf.read(&format!("/proc/{pid}/stat")).ok()?;
    parse_with_state(bytes)
}

fn parse_with_state(bytes: &[u8]) -> Option<(Stat, u8)> {
    let close = bytes.iter().rposition(|&b| b == b')')?;
    let state = *bytes.get(close + 2)?;
    Some((parse_stat(bytes)?, state))
}

/// Waits up to [`EXIT_WAIT`] until every process is gone; names those that are not.
fn wait_gone(bounds: &[Bound]) -> Result<(), TaskError> {
    let deadline = Instant::now() + EXIT_WAIT;
    loop {
        let running: Vec<String> = bounds
            .iter()
            .filter(|b| !b.is_gone())
            .map(|b| format!("{} ({})", b.pid, b.name))
            .collect();
        if running.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(task_error(
                TaskErrorCode::Internal,
                format!(
                    "sent SIGKILL, but still running after {} s: pid {}",
                    EXIT_WAIT.as_secs(),
                    running.join(", pid ")
                ),
            ));
        }
        std::thread::sleep(POLL);
    }
}
