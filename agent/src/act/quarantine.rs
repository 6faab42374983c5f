//! Quarantine a file into the agent's vault (defanged, with a manifest) and restore it with its
//! exact bytes and metadata. A file is never lost: at every instant it is whole at its origin or
//! whole in the vault.
//!
//! **Quarantine**, in this order:
//! 1. the path is checked (absolute, no `..`), its directory opened and resolved; protected
//!    paths are refused by what is opened (the directory's ancestry and the file's identity,
//!    see [`crate::collect::gate`]), so a symlink, bind mount or hard link into a protected
//!    tree is refused too; so is anything but a regular file (a symlink is refused, not
//!    followed: the responder names the file it points to), and a file with other hard links
//!    (quarantining one name would leave the others, and defanging the shared inode would
//!    defang them all);
//! 2. the file is opened (`O_NOFOLLOW`, access time untouched) and hashed; owner, mode, size,
//!    times and the identity of its directory are recorded, and so are the processes that run
//!    it or hold it open;
//! 3. the manifest is written, state `pending`;
//! 4. the bytes are copied into a new file the vault owns (`ID.part`), fsynced, the copy hashed
//!    and compared, the source checked unchanged, the copy defanged and renamed to `ID.bin`, the
//!    vault fsynced. Always a copy, never the origin's inode: a process that holds the file
//!    open could otherwise rewrite the vault's bytes after the fact;
//! 5. the origin is unlinked, only while its name still points to that inode, and its
//!    directory fsynced;
//! 6. the vault copy is hashed and the manifest marked `quarantined`.
//!
//! **Restore**: the id must be a uuid (it becomes a file name, so it cannot name anything
//! else); the vault copy is hashed against the manifest; the origin directory is opened without
//! following any link and must be the directory (device, inode, owner) the file came from;
//! anything at the origin makes it refuse (never overwritten); manifest `restoring`. Same file system: owner, mode and times are put
//! back on the vault inode (still inside the 0700 vault), then `linkat` gives it its old name,
//! failing rather than replacing a file that appeared meanwhile. Across file systems: a copy
//! beside the origin (`O_EXCL`), fsynced, its hash verified, metadata put back, then linked to
//! the origin name the same way. Only then does the vault copy go; the manifest stays, marked
//! `restored`, as the record.
//!
//! Codes: a bad path or id, a symlink, directory or special file, a file with other hard
//! links, an occupied or replaced origin directory → `InvalidInput`; a protected path → `PolicyDenied`; a missing file, id or origin directory →
//! `NotFound`; a file that changed or moved while being quarantined → `Busy` (nothing moved).

#[cfg(test)]
mod attacks;
mod fsops;
mod restore;
#[cfg(test)]
mod tests;
mod vault;

pub use self::restore::restore;

use std::{
    ffi::OsStr,
    fs::{File, Metadata},
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use cordon_protocol::message::{TaskError, TaskErrorCode};
use serde_json::json;

use self::{
    fsops::{copy_hashing, defang, hash_file, holders, same_inode, Dir, FileMeta},
    vault::{data_name, part_name, Manifest, State, Vault},
};
use super::{refused_by_rail, ActEnv, Outcome};
use crate::collect::{gate::Gate, io_error, task_error, validate_path};

/// What the vault under `data_dir` holds (settling any half-done item first, as every vault
/// operation does).
pub fn list(data_dir: &Path) -> Result<cordon_protocol::collect::VaultListing, TaskError> {
    Vault::open(data_dir)?.list()
}

/// Moves the regular file at `path` into the vault. See the module documentation for the steps.
pub fn quarantine(path: &str, env: &ActEnv) -> Result<Outcome, TaskError> {
    let requested = validate_path(path)?;
    let (parent, name) = split(&requested, path)?;
    let dir = Dir::open(parent).map_err(|e| io_error(&requested, &e))?;
    let real = dir.path.join(name);
    let Some(real_str) = real.to_str().map(str::to_string) else {
        return Err(task_error(
            TaskErrorCode::InvalidInput,
            format!("{path}: resolves to a path that is not UTF-8"),
        ));
    };
    let lmeta = dir.lstat(name).map_err(|e| io_error(&requested, &e))?;
    check_protected(path, &dir, &lmeta, env)?;
    check_regular(path, &lmeta)?;
    let file = dir.open_read(name).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => changed(path),
        _ => io_error(&requested, &e),
    })?;
    let meta = file.metadata().map_err(|e| io_error(&requested, &e))?;
    if !meta.is_file() || !same_inode(&lmeta, &meta) {
        return Err(changed(path));
    }
    if meta.nlink() > 1 {
        // Quoted for a shell: the name is the attacker's to choose.
        let quoted = shlex::try_quote(&real_str).unwrap_or_else(|_| real_str.as_str().into());
        return Err(task_error(
            TaskErrorCode::InvalidInput,
            format!(
                "{path}: has {} other hard links (names for the same file); quarantining one \
                 would leave the others, so nothing was moved: find them with \
                 `find / -xdev -samefile {quoted}`, remove them, then quarantine this one",
                meta.nlink() - 1
            ),
        ));
    }
    let origin_dir = dir.identity().map_err(|e| io_error(&dir.path, &e))?;
    let holders = holders(&meta);
    let vault = Vault::open(&env.data_dir)?;
    let (_, sha_before) = hash_file(&file).map_err(|e| io_error(&requested, &e))?;
    let file_meta = FileMeta::of(&meta);
    let before = json!({
        "path": path,
        "resolved_path": real_str,
        "size": file_meta.size,
        "mode": format!("{:04o}", file_meta.mode),
        "uid": file_meta.uid,
        "gid": file_meta.gid,
        "mtime": file_meta.mtime,
        "atime": file_meta.atime,
        "links": file_meta.links,
        "sha256": sha_before,
        "open_by": holders
            .iter()
            .map(|(pid, name, how)| json!({ "pid": pid, "name": name, "how": how }))
            .collect::<Vec<_>>(),
    });
    let mut manifest = Manifest {
        id: uuid::Uuid::new_v4().to_string(),
        original_path: real_str,
        requested_path: path.to_string(),
        state: State::Pending,
        file: file_meta,
        origin_dir: Some(origin_dir),
        sha256: None,
        quarantined_at_ms: crate::now_ms(),
        restored_at_ms: None,
    };
    let id = manifest.id.clone();
    vault.write(&manifest)?;

    let how = move_in(&vault, &dir, name, &file, &meta, &id, &sha_before, path)
        .map_err(|e| settle(&vault, &id, e))?;
    let bin_name = data_name(&id);
    let bin_path = vault.dir.path.join(&bin_name);
    let (bin_meta, size, sha) = defang_and_hash(&vault.dir, &bin_name)
        .map_err(|e| settle(&vault, &id, io_error(&bin_path, &e)))?;
    manifest.state = State::Quarantined;
    manifest.sha256 = Some(sha.clone());
    vault.write(&manifest).map_err(|e| settle(&vault, &id, e))?;

    let mut done = format!("quarantined {path} as {id} ({how})");
    if !holders.is_empty() {
        let named: Vec<String> = holders
            .iter()
            .map(|(pid, name, how)| format!("pid {pid} ({name}) {how}"))
            .collect();
        done.push_str(&format!(
            "; the origin's inode lives on in {} (kill them to end it)",
            named.join(", ")
        ));
    }
    Ok(Outcome {
        before,
        done,
        after: json!({
            "quarantine_id": id,
            "vault_path": bin_path,
            "sha256": sha,
            "size": size,
            "mode": format!("{:04o}", bin_meta.mode() & 0o7777),
            "uid": bin_meta.uid(),
            "gid": bin_meta.gid(),
            "origin_exists": dir.lstat(name).is_ok(),
        }),
    })
}

/// Settles the vault after startup: anything a crash left half done is finished or undone.
/// Quarantine and restore do this themselves before they start; the agent may call it at
/// startup so the vault is tidy before any action arrives.
pub fn recover_vault(env: &ActEnv) -> Result<(), TaskError> {
    Vault::open(&env.data_dir).map(drop)
}

/// Step 4 and 5: the file into the vault, then its old name gone. Returns how it moved.
#[allow(clippy::too_many_arguments)]
fn move_in(
    vault: &Vault,
    dir: &Dir,
    name: &OsStr,
    file: &File,
    meta: &Metadata,
    id: &str,
    sha_before: &str,
    path: &str,
) -> Result<&'static str, TaskError> {
    let bin_name = data_name(id);
    let vault_err = |e: io::Error| io_error(&vault.dir.path.join(data_name(id)), &e);
    copy_in(vault, file, meta, id, sha_before, path)?;
    let how = "copied into the vault, copy verified";
    vault.dir.sync().map_err(vault_err)?;

    match dir.lstat(name) {
        Ok(now) if same_inode(&now, meta) => {
            dir.unlink(name)
                .map_err(|e| io_error(Path::new(path), &e))?;
            dir.sync().map_err(|e| io_error(&dir.path, &e))?;
        }
        _ => {
            // Renamed or replaced meanwhile. Links other than the vault's keep it reachable:
            // then drop the vault's and refuse. Without any, the file was deleted, and the
            // vault holds the only copy: keep it.
            let links = file.metadata().map(|m| m.nlink()).unwrap_or(0);
            let vault_links = u64::from(dir_holds_inode(&vault.dir, &bin_name, meta));
            if links > vault_links {
                let _ = vault.dir.unlink(&bin_name);
                let _ = vault.dir.unlink(&vault::manifest_name(id));
                let _ = vault.dir.sync();
                return Err(changed(path));
            }
        }
    }
    Ok(how)
}

/// Whether `name` in `dir` is the inode described by `meta`.
fn dir_holds_inode(dir: &Dir, name: &OsStr, meta: &Metadata) -> bool {
    dir.lstat(name).is_ok_and(|m| same_inode(&m, meta))
}

/// Step 4 across file systems: a verified, defanged copy that appears as `ID.bin` whole.
fn copy_in(
    vault: &Vault,
    file: &File,
    meta: &Metadata,
    id: &str,
    sha_before: &str,
    path: &str,
) -> Result<(), TaskError> {
    let part = part_name(id);
    let part_path = vault.dir.path.join(&part);
    let err = |e: io::Error| io_error(&part_path, &e);
    let out = vault.dir.create_new(&part).map_err(err)?;
    let (size, sha_read) = copy_hashing(file, &out).map_err(err)?;
    out.sync_all().map_err(err)?;
    let copy = vault.dir.open_read(&part).map_err(err)?;
    let (copy_size, sha_copy) = hash_file(&copy).map_err(err)?;
    if copy_size != size || sha_copy != sha_read {
        return Err(task_error(
            TaskErrorCode::Internal,
            format!(
                "{}: the copy hashes to {sha_copy}, the source read as {sha_read}: nothing was moved",
                part_path.display()
            ),
        ));
    }
    let now = file.metadata().map_err(|e| io_error(Path::new(path), &e))?;
    if sha_read != sha_before || modified(meta, &now) {
        return Err(changed(path));
    }
    defang(&out).map_err(err)?;
    vault.dir.rename(&part, &data_name(id)).map_err(err)
}

/// Step 6's file work: hash the vault copy (defanged again, should anything have changed it).
fn defang_and_hash(dir: &Dir, name: &OsStr) -> io::Result<(Metadata, u64, String)> {
    let bin = dir.open_read(name)?;
    defang(&bin)?;
    let (size, sha) = hash_file(&bin)?;
    Ok((bin.metadata()?, size, sha))
}

/// After a failed step: lets recovery settle the item, and says where the file is now.
pub(super) fn settle(vault: &Vault, id: &str, mut err: TaskError) -> TaskError {
    if let Err(e) = vault.recover_item(id) {
        tracing::warn!(quarantine_id = id, error = %e, "settling a failed vault step");
    }
    let whereabouts = match vault.read(id) {
        Err(_) => "the vault holds nothing of it".to_string(),
        Ok(m) => match m.state {
            State::Quarantined => format!("the file is in the vault as {id}"),
            State::Restored => format!("the file was restored to {}", m.original_path),
            State::Pending | State::Restoring => format!("{id} is left {:?}", m.state),
        },
    };
    err.message = format!("{} ({whereabouts})", err.message);
    err
}

/// Splits a validated path into its directory and final name.
pub(super) fn split<'a>(path: &'a Path, shown: &str) -> Result<(&'a Path, &'a OsStr), TaskError> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => Err(task_error(
            TaskErrorCode::InvalidInput,
            format!("{shown}: is a directory"),
        )),
    }
}

/// Refuses protected paths: `policy.protected_paths`, the agent's data directory and its own
/// executable, and the kernel's `/proc` and `/sys`. `/dev` is not among them: devices are
/// refused as special files anyway, and `/dev/shm` is a favourite place to drop malware.
/// Decided on what is open (see [`crate::collect::gate`]): the directory's ancestry by `..`,
/// and the file's identity against everything in the protected trees, so neither a symlinked
/// directory, a bind mount nor a hard link carries a protected file out.
fn check_protected(shown: &str, dir: &Dir, file: &Metadata, env: &ActEnv) -> Result<(), TaskError> {
    let mut rules: Vec<(PathBuf, &'static str)> = vec![
        (PathBuf::from("/proc"), "the kernel's process file system"),
        (PathBuf::from("/sys"), "the kernel's sysfs"),
        (env.data_dir.clone(), "the agent's data directory"),
    ];
    if let Ok(exe) = std::fs::read_link("/proc/self/exe") {
        rules.push((exe, "the agent's executable"));
    }
    for p in &env.policy.protected_paths {
        rules.push((PathBuf::from(p), "policy protected_paths"));
    }
    let index = Gate::of_rules(&rules).index();
    index
        .check_ancestry(dir.as_file())
        .and_then(|()| index.check_identity(file))
        .map_err(|denial| {
            refused_by_rail(format!(
                "{shown}: under a protected path ({}): never quarantined",
                denial.rule()
            ))
        })
}

/// Only regular files are quarantined.
fn check_regular(shown: &str, meta: &Metadata) -> Result<(), TaskError> {
    let t = meta.file_type();
    let why = if t.is_symlink() {
        "is a symbolic link: name the file it points to"
    } else if t.is_dir() {
        "is a directory: only regular files are quarantined"
    } else if !t.is_file() {
        "is not a regular file (a device, FIFO or socket)"
    } else {
        return Ok(());
    };
    Err(task_error(
        TaskErrorCode::InvalidInput,
        format!("{shown}: {why}"),
    ))
}

/// Whether a file changed between two stats (content or metadata, by size and times).
fn modified(a: &Metadata, b: &Metadata) -> bool {
    (
        a.size(),
        a.mtime(),
        a.mtime_nsec(),
        a.ctime(),
        a.ctime_nsec(),
    ) != (
        b.size(),
        b.mtime(),
        b.mtime_nsec(),
        b.ctime(),
        b.ctime_nsec(),
    )
}

fn changed(path: &str) -> TaskError {
    task_error(
        TaskErrorCode::Busy,
        format!("{path}: changed, moved or replaced while being quarantined; nothing was moved"),
    )
}
