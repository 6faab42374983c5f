//! The agent's path policy for collection: paths no collection task may read.
//!
//! Read-only collection is authorised by the mTLS channel alone, so the host keeps a say over
//! what leaves it: `denied_paths` in `policy.toml` (default [`DEFAULT_DENIED`], the password
//! hashes), plus the agent's own data directory, which is always denied — it holds the agent's
//! private key, the quarantine vault and the replay cache, and no policy edit changes that.
//!
//! A path is denied when it, or what it resolves to through symlinks, lies under a denied path
//! (component-wise: `/etc/shadow` denies `/etc/shadow` and anything below it, not
//! `/etc/shadow.bak`). Resolving matters: `/tmp/x -> /etc/shadow` is refused like
//! `/etc/shadow`. Denied entries met while listing a directory are reported as skipped and
//! not descended into; a file hunt on a denied path is refused, as it would reveal whether
//! the file has a given hash.

use std::path::{Path, PathBuf};

use cordon_protocol::message::{TaskError, TaskErrorCode};

use super::task_error;

/// Denied when `policy.toml` says nothing: the shadow password and group files and their
/// backups.
pub const DEFAULT_DENIED: &[&str] = &[
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
];

/// The paths collection may not read. Cheap to build (a handful of entries) and to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeniedPaths {
    /// `(prefix, why)`; each prefix both as written and, where it exists, resolved.
    rules: Vec<(PathBuf, &'static str)>,
}

impl DeniedPaths {
    /// Nothing denied (a detached context: tests and benchmarks).
    pub fn none() -> Self {
        Self::default()
    }

    /// `policy` (the policy's `denied_paths`, or [`DEFAULT_DENIED`] when it has none) plus
    /// `data_dir`, always.
    pub fn new(policy: Option<&[String]>, data_dir: Option<&Path>) -> Self {
        let mut out = Self::default();
        if let Some(dir) = data_dir {
            out.push(dir.to_path_buf(), "the agent's data directory");
        }
        match policy {
            Some(paths) => {
                for p in paths {
                    out.push(PathBuf::from(p), "policy denied_paths");
                }
            }
            None => {
                for p in DEFAULT_DENIED {
                    out.push(PathBuf::from(p), "default denied_paths");
                }
            }
        }
        out
    }

    fn push(&mut self, prefix: PathBuf, why: &'static str) {
        if let Ok(resolved) = std::fs::canonicalize(&prefix) {
            if resolved != prefix {
                self.rules.push((resolved, why));
            }
        }
        self.rules.push((prefix, why));
    }

    /// The rule denying `path` (as given, or resolved through symlinks), if any.
    pub fn denies(&self, path: &Path) -> Option<(&Path, &'static str)> {
        if self.rules.is_empty() {
            return None;
        }
        self.denies_as_written(path).or_else(|| {
            std::fs::canonicalize(path)
                .ok()
                .and_then(|resolved| self.denies_as_written(&resolved))
        })
    }

    /// The rule denying `path` as written, without resolving symlinks: for entries met while
    /// walking a directory whose root was checked with [`DeniedPaths::denies`] (the walk never
    /// follows a symlink, so the path as written is the path read).
    pub fn denies_as_written(&self, path: &Path) -> Option<(&Path, &'static str)> {
        self.rules
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix))
            .map(|(prefix, why)| (prefix.as_path(), *why))
    }

    /// `Ok` if collection may read `path`; otherwise a `PermissionDenied` error naming the path
    /// and the rule.
    pub fn check(&self, path: &Path) -> Result<(), TaskError> {
        match self.denies(path) {
            None => Ok(()),
            Some((prefix, why)) => Err(denied_error(path, prefix, why)),
        }
    }
}

/// The error for a denied path.
pub fn denied_error(path: &Path, prefix: &Path, why: &str) -> TaskError {
    task_error(
        TaskErrorCode::PermissionDenied,
        format!(
            "{}: denied by the agent's path policy ({why}: {})",
            path.display(),
            prefix.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_deny_shadow_and_always_the_data_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let denied = DeniedPaths::new(None, Some(tmp.path()));
        let err = denied.check(Path::new("/etc/shadow")).unwrap_err();
        assert_eq!(err.code, TaskErrorCode::PermissionDenied);
        assert!(err.message.contains("/etc/shadow"), "{}", err.message);
        assert!(denied.check(&tmp.path().join("agent.key")).is_err());
        assert!(denied.check(Path::new("/etc/passwd")).is_ok());
        // Component-wise, not a string prefix.
        assert!(denied.check(Path::new("/etc/shadowsocks.json")).is_ok());

        // A policy list replaces the defaults but never the data directory.
        let denied = DeniedPaths::new(Some(&["/srv/secrets".into()]), Some(tmp.path()));
        assert!(denied.check(Path::new("/etc/shadow")).is_ok());
        assert!(denied.check(Path::new("/srv/secrets/db.key")).is_err());
        let err = denied.check(&tmp.path().join("vault")).unwrap_err();
        assert!(err.message.contains("data directory"), "{}", err.message);
    }

    #[test]
    fn a_symlink_into_a_denied_path_is_denied() {
        let tmp = tempfile::tempdir().unwrap();
        let secret = tmp.path().join("secret");
        std::fs::create_dir(&secret).unwrap();
        std::fs::write(secret.join("key"), b"k").unwrap();
        let link = tmp.path().join("innocent");
        std::os::unix::fs::symlink(secret.join("key"), &link).unwrap();
        let denied = DeniedPaths::new(Some(&[secret.display().to_string()]), None);
        let err = denied.check(&link).unwrap_err();
        assert!(err.message.contains("innocent"), "{}", err.message);
        assert!(denied.check(tmp.path()).is_ok());
    }
}
