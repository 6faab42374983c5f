//! The action journal: what the agent was ordered to do and what came of it, on the host, where
//! a compromised controller cannot edit it. Append-only JSON lines in `DATA_DIR/journal.jsonl`
//! (0600), each line fsync'd before the agent goes on:
//!
//! ```text
//! {"at_ms":…,"phase":"started","task_id":"…","action_id":"…","kind":"kill","action":{"Kill":{"pid":4242,…}},"signers":["1a2b…"],"envelope_sha256":"…"}
//! {"at_ms":…,"phase":"finished","task_id":"…","action_id":"…","kind":"kill","outcome":{"before":…,"done":"…","after":…},"receipt":{…}}
//! {"at_ms":…,"phase":"failed","task_id":"…","action_id":"…","kind":"kill","error":{"code":"PolicyDenied","message":"…"}}
//! ```
//!
//! A `started` line is written before an action runs; if it cannot be written the action does
//! not run. A `started` line without its end means the agent stopped while the action ran.
//! The end carries the exact answer the agent gave (the signed receipt, or the error), so the
//! same envelope delivered again is answered the same way, also after a restart
//! ([`crate::redelivery`]).
//! When the file passes [`MAX_BYTES`] it is renamed `journal.jsonl.1` (replacing the previous
//! one) and a new file begun, so the journal is bounded at twice that.

use std::{
    fs::{self, File, OpenOptions},
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use cordon_protocol::{
    action::ActionKind,
    message::{Receipt, TaskError},
};
use serde::{Deserialize, Serialize};

use crate::{act::Outcome, policy::VerifiedAction};

/// The journal's name inside the data directory.
pub const FILE_NAME: &str = "journal.jsonl";

/// Size at which the journal is rotated.
pub const MAX_BYTES: u64 = 16 * 1024 * 1024;

/// Where an entry stands in an action's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Started,
    Finished,
    Failed,
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub at_ms: i64,
    pub phase: Phase,
    pub task_id: String,
    pub action_id: String,
    pub kind: String,
    /// The action and its parameters (`started` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<serde_json::Value>,
    /// Key ids of the distinct signers (`started` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signers: Vec<String>,
    /// Before, done, after (`finished` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<serde_json::Value>,
    /// Why it failed (`failed` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
    /// SHA-256 of the envelope as delivered (`started` only; see
    /// [`crate::redelivery::envelope_digest`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope_sha256: Option<String>,
    /// The signed receipt the agent answered with (`finished` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<ReceiptRecord>,
}

/// A receipt as journaled: every field, keys and signature in hex.
pub type ReceiptRecord = cordon_protocol::receipt::ReceiptText;

impl Entry {
    fn new(phase: Phase, task_id: &str, action: &VerifiedAction, at_ms: i64) -> Entry {
        Entry {
            at_ms,
            phase,
            task_id: task_id.to_string(),
            action_id: action.request.action_id.to_string(),
            kind: kind_name(action.request.action.kind()),
            action: None,
            signers: Vec::new(),
            outcome: None,
            error: None,
            envelope_sha256: None,
            receipt: None,
        }
    }
}

fn kind_name(kind: ActionKind) -> String {
    kind.as_str().to_string()
}

/// The open journal. Callers serialise access (one mutex per agent).
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: Option<File>,
}

impl Journal {
    /// The journal of `data_dir`; the file is opened (created) at the first entry.
    pub fn new(data_dir: &Path) -> Journal {
        Journal {
            path: data_dir.join(FILE_NAME),
            file: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records that `action`, delivered as the envelope whose digest is `envelope_sha256`, is
    /// about to run.
    pub fn started(
        &mut self,
        task_id: &str,
        action: &VerifiedAction,
        envelope_sha256: &str,
        at_ms: i64,
    ) -> std::io::Result<()> {
        let mut entry = Entry::new(Phase::Started, task_id, action, at_ms);
        entry.action = Some(serde_json::to_value(&action.request.action)?);
        entry.signers = action.signers.clone();
        entry.envelope_sha256 = Some(envelope_sha256.to_string());
        self.append(&entry)
    }

    /// Records how `action` ended, with the receipt the agent answered with when it made one.
    pub fn ended(
        &mut self,
        task_id: &str,
        action: &VerifiedAction,
        result: &Result<Outcome, TaskError>,
        receipt: Option<&Receipt>,
        at_ms: i64,
    ) -> std::io::Result<()> {
        let entry = match result {
            Ok(outcome) => Entry {
                outcome: Some(serde_json::json!({
                    "before": outcome.before,
                    "done": outcome.done,
                    "after": outcome.after,
                })),
                receipt: receipt.map(ReceiptRecord::from),
                ..Entry::new(Phase::Finished, task_id, action, at_ms)
            },
            Err(error) => Entry {
                error: Some(error.clone()),
                ..Entry::new(Phase::Failed, task_id, action, at_ms)
            },
        };
        self.append(&entry)
    }

    /// Appends one line and fsyncs it.
    fn append(&mut self, entry: &Entry) -> std::io::Result<()> {
        let mut line = serde_json::to_string(entry)?;
        line.push('\n');
        let file = self.open()?;
        file.write_all(line.as_bytes())?;
        file.sync_data()
    }

    fn open(&mut self) -> std::io::Result<&mut File> {
        let full = match &self.file {
            Some(f) => f.metadata()?.len() >= MAX_BYTES,
            None => false,
        };
        if full {
            self.file = None;
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            fs::rename(&self.path, &old)?;
        }
        if self.file.is_none() {
            let created = !self.path.exists();
            let file = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&self.path)?;
            if created {
                // The new name must survive a crash as well as the lines written to it.
                if let Some(dir) = self.path.parent() {
                    File::open(dir)?.sync_all()?;
                }
            }
            self.file = Some(file);
        }
        self.file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("journal not open"))
    }
}

/// Reads the journal back (tests, and people with `jq`); unreadable lines are skipped.
pub fn read(data_dir: &Path) -> std::io::Result<Vec<Entry>> {
    let text = fs::read_to_string(data_dir.join(FILE_NAME))?;
    Ok(parse(&text))
}

/// Reads the rotated journal, then the current one, oldest line first; missing files are
/// empty, unreadable lines are skipped (a torn last line after a power cut).
pub fn read_all(data_dir: &Path) -> std::io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let current = data_dir.join(FILE_NAME);
    let mut rotated = current.clone().into_os_string();
    rotated.push(".1");
    for path in [PathBuf::from(rotated), current] {
        match fs::read_to_string(&path) {
            Ok(text) => entries.extend(parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(entries)
}

fn parse(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use cordon_protocol::{
        action::{Action, ActionRequest},
        message::TaskErrorCode,
    };

    use super::*;

    fn verified() -> VerifiedAction {
        VerifiedAction {
            request: ActionRequest {
                action_id: uuid::Uuid::from_bytes([7; 16]),
                agent_id: "agent-1".into(),
                issued_at_ms: 1,
                expires_at_ms: 2,
                nonce: [0; 16],
                action: Action::Quarantine {
                    path: "/tmp/evil".into(),
                },
            },
            signers: vec!["aaaa".into(), "bbbb".into()],
        }
    }

    #[test]
    fn journal_records_before_and_after_each_action() {
        let tmp = tempfile::tempdir().unwrap();
        let mut journal = Journal::new(tmp.path());
        let action = verified();
        journal.started("t1", &action, "d1", 10).unwrap();
        let outcome = Outcome {
            before: serde_json::json!({"exists": true}),
            done: "moved to vault".into(),
            after: serde_json::json!({"exists": false}),
        };
        let receipt = Receipt {
            action_id: action.request.action_id.to_string(),
            agent_id: "agent-1".into(),
            at_ms: 11,
            before: "{}".into(),
            done: "moved to vault".into(),
            after: "{}".into(),
            agent_public_key: vec![1; 32],
            signature: vec![2; 64],
        };
        journal
            .ended("t1", &action, &Ok(outcome), Some(&receipt), 11)
            .unwrap();
        journal.started("t2", &action, "d2", 12).unwrap();
        let error = TaskError {
            code: TaskErrorCode::PolicyDenied,
            message: "protected path".into(),
        };
        journal
            .ended("t2", &action, &Err(error.clone()), None, 13)
            .unwrap();
        drop(journal);

        // Reopened (agent restart): appends, never truncates.
        let mut journal = Journal::new(tmp.path());
        journal.started("t3", &action, "d3", 14).unwrap();

        let entries = read(tmp.path()).unwrap();
        let phases: Vec<_> = entries
            .iter()
            .map(|e| (e.task_id.as_str(), e.phase))
            .collect();
        assert_eq!(
            phases,
            [
                ("t1", Phase::Started),
                ("t1", Phase::Finished),
                ("t2", Phase::Started),
                ("t2", Phase::Failed),
                ("t3", Phase::Started)
            ]
        );
        let start = &entries[0];
        assert_eq!(start.kind, "quarantine");
        assert_eq!(start.action_id, action.request.action_id.to_string());
        assert_eq!(start.signers, action.signers);
        assert_eq!(
            start.action.as_ref().unwrap()["Quarantine"]["path"],
            "/tmp/evil"
        );
        assert_eq!(
            entries[1].outcome.as_ref().unwrap()["done"],
            "moved to vault"
        );
        assert_eq!(start.envelope_sha256.as_deref(), Some("d1"));
        // The receipt is kept whole: the same bytes, the same signature.
        let kept = entries[1].receipt.as_ref().unwrap().to_receipt().unwrap();
        assert_eq!(kept, receipt);
        assert_eq!(entries[3].error, Some(error));
        assert_eq!(read_all(tmp.path()).unwrap(), entries);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(journal.path()).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}
