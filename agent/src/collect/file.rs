//! Files: stat (`TaskKind::FileStat`) and SHA-256 (`TaskKind::FileHash`). Directory listings
//! are in [`super::listing`].
//!
//! Reading evidence must not change it: files are opened with `O_NOATIME` where the kernel allows
//! it, so hashing a file leaves its access time as the attacker left it.

use std::{
    fs::{File, Metadata, OpenOptions},
    io::{self, Read},
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::Path,
};

use cordon_protocol::{
    collect::{FileHash, FileKind, FileStat},
    message::{TaskError, TaskErrorCode},
};
use sha2::{Digest, Sha256};

use super::{epoch_ms, io_error, task_error, validate_path, IdNames};

/// Read size when hashing.
const HASH_BUFFER: usize = 64 * 1024;

/// lstat of `path`: a symlink is reported as itself, with its target.
pub fn stat(path: &str) -> Result<FileStat, TaskError> {
    let p = validate_path(path)?;
    let meta = std::fs::symlink_metadata(&p).map_err(|e| io_error(&p, &e))?;
    let symlink_target = if kind_of(&meta) == FileKind::Symlink {
        let target = std::fs::read_link(&p).map_err(|e| io_error(&p, &e))?;
        Some(target.to_string_lossy().into_owned())
    } else {
        None
    };
    Ok(describe(path, &meta, symlink_target))
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
pub fn hash(path: &str) -> Result<FileHash, TaskError> {
    let (mut file, p, _) = open_regular(path)?;
    let (size, sha256) = sha256_reader(&mut file).map_err(|e| io_error(&p, &e))?;
    Ok(FileHash {
        path: path.to_string(),
        size,
        sha256,
    })
}

/// Validates `path` and opens it for reading as evidence; anything but a regular file (after
/// following symlinks) is `InvalidInput`. Returns the file, the path and its metadata.
pub(crate) fn open_regular(path: &str) -> Result<(File, std::path::PathBuf, Metadata), TaskError> {
    let p = validate_path(path)?;
    let file = open_evidence(&p).map_err(|e| io_error(&p, &e))?;
    let meta = file.metadata().map_err(|e| io_error(&p, &e))?;
    if meta.is_dir() {
        return Err(task_error(
            TaskErrorCode::InvalidInput,
            format!("{path}: is a directory"),
        ));
    }
    if !meta.is_file() {
        return Err(task_error(
            TaskErrorCode::InvalidInput,
            format!("{path}: not a regular file"),
        ));
    }
    Ok((file, p, meta))
}

/// Opens for reading without updating the access time, and without blocking: opening a FIFO
/// would otherwise wait for a writer forever. `O_NOATIME` is refused (EPERM) on files the
/// agent does not own unless it has CAP_FOWNER, so that case retries without it.
fn open_evidence(path: &Path) -> io::Result<File> {
    let open = |flags| OpenOptions::new().read(true).custom_flags(flags).open(path);
    match open(libc::O_NONBLOCK | libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(libc::O_NONBLOCK),
        other => other,
    }
}

/// Streams `reader` through SHA-256; returns the byte count and the lowercase hex digest.
pub(crate) fn sha256_reader(reader: &mut impl Read) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_BUFFER];
    let mut total = 0u64;
    loop {
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

    use super::*;
    use crate::collect::effective_uid;

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

        let st = stat(s(&file)).unwrap();
        assert_eq!(st.kind, FileKind::File);
        assert_eq!(st.size, 200_000);
        assert_eq!(st.mode & 0o7777, 0o640);
        assert_eq!(st.mode & 0o170000, 0o100000, "file type bits kept");
        assert_eq!(Some(st.uid), effective_uid());
        assert!(st.owner.is_some());
        assert!((st.modified_ms - crate::now_ms()).abs() < 60_000);
        assert_eq!(st.symlink_target, None);

        let h = hash(s(&file)).unwrap();
        assert_eq!(h.size, 200_000);
        assert_eq!(h.sha256, hex::encode(Sha256::digest(&content)));
        assert_eq!(h.path, s(&file));
    }

    #[test]
    fn stat_reports_a_symlink_as_itself() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        symlink("/nowhere/at/all", &link).unwrap();
        let st = stat(s(&link)).unwrap();
        assert_eq!(st.kind, FileKind::Symlink);
        assert_eq!(st.symlink_target.as_deref(), Some("/nowhere/at/all"));
        // Hashing follows it, and the target is missing.
        assert_eq!(hash(s(&link)).unwrap_err().code, TaskErrorCode::NotFound);
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
            let err = hash(&path).unwrap_err();
            assert_eq!(err.code, code, "{path:?}: {}", err.message);
            assert!(err.message.contains(says), "{path:?}: {}", err.message);
        }
        assert_eq!(stat(s(&missing)).unwrap_err().code, TaskErrorCode::NotFound);
        assert!(stat(s(&missing)).unwrap_err().message.contains(s(&missing)));
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
            hash(s(&fifo)).unwrap_err().code,
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
        let err = hash(s(&file)).unwrap_err();
        assert_eq!(err.code, TaskErrorCode::PermissionDenied, "{}", err.message);
        assert!(err.message.contains(s(&file)));
    }
}
