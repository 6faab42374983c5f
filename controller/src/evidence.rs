//! Evidence: fetched files and snapshot bundles, stored content-addressed by SHA-256 under
//! `DATA_DIR/evidence/objects/ab/abcd…`, each collection recorded in the store with the manifest
//! its agent signed.
//!
//! Bytes arrive as chunks into `evidence/incoming/` (see [`crate::sessions::transfer`]) and are
//! moved into `objects/` only when the hash the agent announced matches the bytes received **and**
//! the agent's signed manifest verifies under its pinned key and names those bytes. Anything less
//! is deleted: nothing partial or unverified is ever stored as evidence. [`Controller::verify_evidence`]
//! re-checks all of it later, from the disk and the store alone.

use cordon_api::tasks::TaskErrorCode;
use std::{
    collections::HashMap,
    io,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
};

use cordon_protocol::evidence::{EvidenceKind, EvidenceManifest, SignedManifest};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::{
    now_ms,
    state::Controller,
    store::{EvidenceRecord, StoreError, TaskEnd},
};
pub use cordon_api::evidence::{Check, EvidenceView, Verification};

/// The evidence directory of a data dir.
#[derive(Debug, Clone)]
pub struct EvidenceDir {
    root: PathBuf,
}

impl EvidenceDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Creates the directories (0700) and removes transfers a previous run left half-done.
    pub fn prepare(&self) -> io::Result<()> {
        for dir in [self.objects(), self.incoming()] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)?;
        }
        for entry in std::fs::read_dir(self.incoming())? {
            let path = entry?.path();
            tracing::info!(path = %path.display(), "removing unfinished transfer");
            std::fs::remove_file(&path)?;
        }
        Ok(())
    }

    fn objects(&self) -> PathBuf {
        self.root.join("objects")
    }

    /// Where transfers in progress are written.
    pub fn incoming(&self) -> PathBuf {
        self.root.join("incoming")
    }

    /// Where the bytes with this hash live. `sha256` must be checked with [`is_sha256`] first.
    pub fn object_path(&self, sha256: &str) -> PathBuf {
        self.objects().join(&sha256[..2]).join(sha256)
    }

    /// Moves a verified transfer into place. If the same bytes are already stored, the new copy
    /// is dropped.
    async fn commit(&self, staged: &Path, sha256: &str) -> io::Result<PathBuf> {
        let target = self.object_path(sha256);
        if tokio::fs::try_exists(&target).await? {
            tokio::fs::remove_file(staged).await?;
            return Ok(target);
        }
        if let Some(parent) = target.parent() {
            let parent = parent.to_path_buf();
            tokio::task::spawn_blocking(move || {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)
            })
            .await
            .map_err(io::Error::other)??;
        }
        tokio::fs::rename(staged, &target).await?;
        Ok(target)
    }
}

/// Whether `s` is a lowercase hex SHA-256 (also what keeps it from naming any other path).
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A transfer whose bytes all arrived and match the hash the agent announced, waiting for the
/// agent's manifest. Dropping it deletes the file.
#[derive(Debug)]
pub struct Staged {
    path: Option<PathBuf>,
    pub total_len: u64,
    pub sha256: String,
}

impl Staged {
    pub(crate) fn new(path: PathBuf, total_len: u64, sha256: String) -> Self {
        Self {
            path: Some(path),
            total_len,
            sha256,
        }
    }

    fn take_path(&mut self) -> Option<PathBuf> {
        self.path.take()
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl From<&EvidenceRecord> for EvidenceView {
    fn from(r: &EvidenceRecord) -> Self {
        Self {
            sha256: r.sha256.clone(),
            size: r.size,
            kind: r.kind.clone(),
            agent_id: r.agent_id.clone(),
            task_id: r.task_id.clone(),
            source_path: r.source_path.clone(),
            received_at_ms: r.received_at_ms,
            manifest: serde_json::from_str(&r.manifest).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// Why accepting evidence failed: a task error code and a message.
type Refusal = (TaskErrorCode, String);

impl Controller {
    /// The agent finished an evidence task: check its manifest against the bytes received and
    /// its pinned key, then keep both, or neither. Returns how the task ends.
    pub async fn accept_evidence(
        &self,
        agent_id: &str,
        task_id: &str,
        signed: SignedManifest,
        staged: Option<Staged>,
    ) -> TaskEnd {
        match self.try_accept(agent_id, task_id, &signed, staged).await {
            Ok(view) => TaskEnd::Done {
                result: serde_json::to_string(&view).unwrap_or_else(|_| "{}".into()),
            },
            Err((code, message)) => {
                tracing::warn!(agent_id, task_id, %message, "evidence refused");
                TaskEnd::Failed { code, message }
            }
        }
    }

    async fn try_accept(
        &self,
        agent_id: &str,
        task_id: &str,
        signed: &SignedManifest,
        staged: Option<Staged>,
    ) -> Result<EvidenceView, Refusal> {
        let mut staged = staged.ok_or((
            TaskErrorCode::Integrity,
            "the agent reported evidence, but its bytes did not all arrive intact".to_string(),
        ))?;
        let pinned = self
            .pinned_key(agent_id)
            .await
            .map_err(|e| (TaskErrorCode::Internal, e))?;
        let manifest = signed.verify(Some(&pinned)).map_err(|e| {
            (
                TaskErrorCode::Integrity,
                format!("evidence manifest refused: {e}"),
            )
        })?;
        let mismatch = manifest_mismatch(&manifest, agent_id, task_id, &staged);
        if let Some(why) = mismatch {
            return Err((
                TaskErrorCode::Integrity,
                format!("evidence manifest refused: {why}"),
            ));
        }
        let path = staged.take_path().ok_or((
            TaskErrorCode::Internal,
            "transfer file already used".to_string(),
        ))?;
        self.evidence
            .commit(&path, &staged.sha256)
            .await
            .map_err(|e| {
                (
                    TaskErrorCode::Internal,
                    format!("cannot store evidence: {e}"),
                )
            })?;
        let record = EvidenceRecord {
            task_id: task_id.to_string(),
            sha256: staged.sha256.clone(),
            size: i64::try_from(staged.total_len).unwrap_or(i64::MAX),
            kind: kind_name(manifest.kind).to_string(),
            agent_id: agent_id.to_string(),
            source_path: manifest.source_path.clone(),
            manifest: signed.manifest.clone(),
            agent_public_key: hex::encode(&signed.agent_public_key),
            signature: hex::encode(&signed.signature),
            received_at_ms: now_ms(),
        };
        self.store.insert_evidence(&record).await.map_err(|e| {
            (
                TaskErrorCode::Internal,
                format!("cannot record evidence: {e}"),
            )
        })?;
        tracing::info!(agent_id, task_id, sha256 = %record.sha256, size = record.size, kind = %record.kind, "evidence stored");
        Ok(EvidenceView::from(&record))
    }

    async fn pinned_key(&self, agent_id: &str) -> Result<Vec<u8>, String> {
        let hex_key = self
            .store
            .agent_signing_key(agent_id)
            .await
            .map_err(|e| format!("reading the agent's signing key: {e}"))?
            .ok_or_else(|| format!("agent {agent_id} has no pinned signing key"))?;
        hex::decode(&hex_key).map_err(|e| format!("pinned signing key is not hex: {e}"))
    }

    /// Re-checks stored evidence: the bytes on disk against their hash, and every record's
    /// signature (under its agent's pinned key) and manifest against those bytes.
    pub async fn verify_evidence(&self, sha256: &str) -> Result<Option<Verification>, StoreError> {
        let records = self.store.evidence_by_sha256(sha256).await?;
        if records.is_empty() {
            return Ok(None);
        }
        let mut checks = Vec::new();
        let path = self.evidence.object_path(sha256);
        let bytes = hash_file(&path).await;
        match &bytes {
            Ok((len, actual)) => checks.push(Check {
                check: "content hash".into(),
                ok: actual == sha256,
                detail: format!("{} bytes on disk hash to {actual}", len),
            }),
            Err(e) => checks.push(Check {
                check: "content hash".into(),
                ok: false,
                detail: format!("{}: {e}", path.display()),
            }),
        }
        let mut pinned_keys: HashMap<String, Result<Vec<u8>, String>> = HashMap::new();
        for record in &records {
            let pinned = match pinned_keys.get(&record.agent_id) {
                Some(key) => key.clone(),
                None => {
                    let key = self.pinned_key(&record.agent_id).await;
                    pinned_keys.insert(record.agent_id.clone(), key.clone());
                    key
                }
            };
            checks.extend(check_record(record, pinned, bytes.as_ref().ok(), &path).await);
        }
        Ok(Some(Verification {
            sha256: sha256.to_string(),
            ok: checks.iter().all(|c| c.ok),
            checks,
        }))
    }
}

/// The checks for one record.
async fn check_record(
    record: &EvidenceRecord,
    pinned: Result<Vec<u8>, String>,
    content: Option<&(u64, String)>,
    path: &Path,
) -> Vec<Check> {
    let name = |what: &str| format!("task {}: {what}", record.task_id);
    let signed = SignedManifest {
        manifest: record.manifest.clone(),
        agent_public_key: hex::decode(&record.agent_public_key).unwrap_or_default(),
        signature: hex::decode(&record.signature).unwrap_or_default(),
    };
    let verified = match pinned {
        Ok(key) => signed.verify(Some(&key)).map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    let mut checks = vec![Check {
        check: name("signature"),
        ok: verified.is_ok(),
        detail: match &verified {
            Ok(_) => format!(
                "signed by agent {}'s pinned key {}",
                record.agent_id, record.agent_public_key
            ),
            Err(e) => e.clone(),
        },
    }];
    let Ok(manifest) = verified else {
        return checks;
    };
    let names_the_bytes = manifest.sha256 == record.sha256
        && i64::try_from(manifest.total_len).ok() == Some(record.size)
        && manifest.task_id == record.task_id
        && manifest.agent_id == record.agent_id
        && content.is_none_or(|(len, _)| *len == manifest.total_len);
    checks.push(Check {
        check: name("manifest"),
        ok: names_the_bytes,
        detail: format!(
            "manifest names {} bytes with SHA-256 {} from agent {} task {}",
            manifest.total_len, manifest.sha256, manifest.agent_id, manifest.task_id
        ),
    });
    if manifest.kind == EvidenceKind::Snapshot {
        checks.push(check_sections(&manifest, path, &name("sections")).await);
    }
    checks
}

/// Re-hashes each section of a stored snapshot bundle against the manifest.
async fn check_sections(manifest: &EvidenceManifest, path: &Path, check: &str) -> Check {
    let failed = |detail: String| Check {
        check: check.to_string(),
        ok: false,
        detail,
    };
    let bytes = match tokio::fs::read(path).await {
        Ok(bytes) => bytes,
        Err(e) => return failed(format!("{}: {e}", path.display())),
    };
    let bundle: HashMap<String, Box<serde_json::value::RawValue>> =
        match serde_json::from_slice(&bytes) {
            Ok(bundle) => bundle,
            Err(e) => return failed(format!("bundle is not a JSON object: {e}")),
        };
    let mut bad = Vec::new();
    for section in &manifest.sections {
        match bundle.get(&section.name) {
            Some(raw) => {
                let text = raw.get().as_bytes();
                let sha = hex::encode(Sha256::digest(text));
                if sha != section.sha256 || text.len() as u64 != section.len {
                    bad.push(format!("{} hashes to {sha}", section.name));
                }
            }
            None => bad.push(format!("{} is missing", section.name)),
        }
    }
    Check {
        check: check.to_string(),
        ok: bad.is_empty(),
        detail: if bad.is_empty() {
            format!("{} sections match", manifest.sections.len())
        } else {
            bad.join("; ")
        },
    }
}

/// Why a verified manifest does not describe what was received, if it does not.
fn manifest_mismatch(
    manifest: &EvidenceManifest,
    agent_id: &str,
    task_id: &str,
    staged: &Staged,
) -> Option<String> {
    if manifest.agent_id != agent_id {
        return Some(format!("it names agent {:?}", manifest.agent_id));
    }
    if manifest.task_id != task_id {
        return Some(format!("it names task {:?}", manifest.task_id));
    }
    if manifest.sha256 != staged.sha256 || manifest.total_len != staged.total_len {
        return Some(format!(
            "it names {} bytes with SHA-256 {}, but {} bytes with SHA-256 {} arrived",
            manifest.total_len, manifest.sha256, staged.total_len, staged.sha256
        ));
    }
    None
}

fn kind_name(kind: EvidenceKind) -> &'static str {
    match kind {
        EvidenceKind::File => "file",
        EvidenceKind::Snapshot => "snapshot",
    }
}

/// Length and SHA-256 of a file.
pub async fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok((total, hex::encode(hasher.finalize())));
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lowercase_hex_of_the_right_length_is_a_hash() {
        assert!(is_sha256(&"a".repeat(64)));
        assert!(!is_sha256(&"A".repeat(64)));
        assert!(!is_sha256(&"a".repeat(63)));
        assert!(!is_sha256("../../etc/passwd"));
    }

    #[tokio::test]
    async fn a_staged_transfer_is_deleted_unless_committed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = EvidenceDir::new(tmp.path());
        dir.prepare().unwrap();
        let part = dir.incoming().join("x.part");
        std::fs::write(&part, b"abc").unwrap();
        drop(Staged::new(part.clone(), 3, "h".into()));
        assert!(!part.exists());

        std::fs::write(&part, b"abc").unwrap();
        let sha = hex::encode(Sha256::digest(b"abc"));
        let mut staged = Staged::new(part.clone(), 3, sha.clone());
        let path = staged.take_path().unwrap();
        let stored = dir.commit(&path, &sha).await.unwrap();
        assert_eq!(std::fs::read(&stored).unwrap(), b"abc");
        assert_eq!(hash_file(&stored).await.unwrap(), (3, sha.clone()));

        // The same bytes again: one object, the new copy dropped.
        std::fs::write(&part, b"abc").unwrap();
        dir.commit(&part, &sha).await.unwrap();
        assert!(!part.exists());

        // Leftovers of a crash are removed on the next start.
        std::fs::write(dir.incoming().join("y.part"), b"partial").unwrap();
        dir.prepare().unwrap();
        assert_eq!(std::fs::read_dir(dir.incoming()).unwrap().count(), 0);
        assert!(stored.exists());
    }
}
