//! Directory listings (`TaskKind::ListDir`): depth, count and glob limits; never follows a
//! symlink below the root, and remembers every directory by (device, inode) so no link or bind
//! mount can make a listing loop. What cannot be read is reported, not fatal.

use std::{
    collections::{HashSet, VecDeque},
    ffi::OsStr,
    fs::File,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
};

use cordon_protocol::{
    collect::{DirEntry, DirListing, ListProblem},
    message::{ListDirRequest, TaskError},
};

use super::{
    cancel::Cancel,
    epoch_ms,
    file::kind_of,
    gate::{open_entry, open_subdir, Index, Want},
    glob::Glob,
};

/// Deepest listing: depth 0 is the root's own entries.
pub const MAX_DEPTH: u32 = 32;
/// Most entries one listing returns.
pub const MAX_ENTRIES: u32 = 100_000;
/// Most directory entries one listing looks at (matching the glob or not), so a glob that
/// matches nothing cannot walk a whole file system.
const MAX_VISITED: usize = 1_000_000;
/// Most problems one listing reports.
const MAX_PROBLEMS: usize = 1_000;

/// Lists a directory breadth first, so a capped listing keeps the shallowest entries; entries of
/// one directory come sorted by name. The root may be a symlink to a directory (it was named
/// explicitly); below it, symlinks are entries, never followed. Unreadable directories and
/// entries go to `problems`.
///
/// The root is opened through the gate (`index`); below it every directory is opened from its
/// checked parent by descriptor, and every entry is judged by its identity: what the path policy
/// denies (see [`super::gate`]) is reported in `problems`, neither listed nor descended into.
pub fn list(req: &ListDirRequest, index: &Index, cancel: &Cancel) -> Result<DirListing, TaskError> {
    let glob = req.glob.as_deref().map(Glob::new).transpose()?;
    let root = index.open(&req.path, Want::Dir)?;
    let max_depth = req.max_depth.min(MAX_DEPTH);
    let max_entries = req.max_entries.min(MAX_ENTRIES) as usize;

    let mut out = Walk {
        listing: DirListing {
            root: req.path.clone(),
            entries: Vec::new(),
            problems: Vec::new(),
            truncated: false,
        },
        problems_dropped: 0,
    };
    let mut visited: HashSet<(u64, u64)> = HashSet::from([(root.meta.dev(), root.meta.ino())]);
    let mut queue = VecDeque::from([(root.file, PathBuf::from(&req.path), 0u32)]);
    let mut seen = 0usize;
    'walk: while let Some((dir, dir_path, depth)) = queue.pop_front() {
        let names = match read_names(&dir) {
            Ok(names) => names,
            Err(e) => {
                out.problem(&dir_path, e.to_string());
                continue;
            }
        };
        for name in names {
            if cancel.is_cancelled() {
                return Err(Cancel::error(&req.path));
            }
            seen += 1;
            if seen > MAX_VISITED {
                out.listing.truncated = true;
                out.problem(
                    &dir_path,
                    format!("stopped after looking at {MAX_VISITED} entries"),
                );
                break 'walk;
            }
            let path = dir_path.join(&name);
            let (entry, meta) = match open_entry(&dir, &name).and_then(|f| {
                let meta = f.metadata()?;
                Ok((f, meta))
            }) {
                Ok(found) => found,
                Err(e) => {
                    out.problem(&path, e.to_string());
                    continue;
                }
            };
            let judged = if meta.is_dir() {
                index.check_child_dir(&entry, &meta)
            } else {
                index.check_identity(&meta)
            };
            if let Err(denial) = judged {
                out.problem(&path, denial.reason());
                continue;
            }
            if meta.is_dir() && depth < max_depth {
                if !visited.insert((meta.dev(), meta.ino())) {
                    out.problem(
                        &path,
                        "directory already listed (loop); not descended".into(),
                    );
                } else {
                    match open_subdir(&dir, &name, &meta) {
                        Ok(sub) => queue.push_back((sub, path.clone(), depth + 1)),
                        Err(e) => out.problem(&path, e.to_string()),
                    }
                }
            }
            if glob
                .as_ref()
                .is_some_and(|g| !g.matches(&name.to_string_lossy()))
            {
                continue;
            }
            if out.listing.entries.len() >= max_entries {
                out.listing.truncated = true;
                break 'walk;
            }
            out.listing.entries.push(DirEntry {
                path: path.to_string_lossy().into_owned(),
                kind: kind_of(&meta),
                size: meta.size(),
                mode: meta.mode(),
                modified_ms: epoch_ms(meta.mtime(), meta.mtime_nsec()),
                depth,
            });
        }
    }
    Ok(out.finish())
}

/// The names in an opened directory, sorted, without `.` and `..`.
fn read_names(dir: &File) -> std::io::Result<Vec<PathBuf>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(PathBuf::from(OsStr::from_bytes(name)));
        }
    }
    names.sort();
    Ok(names)
}

/// A listing in progress, with its bounded problem list.
struct Walk {
    listing: DirListing,
    problems_dropped: usize,
}

impl Walk {
    fn problem(&mut self, path: &Path, problem: String) {
        if self.listing.problems.len() < MAX_PROBLEMS {
            self.listing.problems.push(ListProblem {
                path: path.to_string_lossy().into_owned(),
                problem,
            });
        } else {
            self.problems_dropped += 1;
        }
    }

    fn finish(mut self) -> DirListing {
        if self.problems_dropped > 0 {
            self.listing.problems.push(ListProblem {
                path: self.listing.root.clone(),
                problem: format!("{} more problems not listed", self.problems_dropped),
            });
        }
        self.listing
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn list_all(req: &ListDirRequest) -> Result<DirListing, TaskError> {
        list(req, &Index::none(), &Cancel::never())
    }

    #[test]
    fn denied_entries_are_reported_and_not_descended() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("secret")).unwrap();
        std::fs::write(dir.path().join("secret/key"), b"k").unwrap();
        std::fs::write(dir.path().join("open.txt"), b"o").unwrap();
        let secret = dir.path().join("secret");
        // Also a hard link to the denied key, and a marked directory.
        std::fs::hard_link(secret.join("key"), dir.path().join("linked")).unwrap();
        std::fs::create_dir(dir.path().join("marked")).unwrap();
        std::fs::write(dir.path().join("marked").join(PRIVATE_DIR_MARKER), b"").unwrap();
        let gate = Gate::new(&[secret.display().to_string()], None);
        let listing = list(
            &request(dir.path(), None, 5, 100),
            &gate.index(),
            &Cancel::never(),
        )
        .unwrap();
        let paths: Vec<&str> = listing.entries.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.iter().any(|p| p.ends_with("open.txt")), "{paths:?}");
        for hidden in ["secret", "linked", "marked"] {
            assert!(!paths.iter().any(|p| p.contains(hidden)), "{paths:?}");
            assert!(
                listing.problems.iter().any(|p| p.path.ends_with(hidden)),
                "{hidden}: {:?}",
                listing.problems
            );
        }
        let problem = listing
            .problems
            .iter()
            .find(|p| p.path.ends_with("secret"))
            .expect("the denied directory is reported");
        assert!(
            problem.problem.contains("path policy"),
            "{}",
            problem.problem
        );
    }

    use cordon_protocol::{collect::FileKind, collect::PRIVATE_DIR_MARKER, message::TaskErrorCode};

    use super::*;
    use crate::collect::effective_uid;
    use crate::collect::gate::Gate;

    fn s(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    /// root/{a.txt, b.log, sub/{c.txt, deeper/d.txt}, loop -> ..}
    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("a.txt"), b"a").unwrap();
        std::fs::write(root.join("b.log"), b"bb").unwrap();
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::write(root.join("sub/c.txt"), b"c").unwrap();
        std::fs::write(root.join("sub/deeper/d.txt"), b"d").unwrap();
        symlink("..", root.join("sub/loop")).unwrap();
        dir
    }

    fn request(
        root: &Path,
        glob: Option<&str>,
        max_depth: u32,
        max_entries: u32,
    ) -> ListDirRequest {
        ListDirRequest {
            path: s(root).to_string(),
            glob: glob.map(str::to_string),
            max_depth,
            max_entries,
        }
    }

    fn names(listing: &DirListing, root: &Path) -> Vec<String> {
        listing
            .entries
            .iter()
            .map(|e| {
                e.path
                    .strip_prefix(s(root))
                    .unwrap()
                    .trim_start_matches('/')
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn depth_zero_lists_only_the_roots_entries() {
        let dir = tree();
        let listing = list_all(&request(dir.path(), None, 0, 100)).unwrap();
        assert_eq!(names(&listing, dir.path()), ["a.txt", "b.log", "sub"]);
        assert!(listing.entries.iter().all(|e| e.depth == 0));
        assert!(!listing.truncated);
        let a = &listing.entries[0];
        assert_eq!((a.kind, a.size), (FileKind::File, 1));
        assert_eq!(listing.entries[2].kind, FileKind::Dir);
    }

    #[test]
    fn deeper_listings_are_breadth_first_and_never_follow_a_symlink_loop() {
        let dir = tree();
        let listing = list_all(&request(dir.path(), None, MAX_DEPTH + 10, 100)).unwrap();
        assert_eq!(
            names(&listing, dir.path()),
            [
                "a.txt",
                "b.log",
                "sub",
                "sub/c.txt",
                "sub/deeper",
                "sub/loop",
                "sub/deeper/d.txt"
            ]
        );
        let link = listing
            .entries
            .iter()
            .find(|e| e.path.ends_with("sub/loop"))
            .unwrap();
        assert_eq!(link.kind, FileKind::Symlink, "reported as a link");
        assert_eq!(link.depth, 1);
        assert!(!listing.truncated);
        assert!(listing.problems.is_empty(), "{:?}", listing.problems);

        let one = list_all(&request(dir.path(), None, 1, 100)).unwrap();
        assert!(one.entries.iter().all(|e| e.depth <= 1));
        assert!(!names(&one, dir.path()).contains(&"sub/deeper/d.txt".to_string()));
    }

    #[test]
    fn the_entry_limit_truncates_and_says_so() {
        let dir = tree();
        let listing = list_all(&request(dir.path(), None, 5, 2)).unwrap();
        assert_eq!(names(&listing, dir.path()), ["a.txt", "b.log"]);
        assert!(listing.truncated);
        // Exactly as many as exist is not truncated.
        let exact = list_all(&request(dir.path(), None, 0, 3)).unwrap();
        assert_eq!(exact.entries.len(), 3);
        assert!(!exact.truncated);
    }

    #[test]
    fn a_glob_filters_names_at_every_depth() {
        let dir = tree();
        let listing = list_all(&request(dir.path(), Some("*.txt"), 5, 100)).unwrap();
        assert_eq!(
            names(&listing, dir.path()),
            ["a.txt", "sub/c.txt", "sub/deeper/d.txt"]
        );
        let bad = list_all(&request(dir.path(), Some("[oops"), 5, 100)).unwrap_err();
        assert_eq!(bad.code, TaskErrorCode::InvalidInput);
    }

    #[test]
    fn a_symlinked_root_is_followed_once_and_bad_roots_are_refused() {
        let dir = tree();
        let link = tempfile::tempdir().unwrap();
        let root_link = link.path().join("root");
        symlink(dir.path(), &root_link).unwrap();
        let listing = list_all(&request(&root_link, None, 0, 100)).unwrap();
        assert_eq!(names(&listing, &root_link), ["a.txt", "b.log", "sub"]);

        let file = dir.path().join("a.txt");
        assert_eq!(
            list_all(&request(&file, None, 0, 10)).unwrap_err().code,
            TaskErrorCode::InvalidInput
        );
        assert_eq!(
            list_all(&request(&dir.path().join("nope"), None, 0, 10))
                .unwrap_err()
                .code,
            TaskErrorCode::NotFound
        );
    }

    #[test]
    fn an_unreadable_directory_is_a_problem_not_a_failure() {
        if effective_uid() == Some(0) {
            eprintln!("SKIPPED: running as root, where mode 000 does not stop reads");
            return;
        }
        let dir = tree();
        let locked = dir.path().join("sub/deeper");
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        let listing = list_all(&request(dir.path(), None, 5, 100)).unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(
            listing.problems.iter().any(|p| p.path == s(&locked)),
            "{:?}",
            listing.problems
        );
        assert!(names(&listing, dir.path()).contains(&"sub/deeper".to_string()));
    }
}
