//! What collectors return. The agent sends these as JSON inside [`crate::message::TaskOutput::Json`]
//! so the controller can store and serve them as they are; the CLI reads them back into these
//! types to print tables.

use serde::{Deserialize, Serialize};

/// The name of the file Cordon puts into every directory it keeps secrets in (a controller's
/// data directory, the quickstart's, a responder's key directory). An agent denies collection
/// of any directory holding one, wherever it is; the file's contents do not matter.
pub const PRIVATE_DIR_MARKER: &str = ".cordon-private";

/// What the marker file says to a person who finds it.
pub const PRIVATE_DIR_MARKER_TEXT: &str = "This directory holds Cordon secrets. Cordon agents \
refuse to collect anything in it (stat, hash, list, fetch, watch, hunt). Do not remove this file.\n";

/// Marks `dir` as holding Cordon secrets, so that no Cordon agent on this host collects
/// anything in it: the controller's `init`, the quickstart and `cordon keys generate` all call
/// this. The marker is world-readable (0644) and owned by whoever wrote it; an agent honours it
/// only from a trusted owner. Idempotent.
pub fn mark_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(dir.join(PRIVATE_DIR_MARKER));
    match created {
        Ok(mut file) => file.write_all(PRIVATE_DIR_MARKER_TEXT.as_bytes()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// One process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: Option<u32>,
    pub name: String,
    pub exe: Option<String>,
    pub cmdline: Vec<String>,
    pub uid: Option<u32>,
    pub user: Option<String>,
    /// Start time, ms since the epoch: with the pid, what identifies a process over time.
    pub start_time_ms: i64,
    pub memory_bytes: u64,
    /// CPU use since the previous sample, in percent of one core (0 on the first sample).
    pub cpu_percent: f32,
    /// SHA-256 of the executable, when asked for and readable.
    pub exe_sha256: Option<String>,
}

/// `TaskKind::Processes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProcessList {
    pub collected_at_ms: i64,
    pub processes: Vec<ProcessInfo>,
}

/// `TaskKind::ProcessDetail`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProcessDetail {
    pub process: ProcessInfo,
    pub cwd: Option<String>,
    /// Targets of the process's open file descriptors (files, sockets, pipes).
    pub open_files: Vec<String>,
    /// `KEY=VALUE` strings, only when asked for.
    pub environment: Option<Vec<String>>,
    pub children: Vec<u32>,
}

/// A TCP or UDP socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SocketInfo {
    /// "tcp" or "udp".
    pub protocol: String,
    /// 4 or 6.
    pub family: u8,
    pub local_address: String,
    pub local_port: u16,
    pub remote_address: String,
    pub remote_port: u16,
    /// e.g. "LISTEN", "ESTABLISHED"; for UDP "UNCONN" or "ESTABLISHED".
    pub state: String,
    pub uid: u32,
    pub inode: u64,
    /// The owning process, when it could be found.
    pub pid: Option<u32>,
    pub process_name: Option<String>,
}

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InterfaceInfo {
    pub name: String,
    pub mac: String,
    /// Addresses with prefix, e.g. "10.0.0.5/24".
    pub addresses: Vec<String>,
}

/// `TaskKind::Network`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NetworkSnapshot {
    pub collected_at_ms: i64,
    pub sockets: Vec<SocketInfo>,
    pub interfaces: Vec<InterfaceInfo>,
}

/// A logged-in user session (utmp).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoggedInUser {
    pub name: String,
    pub terminal: String,
    pub host: String,
    pub login_time_ms: i64,
    pub pid: u32,
}

/// `TaskKind::System`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SystemInfo {
    pub hostname: String,
    pub os: String,
    pub kernel: String,
    pub arch: String,
    pub boot_time_ms: i64,
    pub users: Vec<LoggedInUser>,
}

/// File types as collectors report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// `TaskKind::FileStat` (lstat: a symlink is reported as itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileStat {
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits and file type bits as in st_mode.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub modified_ms: i64,
    pub accessed_ms: i64,
    pub changed_ms: i64,
    pub inode: u64,
    pub symlink_target: Option<String>,
}

/// `TaskKind::FileHash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileHash {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DirEntry {
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    pub mode: u32,
    pub modified_ms: i64,
    pub depth: u32,
}

/// Something a listing could not read; reported, never fatal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListProblem {
    pub path: String,
    pub problem: String,
}

/// `TaskKind::ListDir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DirListing {
    pub root: String,
    pub entries: Vec<DirEntry>,
    pub problems: Vec<ListProblem>,
    /// True when `max_entries` cut the listing short.
    pub truncated: bool,
}

/// A file a hunt asked about, as found on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HuntFile {
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    /// Only when the query named a hash (then it is that hash).
    pub sha256: Option<String>,
}

/// `TaskKind::Hunt`: what matched the query on one host. The rules are in [`crate::hunt`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HuntMatches {
    /// Whether every part of the query held on this host. When false the lists are empty:
    /// a host that does not match reports nothing.
    pub matched: bool,
    pub collected_at_ms: i64,
    /// Matching processes; with network filters, the owners of the matching sockets.
    pub processes: Vec<ProcessInfo>,
    /// Matching sockets (only when the query has network filters).
    pub sockets: Vec<SocketInfo>,
    /// The file named by the query, when it exists (and has the asked hash).
    pub file: Option<HuntFile>,
    /// More processes or sockets matched than one answer carries
    /// ([`crate::hunt::MAX_REPORTED`] of each).
    pub truncated: bool,
}

/// Where a quarantined item is: how far its last operation got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum VaultState {
    /// A quarantine started and did not finish (the agent settles it when it next opens the
    /// vault).
    Pending,
    /// In the vault, defanged: `cordon restore` puts it back.
    Quarantined,
    /// A restore started and did not finish.
    Restoring,
    /// Put back where it came from; the record stays.
    Restored,
}

impl VaultState {
    /// The state as JSON and tables name it.
    pub fn as_str(self) -> &'static str {
        match self {
            VaultState::Pending => "pending",
            VaultState::Quarantined => "quarantined",
            VaultState::Restoring => "restoring",
            VaultState::Restored => "restored",
        }
    }
}

/// One item of an agent's quarantine vault, from its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VaultItem {
    /// The quarantine id (what `restore` takes).
    pub id: String,
    /// Where the file lived, and where a restore puts it.
    pub original_path: String,
    pub state: VaultState,
    /// SHA-256 of the bytes kept; absent only while `pending`.
    pub sha256: Option<String>,
    pub size: u64,
    pub quarantined_at_ms: i64,
    pub restored_at_ms: Option<i64>,
}

/// `TaskKind::Quarantined`: every item the vault records, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VaultListing {
    pub items: Vec<VaultItem>,
    /// True when there were more than the agent lists at once (the oldest are listed).
    pub truncated: bool,
}
