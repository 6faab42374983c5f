//! The tree walk of a tree kill: freeze the root and every descendant with SIGSTOP, rescanning
//! `/proc` until no new descendant appears (see [`super`] for why freeze first).

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use cordon_protocol::message::{TaskError, TaskErrorCode};
use rustix::process::Signal;

use super::{
    check_member_rails, no_process, parse_with_state, protect::Protected, read_stat, signal_error,
    Bound, POLL,
};
use crate::act::ActEnv;
use crate::collect::{
    process::boot_time_ms,
    procfs::{self, ReadBuf, Stat},
    task_error,
};

/// How long a tree walk waits for SIGSTOP to take hold before scanning again.
const STOP_WAIT: Duration = Duration::from_secs(1);
/// Most processes one tree kill takes on (a fork bomb is stopped and killed up to this many).
const MAX_TREE: usize = 10_000;
/// Most rescans of `/proc` in a tree walk; a frozen tree settles in two or three.
const MAX_SCANS: usize = 64;

/// A member of a tree being killed.
pub(super) struct Member {
    pub bound: Bound,
    pub ppid: u32,
    /// Stopped before this action came (job control): not continued if the action is refused.
    was_stopped: bool,
}

/// A member of the tree a rail forbids: left running, and named in the receipt.
pub(super) struct Spared {
    pub pid: u32,
    pub name: String,
    pub why: String,
}

/// Stops `root` and all its descendants but the protected ones, rescanning until no new one
/// appears. Returns the stopped members, root first, whether the walk finished (false if it
/// hit [`MAX_TREE`] or [`MAX_SCANS`]), and the members it spared.
pub(super) fn freeze_tree(
    root: Bound,
    env: &ActEnv,
    protected: &Protected,
) -> Result<(Vec<Member>, bool, Vec<Spared>), TaskError> {
    let boot_ms = boot_time_ms()
        .ok_or_else(|| task_error(TaskErrorCode::Internal, "/proc/stat: no readable boot time"))?;
    let (ppid, was_stopped) = match read_stat(root.pid) {
        Some((stat, state)) => (stat.ppid, state == b'T'),
        None => return Err(no_process(root.pid)),
    };
    root.signal(Signal::STOP)
        .map_err(|e| signal_error(&root, "SIGSTOP", e))?;
    let mut known: HashSet<(u32, i64)> = HashSet::from([(root.pid, root.start_time_ms)]);
    let mut members = vec![Member {
        bound: root,
        ppid,
        was_stopped,
    }];
    let mut spared = Vec::new();
    for _ in 0..MAX_SCANS {
        wait_stopped(&members);
        let found = descendants(&members[0].bound, boot_ms);
        let new: Vec<_> = found
            .into_iter()
            .filter(|(pid, _, start, _)| !known.contains(&(*pid, *start)))
            .collect();
        if new.is_empty() {
            return Ok((members, true, spared));
        }
        for (pid, stat, start, state) in new {
            known.insert((pid, start));
            if let Err(why) = check_member_rails(pid, &stat.comm, env, protected) {
                spared.push(Spared {
                    pid,
                    name: stat.comm.clone(),
                    why,
                });
                continue;
            }
            // Exited (or was recycled) since the scan: nothing to stop.
            let Ok(bound) = Bound::open(pid, start, &stat.comm) else {
                continue;
            };
            if bound.signal(Signal::STOP).is_err() {
                continue;
            }
            members.push(Member {
                bound,
                ppid: stat.ppid,
                was_stopped: state == b'T',
            });
            if members.len() >= MAX_TREE {
                return Ok((members, false, spared));
            }
        }
    }
    Ok((members, false, spared))
}

/// Every descendant of `root` in one scan of `/proc`: (pid, stat, start time, state letter).
fn descendants(root: &Bound, boot_ms: i64) -> Vec<(u32, Stat, i64, u8)> {
    let Ok(pids) = procfs::pids() else {
        return Vec::new();
    };
    let all = procfs::parallel_map(&pids, ReadBuf::new, |&pid, buf| {
        let (stat, state) = parse_with_state(buf.read(&format!("/proc/{pid}/stat")).ok()?)?;
        Some((pid, stat, state))
    });
    let mut children: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, (_, stat, _)) in all.iter().enumerate() {
        children.entry(stat.ppid).or_default().push(i);
    }
    let mut out = Vec::new();
    let mut queue = vec![root.pid];
    let mut seen = HashSet::from([root.pid]);
    while let Some(parent) = queue.pop() {
        for &i in children.get(&parent).into_iter().flatten() {
            let (pid, stat, state) = &all[i];
            if seen.insert(*pid) {
                queue.push(*pid);
                let start = stat.start_time_ms(boot_ms);
                out.push((*pid, stat.clone(), start, *state));
            }
        }
    }
    out
}

/// Waits (bounded) until every member shows as stopped or dead: SIGSTOP is delivered
/// asynchronously, and a process not yet stopped could still fork.
fn wait_stopped(members: &[Member]) {
    let deadline = Instant::now() + STOP_WAIT;
    while members
        .iter()
        .any(|m| !matches!(m.bound.state(), None | Some(b'T' | b't' | b'Z' | b'X')))
        && Instant::now() < deadline
    {
        std::thread::sleep(POLL);
    }
}

/// Continues the members this action stopped.
pub(super) fn resume(members: &[Member]) {
    for m in members.iter().filter(|m| !m.was_stopped) {
        let _ = m.bound.signal(Signal::CONT);
    }
}
