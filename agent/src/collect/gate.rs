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
    path::{Component, Path, PathBuf},
    sync::Arc,
};

use cordon_protocol::message::TaskError;

use super::{glob::Glob, validate_path};

mod index;
mod open;

pub use index::{Denial, Index, Opened, Want};
pub(crate) use open::{open_entry, open_subdir};

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

/// Checks a `denied_paths` rule as written in a policy: an absolute path without `..`, each
/// globbed component a valid glob. A rule that cannot be read would deny nothing.
pub fn check_rule(rule: &str) -> Result<(), TaskError> {
    let path = validate_path(rule)?;
    for component in path.components() {
        if let Component::Normal(part) = component {
            let part = part.to_string_lossy();
            if part.contains(GLOB_CHARS) {
                Glob::new(&part)?;
            }
        }
    }
    Ok(())
}

/// The characters that make a path component a glob.
const GLOB_CHARS: [char; 3] = ['*', '?', '['];

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
        if !part.contains(GLOB_CHARS) {
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
            if w.contains(GLOB_CHARS) {
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
