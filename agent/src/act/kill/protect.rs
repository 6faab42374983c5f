//! Which processes a kill spares, decided by what a process *is*, never by a name it can set.
//!
//! A process name (`/proc/PID/comm`, `argv[0]`) is whatever the process says: any user can
//! run a copy of a binary under a protected name, or write one into `/proc/self/comm`. So a
//! `protected_processes` entry is resolved to executables by identity (device and inode):
//! - an absolute path (`/usr/sbin/sshd`) protects every process running that file;
//! - a bare name (`sshd`) protects every process running a root-owned file of that name in the
//!   system's program directories ([`SYSTEM_DIRS`]), the places a user cannot write.
//!
//! A process's executable is read from `/proc/PID/exe`, which the kernel keeps: renaming the
//! process, or the file, changes nothing. A protected executable protects a process only when
//! it runs as root, a system account or a protected user: an unprivileged user who starts
//! `/usr/sbin/sshd` (with `LD_PRELOAD`, say) gets no shield from it. `protected_users` protects
//! every process whose real or effective uid (`/proc/PID/status`) is one of them.

use std::{collections::HashMap, os::unix::fs::MetadataExt};

use crate::collect::IdNames;

/// Where a bare protected name is looked for.
pub const SYSTEM_DIRS: &[&str] = &[
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/lib/systemd",
    "/lib/systemd",
];

/// The protected executables and users, resolved once per action.
#[derive(Debug, Default)]
pub(crate) struct Protected {
    /// (device, inode) of an executable → the file and the policy entry that named it.
    exes: HashMap<(u64, u64), (String, String)>,
    /// uid → the policy entry that named it.
    users: HashMap<u32, String>,
}

impl Protected {
    /// Resolves the policy's `protected_processes` and `protected_users` as the host is now.
    /// Entries that name nothing here protect nothing (and are not an error: a policy is
    /// shared by hosts that differ).
    pub(crate) fn resolve(processes: &[String], users: &[String]) -> Self {
        let mut out = Self::default();
        for entry in processes {
            let candidates: Vec<String> = if entry.starts_with('/') {
                vec![entry.clone()]
            } else {
                SYSTEM_DIRS
                    .iter()
                    .map(|dir| format!("{dir}/{entry}"))
                    .collect()
            };
            for file in candidates {
                let Ok(meta) = std::fs::metadata(&file) else {
                    continue;
                };
                if !meta.is_file() || (!entry.starts_with('/') && meta.uid() != 0) {
                    continue;
                }
                out.exes
                    .entry((meta.dev(), meta.ino()))
                    .or_insert_with(|| (file, entry.clone()));
            }
        }
        let names = if users.iter().any(|u| u.parse::<u32>().is_err()) {
            IdNames::load()
        } else {
            IdNames::default()
        };
        for entry in users {
            let uid = entry.parse::<u32>().ok().or_else(|| names.uid_of(entry));
            if let Some(uid) = uid {
                out.users.insert(uid, entry.clone());
            }
        }
        out
    }

    /// Why `pid` is protected, if it is.
    pub(crate) fn why(&self, pid: u32) -> Option<String> {
        let proc_dir = format!("/proc/{pid}");
        let uids = uids(&proc_dir)?;
        if let Some(entry) = uids.iter().find_map(|uid| self.users.get(uid)) {
            return Some(format!(
                "it runs as a protected user (policy protected_users: {entry})"
            ));
        }
        // An unprivileged process gets no shield from the program it runs.
        if !uids.iter().all(|&uid| uid < SYSTEM_UID_LIMIT) {
            return None;
        }
        // Following the exe link opens the file the process runs, even if it was renamed or
        // deleted since.
        let meta = std::fs::metadata(format!("{proc_dir}/exe")).ok()?;
        self.exes
            .get(&(meta.dev(), meta.ino()))
            .map(|(file, entry)| {
                format!(
                    "it runs {file}, a protected executable (policy protected_processes: {entry})"
                )
            })
    }
}

/// Below this uid: root and system accounts, which no unprivileged user can become.
const SYSTEM_UID_LIMIT: u32 = 1000;

/// The real and effective uid of a process, from `/proc/PID/status` (the owner of `/proc/PID`
/// turns to root for a process that makes itself non-dumpable).
fn uids(proc_dir: &str) -> Option<[u32; 2]> {
    let status = std::fs::read_to_string(format!("{proc_dir}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    let mut ids = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse::<u32>().ok());
    Some([ids.next()??, ids.next()??])
}
