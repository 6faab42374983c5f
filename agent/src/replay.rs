//! The replay cache: every action id and nonce the agent has accepted, until the action's
//! envelope has expired, so a signed envelope runs at most once — also across agent restarts.
//!
//! On disk: `DATA_DIR/replay.jsonl` (0600), one JSON object per accepted action:
//!
//! ```text
//! {"action_id":"5f0c…","nonce":"00112233445566778899aabbccddeeff","expires_at_ms":1700000300000}
//! ```
//!
//! A line is appended and fsync'd before [`ReplayCache::check_and_record`] returns, that is
//! before the action runs. Opening the cache drops expired entries and rewrites the file
//! atomically (temporary file, fsync, rename, fsync of the directory); so does an append once the
//! file holds many more lines than live entries. A torn last line (power lost mid-append) is
//! skipped: that action never ran, since its record was not complete.

use std::{
    collections::{HashMap, HashSet},
    fs::{self, File, OpenOptions},
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::AgentError;

/// The cache file's name inside the data directory.
pub const FILE_NAME: &str = "replay.jsonl";

/// Most unexpired actions remembered. When full, new actions are refused rather than an entry
/// forgotten: forgetting would make a live envelope replayable.
pub const MAX_ENTRIES: usize = 65_536;

/// Entries are kept this long after their envelope expired, so a clock stepped back a little
/// (NTP) cannot make an expired, forgotten envelope valid again.
pub const KEEP_AFTER_EXPIRY_MS: i64 = 5 * 60 * 1000;

/// Why an action was not recorded.
#[derive(Debug, Error)]
pub enum ReplayError {
    #[error("action {0} was seen before")]
    SeenAction(String),
    #[error("nonce {0} was seen before")]
    SeenNonce(String),
    #[error("the replay cache holds {MAX_ENTRIES} unexpired actions; try again later")]
    Full,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    action_id: String,
    nonce: String,
    expires_at_ms: i64,
}

/// The persisted set of accepted actions. Not shared: callers hold it behind a mutex.
#[derive(Debug)]
pub struct ReplayCache {
    path: PathBuf,
    file: File,
    /// action id → (nonce, expiry).
    entries: HashMap<String, ([u8; 16], i64)>,
    /// The nonces of `entries`.
    nonces: HashSet<[u8; 16]>,
    /// Lines in the file, live or not; triggers a rewrite when far above `entries.len()`.
    lines: usize,
    /// [`MAX_ENTRIES`], smaller in tests.
    limit: usize,
}

impl ReplayCache {
    /// Opens (or creates) `DATA_DIR/replay.jsonl`, dropping entries expired at `now_ms`.
    pub fn open(data_dir: &Path, now_ms: i64) -> Result<ReplayCache, AgentError> {
        let path = data_dir.join(FILE_NAME);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(AgentError::io(&path, e)),
        };
        let mut entries = HashMap::new();
        let mut skipped = 0usize;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let parsed = serde_json::from_str::<Entry>(line)
                .ok()
                .and_then(|e| Some((decode_nonce(&e.nonce)?, e)));
            match parsed {
                Some((nonce, entry)) => {
                    if !expired(entry.expires_at_ms, now_ms) {
                        entries.insert(entry.action_id, (nonce, entry.expires_at_ms));
                    }
                }
                None => skipped += 1,
            }
        }
        if skipped > 0 {
            tracing::warn!(path = %path.display(), skipped, "replay cache: skipped unreadable lines");
        }
        let file = rewrite(&path, &entries).map_err(|e| AgentError::io(&path, e))?;
        Ok(ReplayCache {
            path,
            file,
            lines: entries.len(),
            limit: MAX_ENTRIES,
            nonces: entries.values().map(|(n, _)| *n).collect(),
            entries,
        })
    }

    /// Unexpired actions remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// When the envelope of accepted action `action_id` expires, if it is still remembered.
    pub fn expires_at(&self, action_id: &str) -> Option<i64> {
        self.entries
            .get(action_id)
            .map(|(_, expires_at_ms)| *expires_at_ms)
    }

    /// Whether `action_id` or `nonce` was accepted before (and has not been pruned).
    pub fn seen(&self, action_id: &str, nonce: &[u8; 16]) -> Result<(), ReplayError> {
        if self.entries.contains_key(action_id) {
            return Err(ReplayError::SeenAction(action_id.to_string()));
        }
        if self.nonces.contains(nonce) {
            return Err(ReplayError::SeenNonce(hex::encode(nonce)));
        }
        Ok(())
    }

    /// Refuses an action id or nonce seen before; otherwise records both durably (fsync'd)
    /// before returning, so the action can run.
    pub fn check_and_record(
        &mut self,
        action_id: &str,
        nonce: &[u8; 16],
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<(), ReplayError> {
        self.prune(now_ms);
        self.seen(action_id, nonce)?;
        if self.entries.len() >= self.limit {
            return Err(ReplayError::Full);
        }
        let entry = Entry {
            action_id: action_id.to_string(),
            nonce: hex::encode(nonce),
            expires_at_ms,
        };
        let io = |source| ReplayError::Io {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_string(&entry).map_err(|e| io(e.into()))?;
        line.push('\n');
        self.file.write_all(line.as_bytes()).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.entries
            .insert(entry.action_id, (*nonce, expires_at_ms));
        self.nonces.insert(*nonce);
        self.lines += 1;
        if self.lines > 2 * self.entries.len() + 1024 {
            // A failed compaction loses nothing: the appended file is still complete.
            match rewrite(&self.path, &self.entries) {
                Ok(file) => {
                    self.file = file;
                    self.lines = self.entries.len();
                }
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "replay cache: compaction failed")
                }
            }
        }
        Ok(())
    }

    fn prune(&mut self, now_ms: i64) {
        let before = self.entries.len();
        self.entries.retain(|_, (_, exp)| !expired(*exp, now_ms));
        if self.entries.len() != before {
            self.nonces = self.entries.values().map(|(n, _)| *n).collect();
        }
    }
}

fn expired(expires_at_ms: i64, now_ms: i64) -> bool {
    expires_at_ms.saturating_add(KEEP_AFTER_EXPIRY_MS) < now_ms
}

fn decode_nonce(text: &str) -> Option<[u8; 16]> {
    hex::decode(text).ok()?.try_into().ok()
}

/// Writes the live entries to a new file that replaces `path` durably, and returns it open for
/// appending.
fn rewrite(path: &Path, entries: &HashMap<String, ([u8; 16], i64)>) -> std::io::Result<File> {
    let mut text = String::new();
    for (action_id, (nonce, expires_at_ms)) in entries {
        let entry = Entry {
            action_id: action_id.clone(),
            nonce: hex::encode(nonce),
            expires_at_ms: *expires_at_ms,
        };
        text.push_str(&serde_json::to_string(&entry)?);
        text.push('\n');
    }
    let tmp = path.with_extension("jsonl.tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    OpenOptions::new().append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn replay_refuses_a_seen_id_or_nonce_also_after_reopening() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cache = ReplayCache::open(tmp.path(), NOW).unwrap();
        cache
            .check_and_record("a1", &[1; 16], NOW + 60_000, NOW)
            .unwrap();
        assert!(matches!(
            cache.check_and_record("a1", &[2; 16], NOW + 60_000, NOW),
            Err(ReplayError::SeenAction(_))
        ));
        assert!(matches!(
            cache.check_and_record("a2", &[1; 16], NOW + 60_000, NOW),
            Err(ReplayError::SeenNonce(_))
        ));
        drop(cache);

        // As after an agent restart: the record was on disk before the action ran.
        let mut cache = ReplayCache::open(tmp.path(), NOW + 1000).unwrap();
        assert_eq!(cache.len(), 1);
        assert!(cache
            .check_and_record("a1", &[3; 16], NOW + 60_000, NOW)
            .is_err());
        assert!(cache
            .check_and_record("a3", &[1; 16], NOW + 60_000, NOW)
            .is_err());
        cache
            .check_and_record("a3", &[3; 16], NOW + 60_000, NOW)
            .unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(tmp.path().join(FILE_NAME))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn replay_entries_are_pruned_after_expiry_and_the_file_shrinks() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cache = ReplayCache::open(tmp.path(), NOW).unwrap();
        for i in 0..10u8 {
            cache
                .check_and_record(&format!("old-{i}"), &[i; 16], NOW + 1000, NOW)
                .unwrap();
        }
        cache
            .check_and_record("live", &[99; 16], NOW + 3_600_000, NOW)
            .unwrap();
        // Still remembered a little past expiry, in case the clock steps back.
        let soon = NOW + 1000 + KEEP_AFTER_EXPIRY_MS;
        assert!(cache
            .check_and_record("old-0", &[200; 16], NOW + 1000, soon)
            .is_err());
        let later = soon + 1;
        cache
            .check_and_record("new", &[100; 16], later + 60_000, later)
            .unwrap();
        assert_eq!(cache.len(), 2);
        drop(cache);
        let cache = ReplayCache::open(tmp.path(), later).unwrap();
        assert_eq!(cache.len(), 2);
        let text = fs::read_to_string(tmp.path().join(FILE_NAME)).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    #[test]
    fn replay_skips_a_torn_last_line() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cache = ReplayCache::open(tmp.path(), NOW).unwrap();
        cache
            .check_and_record("a1", &[1; 16], NOW + 60_000, NOW)
            .unwrap();
        drop(cache);
        let path = tmp.path().join(FILE_NAME);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"action_id\":\"a2\",\"non").unwrap();
        drop(f);
        let mut cache = ReplayCache::open(tmp.path(), NOW).unwrap();
        assert_eq!(cache.len(), 1);
        cache
            .check_and_record("a2", &[2; 16], NOW + 60_000, NOW)
            .unwrap();
        assert!(cache.seen("a1", &[9; 16]).is_err());
    }

    #[test]
    fn replay_cache_full_refuses_instead_of_forgetting() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cache = ReplayCache::open(tmp.path(), NOW).unwrap();
        cache.limit = 2;
        cache
            .check_and_record("a1", &[1; 16], NOW + 60_000, NOW)
            .unwrap();
        cache
            .check_and_record("a2", &[2; 16], NOW + 60_000, NOW)
            .unwrap();
        assert!(matches!(
            cache.check_and_record("a3", &[3; 16], NOW + 60_000, NOW),
            Err(ReplayError::Full)
        ));
        assert!(cache.seen("a1", &[9; 16]).is_err());
    }
}
