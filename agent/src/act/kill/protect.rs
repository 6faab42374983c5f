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
//! process, or the file, changes nothing. `protected_users` protects every process whose
//! effective user is one of them (the owner of `/proc/PID`, set by the kernel).

use std::{collections::HashMap, os::unix::fs::MetadataExt, path::Path};

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
        if let Ok(meta) = std::fs::metadata(Path::new(&proc_dir)) {
            if let Some(entry) = self.users.get(&meta.uid()) {
                return Some(format!(
                    "it runs as a protected user (policy protected_users: {entry})"
                ));
            }
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
