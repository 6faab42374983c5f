//! The one gate every collector reads the file system through: it decides on what is *opened*,
//! never on a path string checked earlier.
//!
//! Read-only collection is authorised by the mTLS channel alone, so the host keeps a say over
//! what leaves it. Denied, always:
//! - the agent's own data directory (its key, journal, vault, replay cache);
//! - [`BUILTIN_DENIED`]: the password hashes, SSH host keys, and the places Cordon's own secrets
//!   live by default (a controller's data directory, responders' configs and keys);
//! - every directory that holds a [`PRIVATE_DIR_MARKER`] file, wherever it is: Cordon writes one
//!   into each directory it keeps secrets in (controller `init`, `quickstart`, `cordon keys
//!   generate`), so a deployment in a non-default place is recognised too;
//! - and whatever `denied_paths` in `policy.toml` adds.
//!
//! How a decision is made, per task ([`Gate::index`] builds a fresh [`Index`]):
//! - each rule is resolved now to the identity (device, inode) of what it names, and a denied
//!   directory's tree is walked so every file and directory in it is known by identity too: a
//!   hard link to a denied file, a bind mount of a denied directory (or of a directory inside
//!   one), or a process's executable under a denied directory is the same identity under another
//!   name, and is refused as such;
//! - a path is opened one step at a time: its parent directory (by `openat2` with
//!   `RESOLVE_NO_MAGICLINKS` where the kernel has it), whose whole ancestry is checked by walking
//!   `..` from the opened descriptor; then the last component with `O_NOFOLLOW`. A symlink at the
//!   end is read and its target opened the same way, so the directory a file is really in is the
//!   one checked; a `/proc/PID/fd/N` link is never followed by the kernel;
//! - the file that is then read is reopened from the checked parent and must be the identity that
//!   was checked, so a rename racing the check cannot swap another file in.

use std::{
    collections::HashMap,
    fs::{File, Metadata},
    io,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Component, Path, PathBuf},
    sync::Arc,
};

use cordon_protocol::{
    collect::PRIVATE_DIR_MARKER,
    message::{TaskError, TaskErrorCode},
};
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, CWD};

use super::{glob::Glob, io_error, task_error, validate_path};

/// Denied whatever the policy says. `*` and `?` match within one path component.
pub const BUILTIN_DENIED: &[&str] = &[
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/var/backups/shadow.bak",
    "/var/backups/gshadow.bak",
    "/etc/security/opasswd",
    "/etc/ssh/ssh_host_*_key",
    "/var/lib/cordon-controller",
    "/etc/cordon",
    "/root/.config/cordon",
    "/home/*/.config/cordon",
];

/// Most entries indexed under each denied directory per task (each rule and each path a glob
/// expands to has its own budget, so one large or stuffed tree cannot starve the others); past
/// it the walk stops (and says so in the log), what is left is still refused by ancestry and
/// markers, and files with other hard links are refused outright.
const MAX_INDEXED: usize = 20_000;
/// Accounts below this uid are system accounts (Debian's and most distributions' `UID_MIN`):
/// no unprivileged user can own a file as one.
const SYSTEM_UID_LIMIT: u32 = 1000;
/// Most symlinks followed while opening one path, as the kernel's own limit.
const MAX_LINKS: usize = 40;
/// Deepest ancestry walked from a directory to `/`.
const MAX_ANCESTRY: usize = 4096;

/// One rule: a path (perhaps with globs) and why it is denied, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    path: PathBuf,
    why: &'static str,
}

/// The rules collection obeys. Cheap to clone; build an [`Index`] per task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gate {
    rules: Arc<[Rule]>,
    /// Whether directories holding a [`PRIVATE_DIR_MARKER`] are denied (off only in a detached
    /// context).
    markers: bool,
}

impl Gate {
    /// Nothing denied (a detached context: tests and benchmarks).
    pub fn none() -> Self {
        Self::default()
    }

    /// The built-in rules, `data_dir`, the policy's `extra` rules, and marked directories.
    pub fn new(extra: &[String], data_dir: Option<&Path>) -> Self {
        let mut rules = Vec::new();
        if let Some(dir) = data_dir {
            rules.push(Rule {
                path: std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()),
                why: "the agent's data directory",
            });
        }
        rules.extend(BUILTIN_DENIED.iter().map(|p| Rule {
            path: PathBuf::from(p),
            why: "built-in denied path",
        }));
        rules.extend(extra.iter().map(|p| Rule {
            path: PathBuf::from(p),
            why: "policy denied_paths",
        }));
        Self {
            rules: rules.into(),
            markers: true,
        }
    }

    /// Exactly `rules` (path, why), no markers: for rails other than collection's, such as the
    /// paths quarantine never touches.
    pub fn of_rules(rules: &[(PathBuf, &'static str)]) -> Self {
        Self {
            rules: rules
                .iter()
                .map(|(path, why)| Rule {
                    path: std::path::absolute(path).unwrap_or_else(|_| path.clone()),
                    why,
                })
                .collect(),
            markers: false,
        }
    }

    /// Resolves every rule to identities, as the file system is now.
    pub fn index(&self) -> Index {
        let mut index = Index {
            rules: self.rules.clone(),
            markers: self.markers,
            ids: HashMap::new(),
            truncated: false,
            agent_uid: super::effective_uid(),
        };
        for (i, rule) in self.rules.iter().enumerate() {
            for path in expand(&rule.path) {
                index.add_tree(&path, i);
            }
        }
        if index.truncated {
            tracing::warn!(
                limit = MAX_INDEXED,
                "denied directories hold more entries than are indexed; \
                 the rest is still refused by path ancestry"
            );
        }
        index
    }
}

/// How [`Index::open`] treats the last component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// The entry itself, a symlink included (`O_PATH`): for stat.
    Entry,
    /// Whatever the path leads to, symlinks followed (`O_PATH`): for watches and existence.
    Follow,
    /// A regular file opened for reading (symlinks followed; a FIFO is not waited on).
    Regular,
    /// A directory opened for reading its entries (symlinks followed).
    Dir,
}

/// What [`Index::open`] opened: the descriptor, its metadata, and the directory it is in.
#[derive(Debug)]
pub struct Opened {
    pub file: File,
    pub meta: Metadata,
    /// The checked parent directory (`O_PATH`), for reading a symlink's target.
    pub parent: File,
    /// The last component's name in `parent`.
    pub name: PathBuf,
}

/// The rules resolved to identities, for one task.
#[derive(Debug)]
pub struct Index {
    rules: Arc<[Rule]>,
    markers: bool,
    /// (device, inode) → the rule whose tree holds it.
    ids: HashMap<(u64, u64), usize>,
    /// Whether some denied tree had more entries than were indexed.
    truncated: bool,
    /// The agent's own uid, whose markers count (see [`Index::check_marker`]).
    agent_uid: Option<u32>,
}

/// Why something is denied: the rule it fell under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial(String);

impl Denial {
    /// The task error for `path` (as the task named it).
    pub fn error(&self, path: &Path) -> TaskError {
        task_error(
            TaskErrorCode::PermissionDenied,
            format!("{}: {}", path.display(), self.reason()),
        )
    }

    /// The reason, for a listing's problems.
    pub fn reason(&self) -> String {
        format!("denied by the agent's path policy ({})", self.0)
    }

    /// The rule alone (`why: path`), for callers that word their own refusal.
    pub fn rule(&self) -> &str {
        &self.0
    }
}

impl Index {
    /// An index that denies nothing.
    pub fn none() -> Self {
        Gate::none().index()
    }

    /// Records `path` and, for a directory, everything below it (symlinks not followed).
    fn add_tree(&mut self, path: &Path, rule: usize) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        self.ids.insert((meta.dev(), meta.ino()), rule);
        // The kernel's pseudo file systems have no hard links and are huge: their root's
        // identity, and the ancestry check, cover them.
        if !meta.is_dir() || is_pseudo_fs(path) {
            return;
        }
        let mut stack = vec![path.to_path_buf()];
        let mut indexed = 0usize;
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if indexed >= MAX_INDEXED {
                    self.truncated = true;
                    return;
                }
                indexed += 1;
                let Ok(meta) = entry.metadata() else {
                    continue;
                };
                self.ids.insert((meta.dev(), meta.ino()), rule);
                if meta.is_dir() {
                    stack.push(entry.path());
                }
            }
        }
    }

    /// Denied if `meta` is a denied file or directory, or lies in a denied tree.
    pub fn check_identity(&self, meta: &Metadata) -> Result<(), Denial> {
        match self.ids.get(&(meta.dev(), meta.ino())) {
            Some(&i) => Err(self.denial(i)),
            // A hard link could lead into the part of a denied tree that was not indexed.
            None if self.truncated && !meta.is_dir() && meta.nlink() > 1 => Err(Denial(
                "a file with other hard links, while a denied directory is too large to index"
                    .into(),
            )),
            None => Ok(()),
        }
    }

    /// Checks a directory met while walking (its parent was checked already): its identity and,
    /// for marked directories, its marker.
    pub fn check_child_dir(&self, dir: &File, meta: &Metadata) -> Result<(), Denial> {
        self.check_identity(meta)?;
        self.check_marker(dir)
    }

    /// Checks an opened directory and every directory above it, by walking `..`.
    pub fn check_ancestry(&self, dir: &File) -> Result<(), Denial> {
        let mut current = dir.try_clone().map_err(|e| unreadable(&e))?;
        let mut meta = current.metadata().map_err(|e| unreadable(&e))?;
        for _ in 0..MAX_ANCESTRY {
            self.check_child_dir(&current, &meta)?;
            let up = open_at(&current, "..", OFlags::PATH | OFlags::DIRECTORY)
                .map_err(|e| unreadable(&e))?;
            let up_meta = up.metadata().map_err(|e| unreadable(&e))?;
            if (up_meta.dev(), up_meta.ino()) == (meta.dev(), meta.ino()) {
                return Ok(());
            }
            (current, meta) = (up, up_meta);
        }
        Err(Denial("directory nesting too deep to check".into()))
    }

    /// A marker counts only where nobody but a trusted account could have put it: the marker
    /// and its directory belong to the same account — root, a system account, or the agent's
    /// own — and the directory is not writable by group or others. Otherwise any user could
    /// hide a directory (and malware in it) from collection with one `touch`.
    fn check_marker(&self, dir: &File) -> Result<(), Denial> {
        if !self.markers {
            return Ok(());
        }
        let Ok(marker) = rustix::fs::statat(dir, PRIVATE_DIR_MARKER, AtFlags::SYMLINK_NOFOLLOW)
        else {
            return Ok(());
        };
        let Ok(dir_meta) = dir.metadata() else {
            return Err(Denial(
                "a directory with a Cordon marker that cannot be checked".into(),
            ));
        };
        let owner = marker.st_uid;
        let trusted = owner == 0 || owner < SYSTEM_UID_LIMIT || Some(owner) == self.agent_uid;
        if !trusted || owner != dir_meta.uid() || dir_meta.mode() & 0o022 != 0 {
            return Ok(());
        }
        Err(Denial(format!(
            "a Cordon private directory, marked by {PRIVATE_DIR_MARKER}{}",
            shown(dir)
                .map(|p| format!(": {}", p.display()))
                .unwrap_or_default()
        )))
    }

    fn denial(&self, rule: usize) -> Denial {
        let rule = &self.rules[rule];
        Denial(format!("{}: {}", rule.why, rule.path.display()))
    }

    /// Denied if `path`, as written, lies under a rule's path. Only a shortcut for names that
    /// can no longer be opened (a removed file's watch event); opened things go by identity.
    pub fn check_written(&self, path: &Path) -> Result<(), Denial> {
        for (i, rule) in self.rules.iter().enumerate() {
            let pattern: Vec<Component> = rule.path.components().collect();
            let mut written = path.components();
            if pattern.iter().all(|want| {
                written
                    .next()
                    .is_some_and(|got| component_matches(want, &got))
            }) {
                return Err(self.denial(i));
            }
        }
        Ok(())
    }

    /// Opens `path` (from a task) through the gate, as `want` says. A denied path, or one that
    /// leads into a denied place, is `PermissionDenied` naming the path and the rule.
    pub fn open(&self, path: &str, want: Want) -> Result<Opened, TaskError> {
        let requested = validate_path(path)?;
        let mut current = requested.clone();
        for _ in 0..=MAX_LINKS {
            let (parent_path, name) = split(&current);
            let parent = open_dir(&parent_path).map_err(|e| io_error(&requested, &e))?;
            self.check_ancestry(&parent)
                .map_err(|d| d.error(&requested))?;
            let entry = open_at(&parent, &name, OFlags::PATH | OFlags::NOFOLLOW)
                .map_err(|e| io_error(&requested, &e))?;
            let meta = entry.metadata().map_err(|e| io_error(&requested, &e))?;
            self.check_identity(&meta)
                .map_err(|d| d.error(&requested))?;
            if meta.file_type().is_symlink() && want != Want::Entry {
                let target = rustix::fs::readlinkat(&parent, &name, Vec::new())
                    .map_err(|e| io_error(&requested, &e.into()))?;
                let target = PathBuf::from(std::ffi::OsStr::from_bytes(target.as_bytes()));
                current = parent_path.join(target);
                continue;
            }
            let file = match want {
                Want::Entry | Want::Follow => entry,
                Want::Regular if meta.is_dir() => {
                    return Err(invalid(&requested, "is a directory"));
                }
                Want::Regular if !meta.is_file() => {
                    return Err(invalid(&requested, "not a regular file"));
                }
                Want::Regular => {
                    let file = reopen(&parent, &name, &meta, OFlags::RDONLY | OFlags::NONBLOCK)
                        .map_err(|e| io_error(&requested, &e))?;
                    if let Some(fs) = pseudo_fs(&file) {
                        return Err(invalid(
                            &requested,
                            &format!(
                                "is a kernel pseudo-file ({fs}): its contents are made up on each \
                                 read and may never end, so it is neither hashed nor fetched"
                            ),
                        ));
                    }
                    file
                }
                Want::Dir if !meta.is_dir() => {
                    return Err(invalid(&requested, "not a directory"));
                }
                Want::Dir => {
                    let dir = reopen(&parent, &name, &meta, OFlags::RDONLY | OFlags::DIRECTORY)
                        .map_err(|e| io_error(&requested, &e))?;
                    self.check_marker(&dir).map_err(|d| d.error(&requested))?;
                    dir
                }
            };
            if meta.is_dir() && want != Want::Dir {
                self.check_marker(&file).map_err(|d| d.error(&requested))?;
            }
            return Ok(Opened {
                file,
                meta,
                parent,
                name,
            });
        }
        Err(task_error(
            TaskErrorCode::InvalidInput,
            format!(
                "{}: more than {MAX_LINKS} symbolic links",
                requested.display()
            ),
        ))
    }

    /// Whether a watch may report a change at `path`: the directory it is in (if it is still
    /// there) and the entry itself (likewise) are checked as [`Index::open`] checks them.
    pub fn permits_change(&self, path: &Path) -> bool {
        if self.check_written(path).is_err() {
            return false;
        }
        let (parent_path, name) = split(path);
        let Ok(parent) = open_dir(&parent_path) else {
            return true;
        };
        if self.check_ancestry(&parent).is_err() {
            return false;
        }
        match open_at(&parent, &name, OFlags::PATH | OFlags::NOFOLLOW) {
            Ok(entry) => entry.metadata().is_ok_and(|meta| {
                self.check_identity(&meta).is_ok()
                    && (!meta.is_dir() || self.check_marker(&entry).is_ok())
            }),
            Err(_) => true,
        }
    }
}

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
fn is_pseudo_fs(path: &Path) -> bool {
    rustix::fs::statfs(path)
        .is_ok_and(|fs| matches!(pseudo_fs_name(fs.f_type), Some("procfs" | "sysfs")))
}

/// The kernel pseudo file system `file` is on, if it is on one.
fn pseudo_fs(file: &File) -> Option<&'static str> {
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

fn invalid(path: &Path, why: &str) -> TaskError {
    task_error(
        TaskErrorCode::InvalidInput,
        format!("{}: {why}", path.display()),
    )
}

fn unreadable(e: &io::Error) -> Denial {
    Denial(format!(
        "cannot check where it lies ({e}); denied to be safe"
    ))
}

/// The path the kernel gives for an open descriptor: for messages only, never for decisions.
fn shown(file: &File) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()
}

/// `path`'s parent and last component; `/` is `/` and `.`, and a path ending in `..` (a
/// symlink's relative target) is that directory and `.`.
fn split(path: &Path) -> (PathBuf, PathBuf) {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => (parent.to_path_buf(), PathBuf::from(name)),
        _ => (path.to_path_buf(), PathBuf::from(".")),
    }
}

/// Opens a directory as `O_PATH`, refusing magic links (`/proc/PID/root`, `/proc/PID/cwd`)
/// where the kernel can; ordinary symlinks are followed (the ancestry of what is opened is
/// checked afterwards, so following them is safe).
fn open_dir(path: &Path) -> io::Result<File> {
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

fn open_at(dir: &File, name: impl rustix::path::Arg, flags: OFlags) -> io::Result<File> {
    Ok(File::from(rustix::fs::openat(
        dir,
        name,
        flags | OFlags::CLOEXEC,
        Mode::empty(),
    )?))
}

/// Opens `name` in `dir` for reading, without following a link and without updating the access
/// time where the kernel allows it, and insists it is still `checked`.
fn reopen(dir: &File, name: &Path, checked: &Metadata, flags: OFlags) -> io::Result<File> {
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

/// Every existing path a rule names, its globs expanded (one component at a time).
fn expand(pattern: &Path) -> Vec<PathBuf> {
    // A relative rule (a data directory given as `./agent`) means what it names from here,
    // never the same words under `/`.
    let Ok(pattern) = std::path::absolute(pattern) else {
        return Vec::new();
    };
    let mut found = vec![PathBuf::from("/")];
    for component in pattern.components().skip(1) {
        let Component::Normal(part) = component else {
            continue;
        };
        let part = part.to_string_lossy();
        if !part.contains(['*', '?', '[']) {
            found.iter_mut().for_each(|p| p.push(part.as_ref()));
            continue;
        }
        let Ok(glob) = Glob::new(&part) else {
            return Vec::new();
        };
        found = found
            .iter()
            .filter_map(|dir| std::fs::read_dir(dir).ok())
            .flat_map(|entries| entries.flatten())
            .filter(|e| glob.matches(&e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .collect();
    }
    found
}

fn component_matches(want: &Component, got: &Component) -> bool {
    match (want, got) {
        (Component::Normal(w), Component::Normal(g)) => {
            let w = w.to_string_lossy();
            if w.contains(['*', '?', '[']) {
                Glob::new(&w).is_ok_and(|glob| glob.matches(&g.to_string_lossy()))
            } else {
                w == g.to_string_lossy()
            }
        }
        (w, g) => w == g,
    }
}

#[cfg(test)]
mod tests;
