//! Files: stat (`TaskKind::FileStat`) and SHA-256 (`TaskKind::FileHash`). Directory listings
//! are in [`super::listing`].
//!
//! Reading evidence must not change it: files are opened (by [`super::gate`]) with `O_NOATIME`
//! where the kernel allows it, so hashing a file leaves its access time as the attacker left it.

use std::{
    fs::{File, Metadata},
    io::{self, Read},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use cordon_protocol::{
    collect::{FileHash, FileKind, FileStat},
    message::TaskError,
};
use sha2::{Digest, Sha256};

use super::{
    cancel::Cancel,
    epoch_ms,
    gate::{Index, Want},
    io_error, IdNames,
};

/// Read size when hashing.
const HASH_BUFFER: usize = 64 * 1024;

/// lstat of `path` through the gate: a symlink is reported as itself, with its target.
pub fn stat(index: &Index, path: &str) -> Result<FileStat, TaskError> {
    let opened = index.open(path, Want::Entry)?;
    let symlink_target = if kind_of(&opened.meta) == FileKind::Symlink {
        let target = rustix::fs::readlinkat(&opened.parent, &opened.name, Vec::new())
            .map_err(|e| io_error(Path::new(path), &e.into()))?;
        Some(String::from_utf8_lossy(target.as_bytes()).into_owned())
    } else {
        None
    };
    Ok(describe(path, &opened.meta, symlink_target))
}

/// A [`FileStat`] from metadata already read.
pub(crate) fn describe(path: &str, meta: &Metadata, symlink_target: Option<String>) -> FileStat {
    let names = IdNames::load();
    FileStat {
        path: path.to_string(),
        kind: kind_of(meta),
        size: meta.size(),
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        owner: names.user(meta.uid()),
        group: names.group(meta.gid()),
        modified_ms: epoch_ms(meta.mtime(), meta.mtime_nsec()),
        accessed_ms: epoch_ms(meta.atime(), meta.atime_nsec()),
        changed_ms: epoch_ms(meta.ctime(), meta.ctime_nsec()),
        inode: meta.ino(),
        symlink_target,
    }
}

/// SHA-256 of a regular file (a symlink is followed). A directory or a device, FIFO or socket
/// → `InvalidInput`: their "contents" are not evidence and may never end.
pub fn hash(index: &Index, path: &str, cancel: &Cancel) -> Result<FileHash, TaskError> {
    let (mut file, p, _) = open_regular(index, path)?;
    let (size, sha256) = sha256_reader(&mut file, cancel).map_err(|e| {
        if cancel.is_cancelled() {
            Cancel::error(path)
        } else {
            io_error(&p, &e)
        }
    })?;
    Ok(FileHash {
        path: path.to_string(),
        size,
        sha256,
    })
}

/// Opens `path` through the gate for reading as evidence, without updating its access time;
/// anything but a regular file (after following symlinks) is `InvalidInput`. Returns the
/// file, the path and its metadata.
pub(crate) fn open_regular(
    index: &Index,
    path: &str,
) -> Result<(File, PathBuf, Metadata), TaskError> {
    let opened = index.open(path, Want::Regular)?;
    Ok((opened.file, PathBuf::from(path), opened.meta))
}

/// Streams `reader` through SHA-256; returns the byte count and the lowercase hex digest.
/// Stops (with an error) as soon as `cancel` is set.
pub(crate) fn sha256_reader(reader: &mut impl Read, cancel: &Cancel) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_BUFFER];
    let mut total = 0u64;
    loop {
        if cancel.is_cancelled() {
            return Err(io::Error::other("cancelled"));
        }
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                total += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((total, hex::encode(hasher.finalize())))
}

/// The kind of an lstat result.
pub(crate) fn kind_of(meta: &Metadata) -> FileKind {
    let t = meta.file_type();
    if t.is_symlink() {
        FileKind::Symlink
    } else if t.is_dir() {
        FileKind::Dir
    } else if t.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{symlink, PermissionsExt};

    use sha2::{Digest, Sha256};

    use cordon_protocol::message::TaskErrorCode;

    use super::*;
    use crate::collect::effective_uid;

    fn hash_any(path: &str) -> Result<FileHash, TaskError> {
        hash(&Index::none(), path, &Cancel::never())
    }

    fn s(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    #[test]
    fn stat_and_hash_of_a_file_report_size_mode_and_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("evidence.bin");
        // More than one hash buffer, so streaming is exercised.
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&file, &content).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();

        let st = stat(&Index::none(), s(&file)).unwrap();
        assert_eq!(st.kind, FileKind::File);
        assert_eq!(st.size, 200_000);
        assert_eq!(st.mode & 0o7777, 0o640);
        assert_eq!(st.mode & 0o170000, 0o100000, "file type bits kept");
        assert_eq!(Some(st.uid), effective_uid());
        assert!(st.owner.is_some());
        assert!((st.modified_ms - crate::now_ms()).abs() < 60_000);
        assert_eq!(st.symlink_target, None);

        let h = hash_any(s(&file)).unwrap();
        assert_eq!(h.size, 200_000);
        assert_eq!(h.sha256, hex::encode(Sha256::digest(&content)));
        assert_eq!(h.path, s(&file));
    }

    #[test]
    fn stat_reports_a_symlink_as_itself() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        symlink("/nowhere/at/all", &link).unwrap();
        let st = stat(&Index::none(), s(&link)).unwrap();
        assert_eq!(st.kind, FileKind::Symlink);
        assert_eq!(st.symlink_target.as_deref(), Some("/nowhere/at/all"));
        // Hashing follows it, and the target is missing.
        assert_eq!(
            hash_any(s(&link)).unwrap_err().code,
            TaskErrorCode::NotFound
        );
    }

    #[test]
    fn bad_paths_get_the_right_error_codes() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        for (path, code, says) in [
            (
                s(dir.path()).to_string(),
                TaskErrorCode::InvalidInput,
                "is a directory",
            ),
            (s(&missing).to_string(), TaskErrorCode::NotFound, "missing"),
            (
                "relative/file".to_string(),
                TaskErrorCode::InvalidInput,
                "absolute",
            ),
            (
                "/tmp/../etc/passwd".to_string(),
                TaskErrorCode::InvalidInput,
                "`..`",
            ),
            (
                "/tmp/nul\0byte".to_string(),
                TaskErrorCode::InvalidInput,
                "NUL",
            ),
            (
                "/dev/null".to_string(),
                TaskErrorCode::InvalidInput,
                "not a regular file",
            ),
        ] {
            let err = hash_any(&path).unwrap_err();
            assert_eq!(err.code, code, "{path:?}: {}", err.message);
            assert!(err.message.contains(says), "{path:?}: {}", err.message);
        }
        assert_eq!(
            stat(&Index::none(), s(&missing)).unwrap_err().code,
            TaskErrorCode::NotFound
        );
        assert!(stat(&Index::none(), s(&missing))
            .unwrap_err()
            .message
            .contains(s(&missing)));
    }

    #[test]
    fn a_cancelled_hash_stops_the_work() {
        // 64 GiB of holes: hours of hashing unless cancellation stops it.
        let dir = tempfile::tempdir().unwrap();
        let huge = dir.path().join("sparse");
        std::fs::File::create(&huge)
            .unwrap()
            .set_len(64 << 30)
            .unwrap();
        let guard = crate::collect::cancel::CancelOnDrop::default();
        let cancel = guard.cancel();
        let path = s(&huge).to_string();
        let worker = std::thread::spawn(move || hash(&Index::none(), &path, &cancel));
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(guard);
        let err = worker.join().unwrap().unwrap_err();
        assert_eq!(err.code, TaskErrorCode::Cancelled, "{}", err.message);
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("SKIPPED: mkfifo unavailable");
            return;
        }
        assert_eq!(
            hash_any(s(&fifo)).unwrap_err().code,
            TaskErrorCode::InvalidInput
        );
    }

    #[test]
    fn an_unreadable_file_is_permission_denied() {
        if effective_uid() == Some(0) {
            eprintln!("SKIPPED: running as root, where mode 000 does not stop reads");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000)).unwrap();
        let err = hash_any(s(&file)).unwrap_err();
        assert_eq!(err.code, TaskErrorCode::PermissionDenied, "{}", err.message);
        assert!(err.message.contains(s(&file)));
    }
}
