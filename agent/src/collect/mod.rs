//! On-demand collectors: processes, network, system and files, one module each. Every collector
//! is blocking (it reads `/proc` and the file system) and is meant to run on a blocking thread;
//! each returns the types of [`cordon_protocol::collect`] or a [`TaskError`] whose code a
//! responder can act on and whose message names the input.
//!
//! This module holds what they share: path validation, I/O error mapping, and uid/gid → name
//! lookup; `procfs` holds the fast `/proc` reading the process and socket collectors share.

pub mod cancel;
pub mod fetch;
pub mod file;
pub mod gate;
pub mod glob;
pub mod hunt;
pub mod listing;
pub mod network;
pub mod process;
pub mod process_detail;
pub(crate) mod procfs;
pub mod snapshot;
pub mod system;
pub mod watch;

use std::{
    collections::HashMap,
    io,
    path::{Component, Path, PathBuf},
};

use cordon_protocol::message::{TaskError, TaskErrorCode};

/// Longest path a task may name, in bytes (PATH_MAX).
pub const MAX_PATH_LEN: usize = 4096;

/// Builds a [`TaskError`].
pub(crate) fn task_error(code: TaskErrorCode, message: impl Into<String>) -> TaskError {
    TaskError {
        code,
        message: message.into(),
    }
}

/// Checks a path that came from the controller: absolute, no NUL byte, no `..` component, at
/// most [`MAX_PATH_LEN`] bytes. `..` is refused rather than resolved so that what the agent's
/// path policy sees is the path that gets opened.
pub fn validate_path(path: &str) -> Result<PathBuf, TaskError> {
    let invalid = |why: &str| {
        task_error(
            TaskErrorCode::InvalidInput,
            format!("{}: {why}", path.escape_debug()),
        )
    };
    if path.len() > MAX_PATH_LEN {
        // The path itself would make the message huge; name its start only.
        let start: String = path.chars().take(64).collect();
        return Err(task_error(
            TaskErrorCode::InvalidInput,
            format!(
                "{}…: path is {} bytes, longer than {MAX_PATH_LEN}",
                start.escape_debug(),
                path.len()
            ),
        ));
    }
    if path.contains('\0') {
        return Err(invalid("path contains a NUL byte"));
    }
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(invalid("path must be absolute"));
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(invalid("path must not contain `..`"));
    }
    Ok(p.to_path_buf())
}

/// Maps an I/O error on `path` to a task error: missing → `NotFound`, refused →
/// `PermissionDenied`, anything else `Internal`. The message names the path.
pub fn io_error(path: &Path, err: &io::Error) -> TaskError {
    let code = match err.kind() {
        // ENOTDIR: a component of the path is not a directory, so the path does not exist.
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => TaskErrorCode::NotFound,
        io::ErrorKind::PermissionDenied => TaskErrorCode::PermissionDenied,
        _ => TaskErrorCode::Internal,
    };
    task_error(code, format!("{}: {err}", path.display()))
}

/// uid → user name and gid → group name, parsed from `/etc/passwd` and `/etc/group` once per
/// collection so a listing of thousands of entries costs two file reads, not thousands.
/// Accounts that only a directory service knows (LDAP, sssd) are not resolved.
#[derive(Debug, Default, Clone)]
pub struct IdNames {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl IdNames {
    /// Reads `/etc/passwd` and `/etc/group`; a file that cannot be read leaves its map empty
    /// (names are a convenience, never a reason to fail a collection).
    pub fn load() -> Self {
        Self::from_files(Path::new("/etc/passwd"), Path::new("/etc/group"))
    }

    /// As [`IdNames::load`], from other files.
    pub fn from_files(passwd: &Path, group: &Path) -> Self {
        let read = |p: &Path| {
            std::fs::read(p)
                .map(|b| parse_id_file(&b))
                .unwrap_or_default()
        };
        Self {
            users: read(passwd),
            groups: read(group),
        }
    }

    /// The user name of `uid`, if the passwd file has it.
    pub fn user(&self, uid: u32) -> Option<String> {
        self.users.get(&uid).cloned()
    }

    /// The uid of user `name`, if the passwd file has it.
    pub fn uid_of(&self, name: &str) -> Option<u32> {
        self.users
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(&uid, _)| uid)
    }

    /// The group name of `gid`, if the group file has it.
    pub fn group(&self, gid: u32) -> Option<String> {
        self.groups.get(&gid).cloned()
    }
}

/// Parses `name:password:id:…` lines (the shape both passwd and group share). The first entry
/// for an id wins, as getpwuid(3) does.
fn parse_id_file(bytes: &[u8]) -> HashMap<u32, String> {
    let mut map = HashMap::new();
    for line in String::from_utf8_lossy(bytes).lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut fields = line.split(':');
        let (Some(name), Some(_), Some(id)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if let Ok(id) = id.trim().parse::<u32>() {
            if !name.is_empty() {
                map.entry(id).or_insert_with(|| name.to_string());
            }
        }
    }
    map
}

/// Seconds + nanoseconds since the epoch → ms, as collectors report times.
pub(crate) fn epoch_ms(secs: i64, nsecs: i64) -> i64 {
    secs.saturating_mul(1000).saturating_add(nsecs / 1_000_000)
}

/// This process's effective uid, read from `/proc/self/status` (the crate forbids `unsafe`,
/// so no `geteuid`). `None` when `/proc` is unavailable.
pub fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // "Uid:\treal\teffective\tsaved\tfs"
    line.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_from_the_controller_are_checked() {
        assert_eq!(
            validate_path("/etc/hosts").unwrap(),
            PathBuf::from("/etc/hosts")
        );
        assert_eq!(validate_path("/").unwrap(), PathBuf::from("/"));
        for (bad, why) in [
            ("etc/hosts", "absolute"),
            ("", "absolute"),
            ("/tmp/../etc/shadow", "`..`"),
            ("/tmp/..", "`..`"),
            ("/tmp/a\0b", "NUL"),
        ] {
            let err = validate_path(bad).unwrap_err();
            assert_eq!(err.code, TaskErrorCode::InvalidInput, "{bad:?}");
            assert!(err.message.contains(why), "{bad:?}: {}", err.message);
        }
        let err = validate_path("/tmp/../etc/shadow").unwrap_err();
        assert!(
            err.message.contains("/tmp/../etc/shadow"),
            "names the path: {}",
            err.message
        );
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        let err = validate_path(&long).unwrap_err();
        assert_eq!(err.code, TaskErrorCode::InvalidInput);
        assert!(err.message.contains("longer than 4096"), "{}", err.message);
        // A dot component is harmless and allowed.
        assert!(validate_path("/tmp/./x").is_ok());
    }

    #[test]
    fn io_errors_keep_their_meaning_and_name_the_path() {
        let p = Path::new("/some/where");
        let nf = io_error(p, &io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(nf.code, TaskErrorCode::NotFound);
        assert!(nf.message.starts_with("/some/where: "));
        let pd = io_error(p, &io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(pd.code, TaskErrorCode::PermissionDenied);
        let other = io_error(p, &io::Error::other("disk on fire"));
        assert_eq!(other.code, TaskErrorCode::Internal);
        assert!(other.message.contains("disk on fire"));
    }

    #[test]
    fn passwd_and_group_files_resolve_ids() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        let group = dir.path().join("group");
        std::fs::write(
            &passwd,
            "root:x:0:0:root:/root:/bin/bash\n# comment\nbroken line\nalice:x:1000:1000::/home/alice:/bin/sh\ndup:x:1000:1000::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(&group, "root:x:0:\nstaff:x:50:alice\n").unwrap();
        let names = IdNames::from_files(&passwd, &group);
        assert_eq!(names.user(0).as_deref(), Some("root"));
        assert_eq!(
            names.user(1000).as_deref(),
            Some("alice"),
            "first entry wins"
        );
        assert_eq!(names.user(4242), None);
        assert_eq!(names.group(50).as_deref(), Some("staff"));
        let none = IdNames::from_files(&dir.path().join("nope"), &dir.path().join("nope"));
        assert_eq!(none.user(0), None);
    }

    #[test]
    fn effective_uid_is_readable() {
        assert!(effective_uid().is_some());
    }
}
