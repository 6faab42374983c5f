//! Restore: a quarantined file back at its original path with its exact bytes, owner, mode and
//! times, never replacing a file that appeared there meanwhile. The steps and their order are
//! in [`super`]'s documentation.

use std::{
    ffi::OsStr,
    fs::File,
    io,
    path::{Path, PathBuf},
};

use cordon_protocol::message::{TaskError, TaskErrorCode};
use serde_json::json;

use super::{
    fsops::{apply_metadata, copy_hashing, hash_file, Dir, FileMeta},
    settle, split,
    vault::{data_name, is_item_id, restore_temp_name, Manifest, State, Vault},
};
use crate::{
    act::{ActEnv, Outcome},
    collect::{io_error, task_error},
};

/// Puts quarantined item `quarantine_id` back where it came from, with its exact bytes, owner,
/// mode and times. See the module documentation for the steps.
pub fn restore(quarantine_id: &str, env: &ActEnv) -> Result<Outcome, TaskError> {
    if !is_item_id(quarantine_id) {
        return Err(task_error(
            TaskErrorCode::InvalidInput,
            format!(
                "{}: not a quarantine id (a lowercase uuid)",
                quarantine_id.escape_debug()
            ),
        ));
    }
    let id = quarantine_id;
    let vault = Vault::open(&env.data_dir)?;
    let mut m = vault.read(id)?;
    match m.state {
        State::Quarantined => {}
        State::Restored => {
            return Err(task_error(
                TaskErrorCode::NotFound,
                format!(
                    "quarantine id {id}: already restored to {}",
                    m.original_path
                ),
            ))
        }
        other => {
            return Err(task_error(
                TaskErrorCode::Internal,
                format!("quarantine id {id}: still {other:?} after recovery"),
            ))
        }
    }
    let bin_name = data_name(id);
    let bin_path = vault.dir.path.join(&bin_name);
    let bin = vault
        .dir
        .open_read(&bin_name)
        .map_err(|e| io_error(&bin_path, &e))?;
    let (size, sha) = hash_file(&bin).map_err(|e| io_error(&bin_path, &e))?;
    let expected = m.sha256.clone().unwrap_or_default();
    if sha != expected {
        return Err(task_error(
            TaskErrorCode::Internal,
            format!(
                "{}: holds sha256 {sha}, its manifest says {expected}: left in the vault",
                bin_path.display()
            ),
        ));
    }
    let original = PathBuf::from(&m.original_path);
    let (parent, name) = split(&original, &m.original_path)?;
    let dir = open_origin_dir(parent, &m)?;
    if dir.lstat(name).is_ok() {
        return Err(occupied(&m.original_path, id));
    }
    let before = json!({
        "quarantine_id": id,
        "original_path": m.original_path,
        "vault_path": bin_path,
        "sha256": sha,
        "size": size,
        "origin_exists": false,
    });
    m.state = State::Restoring;
    vault.write(&m)?;
    let how = put_back(&vault, &bin, &dir, name, &m).map_err(|e| settle(&vault, id, e))?;
    let mut finish = || -> Result<(), TaskError> {
        let err = |e: io::Error| io_error(&bin_path, &e);
        vault.dir.unlink(&bin_name).map_err(err)?;
        vault.dir.sync().map_err(err)?;
        m.state = State::Restored;
        m.restored_at_ms = Some(crate::now_ms());
        vault.write(&m)
    };
    finish().map_err(|e| settle(&vault, id, e))?;

    let origin_err = |e: io::Error| io_error(&original, &e);
    let now = dir.lstat(name).map_err(origin_err)?;
    let (now_size, now_sha) = dir
        .open_read(name)
        .and_then(|f| hash_file(&f))
        .map_err(origin_err)?;
    let now_meta = FileMeta::of(&now);
    Ok(Outcome {
        before,
        done: format!("restored {} from quarantine {id} ({how})", m.original_path),
        after: json!({
            "path": m.original_path,
            "sha256": now_sha,
            "size": now_size,
            "mode": format!("{:04o}", now_meta.mode),
            "uid": now_meta.uid,
            "gid": now_meta.gid,
            "mtime": now_meta.mtime,
            "atime": now_meta.atime,
            "in_vault": false,
        }),
    })
}

/// Opens the directory `m` came from without following any link, and insists it is the same
/// directory (device, inode, owner) it was at quarantine: a directory replaced by a symlink,
/// or by another directory, is never written into.
pub(super) fn open_origin_dir(parent: &Path, m: &Manifest) -> Result<Dir, TaskError> {
    let refuse = |why: String| {
        task_error(
            TaskErrorCode::InvalidInput,
            format!(
                "{}: {why}; restore writes only into the directory the file came from (it \
                 stays in the vault as {})",
                parent.display(),
                m.id
            ),
        )
    };
    let dir = Dir::open_nofollow(parent).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => {
            refuse("a symbolic link is now in the way".into())
        }
        _ => {
            let mut err = io_error(parent, &e);
            err.message = format!(
                "{} (cannot restore {}; it stays in the vault as {})",
                err.message, m.original_path, m.id
            );
            err
        }
    })?;
    if let Some(was) = m.origin_dir {
        let now = dir.identity().map_err(|e| io_error(parent, &e))?;
        if now != was {
            return Err(refuse(format!(
                "not the directory it was (device {} inode {} owner {}:{} then, device {} \
                 inode {} owner {}:{} now)",
                was.dev, was.ino, was.uid, was.gid, now.dev, now.ino, now.uid, now.gid
            )));
        }
    }
    Ok(dir)
}

/// Restore's move: metadata back, then the origin name given without ever replacing one.
fn put_back(
    vault: &Vault,
    bin: &File,
    dir: &Dir,
    name: &OsStr,
    m: &Manifest,
) -> Result<&'static str, TaskError> {
    let origin = Path::new(&m.original_path);
    let bin_name = data_name(&m.id);
    apply_metadata(bin, &m.file).map_err(|e| io_error(&vault.dir.path.join(&bin_name), &e))?;
    let how = match vault.dir.link(&bin_name, dir, name) {
        Ok(()) => "linked back on the same file system",
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(occupied(&m.original_path, &m.id))
        }
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            copy_out(bin, dir, name, m)?;
            "copied back across file systems, copy verified"
        }
        Err(e) => return Err(io_error(origin, &e)),
    };
    dir.sync().map_err(|e| io_error(&dir.path, &e))?;
    Ok(how)
}

/// Restore across file systems: a verified copy beside the origin, linked to its name.
fn copy_out(bin: &File, dir: &Dir, name: &OsStr, m: &Manifest) -> Result<(), TaskError> {
    let tmp = restore_temp_name(&m.id);
    let tmp_path = dir.path.join(&tmp);
    let err = |e: io::Error| io_error(&tmp_path, &e);
    // Only a crashed restore of this very item leaves this name.
    dir.unlink_if_present(&tmp).map_err(err)?;
    let out = dir.create_new(&tmp).map_err(err)?;
    let result = (|| {
        copy_hashing(bin, &out).map_err(err)?;
        out.sync_all().map_err(err)?;
        let (_, sha) = dir
            .open_read(&tmp)
            .and_then(|f| hash_file(&f))
            .map_err(err)?;
        if m.sha256.as_deref() != Some(sha.as_str()) {
            return Err(task_error(
                TaskErrorCode::Internal,
                format!(
                    "{}: the copy hashes to {sha}, not to the manifest's",
                    tmp_path.display()
                ),
            ));
        }
        apply_metadata(&out, &m.file).map_err(err)?;
        match dir.link(&tmp, dir, name) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(occupied(&m.original_path, &m.id))
            }
            Err(e) => Err(io_error(Path::new(&m.original_path), &e)),
        }
    })();
    // Whatever happened, the temporary name goes: the origin name now holds the inode, or
    // the vault still does.
    let removed = dir.unlink_if_present(&tmp).map_err(err);
    result.and(removed)
}

pub(super) fn occupied(path: &str, id: &str) -> TaskError {
    task_error(
        TaskErrorCode::InvalidInput,
        format!(
            "{path}: a file exists there again and restore never overwrites; move it away and \
             restore again (the quarantined file stays in the vault as {id})"
        ),
    )
}
