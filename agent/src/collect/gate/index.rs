//! The rules resolved to identities for one task, and opening a path through them.

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
use rustix::fs::{AtFlags, OFlags};

use super::{
    component_matches,
    open::{
        is_pseudo_fs, nearest_open_ancestor, open_at, open_dir, pseudo_fs, reopen, shown, split,
    },
    Gate, Rule, MAX_ANCESTRY, MAX_INDEXED, MAX_LINKS, SYSTEM_UID_LIMIT,
};
use crate::collect::{io_error, task_error, validate_path};

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
    pub(super) rules: Arc<[Rule]>,
    pub(super) markers: bool,
    /// (device, inode) → the rule whose tree holds it.
    pub(super) ids: HashMap<(u64, u64), usize>,
    /// Whether some denied tree had more entries than were indexed.
    pub(super) truncated: bool,
    /// The agent's own uid, whose markers count (see [`Index::check_marker`]).
    pub(super) agent_uid: Option<u32>,
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
    pub(super) fn add_tree(&mut self, path: &Path, rule: usize) {
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

    /// The error for a `requested` path whose directory `dir` could not be opened: denied if
    /// the nearest directory still there is denied (so the answer tells nothing of what is in
    /// it), else the I/O error as it was.
    fn missing(&self, requested: &Path, dir: &Path, e: &io::Error) -> TaskError {
        match nearest_open_ancestor(dir).map(|d| self.check_ancestry(&d)) {
            Some(Err(denial)) => denial.error(requested),
            _ => io_error(requested, e),
        }
    }

    /// Opens `path` (from a task) through the gate, as `want` says. A denied path, or one that
    /// leads into a denied place, is `PermissionDenied` naming the path and the rule.
    ///
    /// Whether something exists inside a denied place is not told either: a missing path
    /// under a denied name or directory is denied, not "not found".
    pub fn open(&self, path: &str, want: Want) -> Result<Opened, TaskError> {
        let requested = validate_path(path)?;
        self.check_written(&requested)
            .map_err(|d| d.error(&requested))?;
        let mut current = requested.clone();
        for _ in 0..=MAX_LINKS {
            let (parent_path, name) = split(&current);
            let parent =
                open_dir(&parent_path).map_err(|e| self.missing(&requested, &parent_path, &e))?;
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
            // Its directory is gone: what it was cannot be checked any more (a removed denied
            // or marked directory's files must not be listed by their deletion events), so
            // nothing is reported. The directory's own removal is, from its parent.
            return false;
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
