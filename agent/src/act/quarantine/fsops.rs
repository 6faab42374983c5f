//! The file-system steps quarantine and restore are made of, done relative to an open directory
//! (`openat`, `linkat`, `unlinkat`) so that a directory swapped for a symlink halfway through
//! cannot redirect them, and never replacing an existing name (`linkat` and `O_EXCL` fail
//! rather than overwrite).

use std::{
    ffi::OsStr,
    fs::{File, FileTimes, Metadata, OpenOptions, Permissions},
    io::{self, Read, Seek, SeekFrom, Write},
    os::{
        fd::AsRawFd,
        unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, CWD};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::collect::{effective_uid, file::sha256_reader};

/// An open directory and the path the kernel says it has (symlinks resolved).
pub struct Dir {
    file: File,
    pub path: PathBuf,
}

impl Dir {
    /// Opens a directory (symlinks on the way are followed) and learns its real path.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(path)?;
        let path = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
        Ok(Self { file, path })
    }

    /// Opens a directory without following any symlink on the way (`openat2` with
    /// `RESOLVE_NO_SYMLINKS`, or a walk with `O_NOFOLLOW` where the kernel has no `openat2`):
    /// for restore, which must write into the directory a file came from and never into one a
    /// link points to now. A link in the way is `ELOOP` (or `ENOTDIR`).
    pub fn open_nofollow(path: &Path) -> io::Result<Self> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let resolve = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        let fd = match rustix::fs::openat2(CWD, path, flags, Mode::empty(), resolve) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {
                let mut fd = rustix::fs::openat(CWD, "/", flags, Mode::empty())?;
                for part in path.components().skip(1) {
                    fd = rustix::fs::openat(
                        &fd,
                        part.as_os_str(),
                        flags | OFlags::NOFOLLOW,
                        Mode::empty(),
                    )?;
                }
                fd
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Self {
            file: File::from(fd),
            path: path.to_path_buf(),
        })
    }

    /// What this directory is: device, inode and owner.
    pub fn identity(&self) -> io::Result<DirIdentity> {
        let m = self.file.metadata()?;
        Ok(DirIdentity {
            dev: m.dev(),
            ino: m.ino(),
            uid: m.uid(),
            gid: m.gid(),
        })
    }

    /// The open directory itself.
    pub fn as_file(&self) -> &File {
        &self.file
    }

    /// lstat of `name`: a symlink is described as itself.
    pub fn lstat(&self, name: &OsStr) -> io::Result<Metadata> {
        let fd = rustix::fs::openat(
            &self.file,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        File::from(fd).metadata()
    }

    /// Opens `name` for reading without following a final symlink (`ELOOP` if it is one),
    /// without blocking on a FIFO and, where allowed, without updating its access time.
    pub fn open_read(&self, name: &OsStr) -> io::Result<File> {
        let base = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let open = |flags| rustix::fs::openat(&self.file, name, flags, Mode::empty());
        let fd = match open(base | OFlags::NOATIME) {
            // O_NOATIME needs ownership or CAP_FOWNER.
            Err(rustix::io::Errno::PERM) => open(base)?,
            other => other?,
        };
        Ok(File::from(fd))
    }

    /// Creates `name` for writing; fails if anything (a symlink included) has that name.
    pub fn create_new(&self, name: &OsStr) -> io::Result<File> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.file, name, flags, Mode::RUSR | Mode::WUSR)?;
        Ok(File::from(fd))
    }

    /// Links `from` here as `to` in `target`; never replaces (`EEXIST`).
    pub fn link(&self, from: &OsStr, target: &Dir, to: &OsStr) -> io::Result<()> {
        rustix::fs::linkat(&self.file, from, &target.file, to, AtFlags::empty())?;
        Ok(())
    }

    /// Renames within this directory (replacing: only for names the vault owns).
    pub fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        rustix::fs::renameat(&self.file, from, &self.file, to)?;
        Ok(())
    }

    pub fn unlink(&self, name: &OsStr) -> io::Result<()> {
        rustix::fs::unlinkat(&self.file, name, AtFlags::empty())?;
        Ok(())
    }

    /// As [`Dir::unlink`], a missing name being no error.
    pub fn unlink_if_present(&self, name: &OsStr) -> io::Result<()> {
        match self.unlink(name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Makes the directory's entries durable (a link, rename or unlink in it).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    /// Reads `name` whole, at most `limit` bytes.
    pub fn read_small(&self, name: &OsStr, limit: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.open_read(name)?.take(limit).read_to_end(&mut out)?;
        Ok(out)
    }

    /// Writes `name` atomically and durably: a temporary name, fsync, rename, fsync of the
    /// directory. A crash leaves the old content or the new, never a torn file.
    pub fn write_atomic(&self, name: &OsStr, bytes: &[u8]) -> io::Result<()> {
        let mut tmp = name.to_os_string();
        tmp.push(".tmp");
        self.unlink_if_present(&tmp)?;
        let mut f = self.create_new(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        self.rename(&tmp, name)?;
        self.sync()
    }
}

/// A directory's identity and owner, recorded at quarantine so that restore writes into the
/// same directory or nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirIdentity {
    pub dev: u64,
    pub ino: u64,
    pub uid: u32,
    pub gid: u32,
}

/// The processes that hold the inode of `meta` open or run it: (pid, name, how), from
/// `/proc/PID/fd` and `/proc/PID/exe`. What cannot be read (another user's process when not
/// root) is not reported.
pub(super) fn holders(meta: &Metadata) -> Vec<(u32, String, &'static str)> {
    let same = |link: &Path| std::fs::metadata(link).is_ok_and(|m| same_inode(&m, meta));
    let mut out = Vec::new();
    let Ok(pids) = crate::collect::procfs::pids() else {
        return out;
    };
    let me = std::process::id();
    for pid in pids.into_iter().filter(|&p| p != me) {
        let base = PathBuf::from(format!("/proc/{pid}"));
        let how = if same(&base.join("exe")) {
            Some("running it")
        } else {
            std::fs::read_dir(base.join("fd"))
                .ok()
                .and_then(|fds| fds.flatten().find(|fd| same(&fd.path())))
                .map(|_| "holding it open")
        };
        if let Some(how) = how {
            let name = std::fs::read_to_string(base.join("comm")).unwrap_or_default();
            out.push((pid, name.trim_end().to_string(), how));
        }
    }
    out
}

/// Whether two stats are of the same inode.
pub(super) fn same_inode(a: &Metadata, b: &Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// SHA-256 of a whole open file, from its start: (size, hex digest).
pub(super) fn hash_file(file: &File) -> io::Result<(u64, String)> {
    let mut reader = file;
    reader.seek(SeekFrom::Start(0))?;
    // Containment actions are never cancelled once they run.
    sha256_reader(&mut reader, &crate::collect::cancel::Cancel::never())
}

/// Copies `from` (from its start) into `to`, hashing what was read: (size, hex digest).
pub(super) fn copy_hashing(from: &File, to: &File) -> io::Result<(u64, String)> {
    let (mut reader, mut writer) = (from, to);
    reader.seek(SeekFrom::Start(0))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        writer.write_all(&buf[..n])?;
        total += n as u64;
    }
    Ok((total, hex::encode(hasher.finalize())))
}

/// A time as the kernel keeps it: seconds since the epoch (negative before 1970) and
/// nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileTime {
    pub secs: i64,
    pub nanos: u32,
}

impl FileTime {
    fn new(secs: i64, nanos: i64) -> Self {
        Self {
            secs,
            nanos: u32::try_from(nanos).unwrap_or(0).min(999_999_999),
        }
    }

    fn system_time(self) -> SystemTime {
        let base = if self.secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(self.secs.unsigned_abs())
        } else {
            UNIX_EPOCH - Duration::from_secs(self.secs.unsigned_abs())
        };
        base + Duration::from_nanos(u64::from(self.nanos))
    }
}

/// What restore must put back besides the bytes: owner, mode and times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits, setuid/setgid/sticky included (`0o7777`).
    pub mode: u32,
    pub size: u64,
    pub atime: FileTime,
    pub mtime: FileTime,
    /// Names the inode had at its origin (other hard links keep its content reachable).
    pub links: u64,
}

impl FileMeta {
    pub fn of(m: &Metadata) -> Self {
        Self {
            uid: m.uid(),
            gid: m.gid(),
            mode: m.mode() & 0o7777,
            size: m.size(),
            atime: FileTime::new(m.atime(), m.atime_nsec()),
            mtime: FileTime::new(m.mtime(), m.mtime_nsec()),
            links: m.nlink(),
        }
    }
}

/// Puts owner, mode and times back on an open file, then makes them durable. Owner before mode
/// (a change of owner clears setuid bits), times last (neither touches them).
pub(super) fn apply_metadata(file: &File, meta: &FileMeta) -> io::Result<()> {
    std::os::unix::fs::fchown(file, Some(meta.uid), Some(meta.gid))?;
    file.set_permissions(Permissions::from_mode(meta.mode))?;
    file.set_times(
        FileTimes::new()
            .set_accessed(meta.atime.system_time())
            .set_modified(meta.mtime.system_time()),
    )?;
    file.sync_all()
}

/// Defangs a file in the vault: owned by root with no permission bits at all (root reads it
/// regardless). An agent not running as root cannot give files away; it keeps them `0400`
/// in its `0700` vault so that it can still read them back.
pub(super) fn defang(file: &File) -> io::Result<()> {
    let root = effective_uid() == Some(0);
    if root {
        std::os::unix::fs::fchown(file, Some(0), Some(0))?;
    }
    file.set_permissions(Permissions::from_mode(if root { 0 } else { 0o400 }))?;
    file.sync_all()
}
