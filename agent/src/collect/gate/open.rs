//! Opening one step at a time without following what must not be followed, and telling
//! generated (pseudo) file systems from stored ones.

use std::{
    fs::{File, Metadata},
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use rustix::fs::{Mode, OFlags, ResolveFlags, CWD};

/// Opens the entry `name` of a checked directory as itself (`O_PATH`, a symlink not followed),
/// for a walk to decide on.
pub(crate) fn open_entry(dir: &File, name: &Path) -> io::Result<File> {
    open_at(dir, name, OFlags::PATH | OFlags::NOFOLLOW)
}

/// Opens the subdirectory `name` of a checked directory for reading, insisting it is still the
/// `checked` one.
pub(crate) fn open_subdir(dir: &File, name: &Path, checked: &Metadata) -> io::Result<File> {
    reopen(dir, name, checked, OFlags::RDONLY | OFlags::DIRECTORY)
}

/// Whether `path` is on procfs or sysfs.
pub(super) fn is_pseudo_fs(path: &Path) -> bool {
    rustix::fs::statfs(path)
        .is_ok_and(|fs| matches!(pseudo_fs_name(fs.f_type), Some("procfs" | "sysfs")))
}

/// The kernel pseudo file system `file` is on, if it is on one.
pub(super) fn pseudo_fs(file: &File) -> Option<&'static str> {
    rustix::fs::fstatfs(file)
        .ok()
        .and_then(|fs| pseudo_fs_name(fs.f_type))
}

/// Names the pseudo file systems whose files are generated, not stored (statfs(2) magic).
fn pseudo_fs_name(kind: rustix::fs::FsWord) -> Option<&'static str> {
    const KINDS: &[(u32, &str)] = &[
        (0x9fa0, "procfs"),
        (0x6265_6572, "sysfs"),
        (0x6462_6720, "debugfs"),
        (0x7472_6163, "tracefs"),
        (0x7363_6673, "securityfs"),
        (0x6265_6570, "configfs"),
        (0x0027_e0eb, "cgroupfs"),
        (0x6367_7270, "cgroup2"),
        (0xcafe_4a11, "bpffs"),
        (0xde5e_81e4, "efivarfs"),
    ];
    KINDS
        .iter()
        .find(|(magic, _)| rustix::fs::FsWord::from(*magic) == kind)
        .map(|(_, name)| *name)
}

/// The path the kernel gives for an open descriptor: for messages only, never for decisions.
pub(super) fn shown(file: &File) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()
}

/// `path`'s parent and last component; `/` is `/` and `.`, and a path ending in `..` (a
/// symlink's relative target) is that directory and `.`.
pub(super) fn split(path: &Path) -> (PathBuf, PathBuf) {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => (parent.to_path_buf(), PathBuf::from(name)),
        _ => (path.to_path_buf(), PathBuf::from(".")),
    }
}

/// Opens a directory as `O_PATH`, refusing magic links (`/proc/PID/root`, `/proc/PID/cwd`)
/// where the kernel can; ordinary symlinks are followed (the ancestry of what is opened is
/// checked afterwards, so following them is safe).
pub(super) fn open_dir(path: &Path) -> io::Result<File> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    match rustix::fs::openat2(CWD, path, flags, Mode::empty(), ResolveFlags::NO_MAGICLINKS) {
        Ok(fd) => Ok(File::from(fd)),
        // No openat2 (before Linux 5.6, or filtered by seccomp): the ancestry check still
        // sees where a magic link led.
        Err(e) if e == rustix::io::Errno::NOSYS || e == rustix::io::Errno::PERM => Ok(File::from(
            rustix::fs::openat(CWD, path, flags, Mode::empty())?,
        )),
        Err(e) => Err(e.into()),
    }
}

pub(super) fn open_at(dir: &File, name: impl rustix::path::Arg, flags: OFlags) -> io::Result<File> {
    Ok(File::from(rustix::fs::openat(
        dir,
        name,
        flags | OFlags::CLOEXEC,
        Mode::empty(),
    )?))
}

/// Opens `name` in `dir` for reading, without following a link and without updating the access
/// time where the kernel allows it, and insists it is still `checked`.
pub(super) fn reopen(
    dir: &File,
    name: &Path,
    checked: &Metadata,
    flags: OFlags,
) -> io::Result<File> {
    let flags = flags | OFlags::NOFOLLOW;
    // O_NOATIME is refused (EPERM) on files the agent does not own unless it has CAP_FOWNER.
    let file = match open_at(dir, name, flags | OFlags::NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open_at(dir, name, flags)?,
        other => other?,
    };
    let meta = file.metadata()?;
    if (meta.dev(), meta.ino()) != (checked.dev(), checked.ino()) {
        return Err(io::Error::other(
            "changed while it was being opened; try again",
        ));
    }
    Ok(file)
}

/// The nearest directory at or above `dir` that can still be opened (a removed directory's
/// name, a name inside a directory that does not exist), so what a missing path would have
/// been in can still be checked.
pub(super) fn nearest_open_ancestor(dir: &Path) -> Option<File> {
    dir.ancestors().find_map(|d| open_dir(d).ok())
}
