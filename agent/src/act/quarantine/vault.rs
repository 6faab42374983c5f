//! The vault: `DATA_DIR/vault/` (mode 0700), one manifest `ID.json` and one data file `ID.bin`
//! per item, a transient `ID.part` while a copy is under way, and `.lock`, which serialises
//! every vault operation (threads and processes alike, through `flock`).
//!
//! A manifest's state says how far an operation got, so that whatever step a crash interrupts,
//! [`Vault::recover_item`] finds the file whole in one place and finishes or undoes the step:
//!
//! - `pending` (a quarantine started): no `ID.bin` → the file never left its origin: drop the
//!   manifest and any `ID.part`. An `ID.bin` (always whole: it only ever appears by a link of the
//!   original inode or by the rename of a verified copy) and an origin that still holds the
//!   same inode or the same bytes → the move did not finish: drop the vault copy. Otherwise the
//!   vault copy *is* the file: hash it, defang it, mark it `quarantined`.
//! - `restoring` (a restore started): no `ID.bin` → it was only removed once the origin held the
//!   file: mark `restored`. An origin with the same inode or bytes → finish: drop the vault copy.
//!   Otherwise undo: drop the half-written temporary at the origin, defang the vault copy again,
//!   mark `quarantined`.

use std::{
    ffi::{OsStr, OsString},
    fs::{DirBuilder, File, OpenOptions},
    io,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::Path,
    time::{Duration, Instant},
};

use cordon_protocol::{
    collect::{VaultItem, VaultListing},
    message::{TaskError, TaskErrorCode},
};
use rustix::{fs::FlockOperation, io::Errno};
use serde::{Deserialize, Serialize};

use super::fsops::{defang, hash_file, same_inode, Dir, DirIdentity, FileMeta};
use crate::collect::{io_error, task_error};

/// Largest manifest read back (they are a few hundred bytes).
const MAX_MANIFEST: u64 = 64 * 1024;
/// Longest wait for another vault operation to finish.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// How far an item's last operation got: the protocol's type, so a listing reports exactly
/// what the manifest says.
pub use cordon_protocol::collect::VaultState as State;

/// Most items one listing reports.
pub const MAX_LISTED: usize = 10_000;
/// Most bytes of paths and fixed fields one listing carries: well inside a frame, whatever the
/// paths are.
pub const MAX_LISTED_BYTES: usize = 2 * 1024 * 1024;
/// What one item costs in a listing besides its path (id, hash, state, numbers, JSON keys).
const ITEM_OVERHEAD: usize = 256;

/// One item's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// A v4 uuid, lowercase and hyphenated.
    pub id: String,
    /// Where the file lived, symlinks in its directory resolved: where restore puts it.
    pub original_path: String,
    /// The path as the action named it.
    pub requested_path: String,
    pub state: State,
    pub file: FileMeta,
    /// The directory the file was in, as it was: restore writes there or nowhere. Absent in
    /// manifests written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_dir: Option<DirIdentity>,
    /// SHA-256 of the bytes in the vault; `None` only while `pending`.
    pub sha256: Option<String>,
    pub quarantined_at_ms: i64,
    pub restored_at_ms: Option<i64>,
}

/// An open, locked vault. The lock is released when this is dropped.
pub struct Vault {
    pub dir: Dir,
    _lock: File,
}

pub fn manifest_name(id: &str) -> OsString {
    format!("{id}.json").into()
}

pub fn data_name(id: &str) -> OsString {
    format!("{id}.bin").into()
}

pub fn part_name(id: &str) -> OsString {
    format!("{id}.part").into()
}

/// The temporary name a cross-file-system restore writes beside the origin before linking it.
pub fn restore_temp_name(id: &str) -> OsString {
    format!(".cordon-restore-{id}").into()
}

/// Whether `id` is a canonical v4-style uuid (lowercase, hyphenated): it becomes a file name,
/// so nothing else may pass.
pub fn is_item_id(id: &str) -> bool {
    uuid::Uuid::try_parse(id).is_ok_and(|u| u.hyphenated().to_string() == id)
}

impl Vault {
    /// Creates the vault if needed (0700), takes its lock, and recovers whatever a crash left
    /// half done.
    pub fn open(data_dir: &Path) -> Result<Self, TaskError> {
        let path = data_dir.join("vault");
        let err = |e: io::Error| io_error(&path, &e);
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .map_err(err)?;
        let meta = std::fs::symlink_metadata(&path).map_err(err)?;
        if !meta.is_dir() {
            return Err(task_error(
                TaskErrorCode::Internal,
                format!("{}: the vault is not a directory", path.display()),
            ));
        }
        if meta.permissions().mode() & 0o777 != 0o700 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
        }
        let dir = Dir::open(&path).map_err(err)?;
        let lock_path = dir.path.join(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| io_error(&lock_path, &e))?;
        // Bounded: an operation holds the lock for as long as it moves one file.
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(Errno::WOULDBLOCK) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(Errno::WOULDBLOCK) => {
                    return Err(task_error(
                        TaskErrorCode::Busy,
                        format!(
                            "{}: the vault stayed locked by another operation for {} s",
                            path.display(),
                            LOCK_WAIT.as_secs()
                        ),
                    ))
                }
                Err(e) => return Err(io_error(&lock_path, &e.into())),
            }
        }
        let vault = Self { dir, _lock: lock };
        vault.recover_all();
        Ok(vault)
    }

    /// The manifest of `id`; `NotFound` if there is none.
    pub fn read(&self, id: &str) -> Result<Manifest, TaskError> {
        let name = manifest_name(id);
        let path = self.dir.path.join(&name);
        let bytes = self
            .dir
            .read_small(&name, MAX_MANIFEST)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => task_error(
                    TaskErrorCode::NotFound,
                    format!("no quarantined file with id {id}"),
                ),
                _ => io_error(&path, &e),
            })?;
        serde_json::from_slice(&bytes).map_err(|e| {
            task_error(
                TaskErrorCode::Internal,
                format!("{}: unreadable manifest: {e}", path.display()),
            )
        })
    }

    /// Every item's manifest as a listing, oldest first (at most [`MAX_LISTED`] items and
    /// [`MAX_LISTED_BYTES`]). An
    /// unreadable manifest is logged and left out: one damaged item must not hide the rest.
    pub fn list(&self) -> Result<VaultListing, TaskError> {
        let entries =
            std::fs::read_dir(&self.dir.path).map_err(|e| io_error(&self.dir.path, &e))?;
        let mut items: Vec<VaultItem> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|name| Some(name.strip_suffix(".json")?.to_owned()))
            .filter(|id| is_item_id(id))
            .filter_map(|id| match self.read(&id) {
                Ok(m) => Some(VaultItem {
                    id: m.id,
                    original_path: m.original_path,
                    state: m.state,
                    sha256: m.sha256,
                    size: m.file.size,
                    quarantined_at_ms: m.quarantined_at_ms,
                    restored_at_ms: m.restored_at_ms,
                }),
                Err(e) => {
                    tracing::warn!(quarantine_id = %id, error = %e.message, "unreadable vault manifest");
                    None
                }
            })
            .collect();
        items.sort_by(|a, b| (a.quarantined_at_ms, &a.id).cmp(&(b.quarantined_at_ms, &b.id)));
        let mut bytes = 0usize;
        let fits = items
            .iter()
            .take(MAX_LISTED)
            .take_while(|item| {
                bytes += item.original_path.len() + ITEM_OVERHEAD;
                bytes <= MAX_LISTED_BYTES
            })
            .count();
        let truncated = fits < items.len();
        items.truncate(fits);
        Ok(VaultListing { items, truncated })
    }

    /// Writes a manifest durably (atomic replace).
    pub fn write(&self, m: &Manifest) -> Result<(), TaskError> {
        let name = manifest_name(&m.id);
        let path = self.dir.path.join(&name);
        let bytes = serde_json::to_vec_pretty(m)
            .map_err(|e| task_error(TaskErrorCode::Internal, format!("{}: {e}", path.display())))?;
        self.dir
            .write_atomic(&name, &bytes)
            .map_err(|e| io_error(&path, &e))
    }

    /// Recovers every item; leftovers of atomic writes are removed. Problems are logged, not
    /// returned: one damaged item must not keep the vault from working.
    fn recover_all(&self) {
        let entries = match std::fs::read_dir(&self.dir.path) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(vault = %self.dir.path.display(), error = %e, "cannot list the vault");
                return;
            }
        };
        let names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        for name in &names {
            if let Some(id) = name.strip_suffix(".json") {
                if is_item_id(id) {
                    if let Err(e) = self.recover_item(id) {
                        tracing::warn!(quarantine_id = id, error = %e, "vault recovery failed");
                    }
                }
            } else if name.ends_with(".json.tmp") {
                let _ = self.dir.unlink_if_present(OsStr::new(name));
            } else if let Some(id) = name.strip_suffix(".part") {
                // A copy whose manifest is gone (or was never written): nothing refers to it.
                if is_item_id(id) && !names.contains(&format!("{id}.json")) {
                    let _ = self.dir.unlink_if_present(OsStr::new(name));
                }
            }
        }
    }

    /// Brings one item to a settled state (`quarantined`, `restored`, or gone) after a crash or
    /// a failed step; see the module documentation for the rules.
    pub fn recover_item(&self, id: &str) -> io::Result<()> {
        let Ok(mut m) = self.read(id) else {
            return Ok(());
        };
        let bin_name = data_name(id);
        let bin_meta = match self.dir.lstat(&bin_name) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        match (m.state, bin_meta) {
            (State::Pending, None) => {
                self.dir.unlink_if_present(&part_name(id))?;
                self.dir.unlink_if_present(&manifest_name(id))?;
                self.dir.sync()?;
                tracing::info!(
                    quarantine_id = id,
                    "unfinished quarantine undone: the file never left"
                );
            }
            (State::Pending, Some(bin_meta)) => {
                let bin = self.dir.open_read(&bin_name)?;
                let (_, sha) = hash_file(&bin)?;
                if origin_holds(&m.original_path, &bin_meta, &sha) {
                    self.dir.unlink(&bin_name)?;
                    self.dir.unlink_if_present(&manifest_name(id))?;
                    self.dir.sync()?;
                    tracing::info!(
                        quarantine_id = id,
                        "unfinished quarantine undone: the file is at its origin"
                    );
                } else {
                    defang(&bin)?;
                    m.state = State::Quarantined;
                    m.sha256 = Some(sha);
                    self.write(&m).map_err(|e| io::Error::other(e.message))?;
                    tracing::info!(quarantine_id = id, "unfinished quarantine completed");
                }
            }
            (State::Restoring, None) => {
                m.state = State::Restored;
                m.restored_at_ms.get_or_insert_with(crate::now_ms);
                self.write(&m).map_err(|e| io::Error::other(e.message))?;
            }
            (State::Restoring, Some(bin_meta)) => {
                let original = Path::new(&m.original_path);
                // Only ever the directory the file came from (see `restore::open_origin_dir`).
                let origin_dir = original
                    .parent()
                    .and_then(|p| super::restore::open_origin_dir(p, &m).ok());
                if let Some(origin_dir) = origin_dir {
                    origin_dir.unlink_if_present(&restore_temp_name(id))?;
                    origin_dir.sync()?;
                }
                let sha = m.sha256.clone().unwrap_or_default();
                if origin_holds(&m.original_path, &bin_meta, &sha) {
                    self.dir.unlink(&bin_name)?;
                    self.dir.sync()?;
                    m.state = State::Restored;
                    m.restored_at_ms.get_or_insert_with(crate::now_ms);
                } else {
                    defang(&self.dir.open_read(&bin_name)?)?;
                    m.state = State::Quarantined;
                }
                self.write(&m).map_err(|e| io::Error::other(e.message))?;
            }
            (State::Quarantined | State::Restored, _) => {}
        }
        Ok(())
    }
}

/// Whether `path` holds, as a regular file, the inode of `bin` or the bytes hashing to `sha`.
fn origin_holds(path: &str, bin: &std::fs::Metadata, sha: &str) -> bool {
    let path = Path::new(path);
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return false;
    };
    let Ok(dir) = Dir::open(parent) else {
        return false;
    };
    match dir.lstat(name) {
        Ok(meta) if meta.is_file() && same_inode(&meta, bin) => true,
        Ok(meta) if meta.is_file() => dir
            .open_read(name)
            .and_then(|f| hash_file(&f))
            .is_ok_and(|(_, h)| !sha.is_empty() && h == sha),
        _ => false,
    }
}
