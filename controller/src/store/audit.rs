//! The audit log: append-only and hash-chained, so an edit made behind the controller's back
//! (a changed, deleted or reordered row) is caught by walking the chain.
//!
//! Each entry's `hash` is SHA-256 over its `prev_hash` and its own fields (see [`entry_hash`] for
//! the exact bytes); `prev_hash` is the hash of the entry before it, or 64 zeros for the first.
//! `seq` is the previous entry's plus one, assigned while holding the log's write lock (SQLite's
//! `BEGIN IMMEDIATE`, a PostgreSQL advisory lock), so two appenders, even on two controller
//! replicas, can never both extend the same entry. Nothing in the controller updates or deletes
//! a row.
//!
//! The chain proves that the entries it holds are the ones written, in that order, with none
//! missing in between. It cannot by itself show that entries were cut off the end: for that, keep
//! the head (`seq` and `hash`, as `verify` reports it) somewhere else and compare later.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{any::AnyRow, Row};

use super::{db_err, Backend, Store, StoreError};
pub use cordon_api::audit::{AuditEntry, AuditHead, BreakReason, BrokenLink};

/// The `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Key of the PostgreSQL advisory lock held while appending ("AUDIT" in ASCII); distinct from
/// the migrations' key.
const POSTGRES_AUDIT_LOCK_KEY: i64 = 0x41_5544_4954;

/// Names the encoding inside every hash, so a future encoding can never collide with this one.
const ENCODING_TAG: &str = "cordon-audit/1";

/// Entries read per page while verifying; the walk never holds more than this in memory.
const VERIFY_PAGE: i64 = 1000;

/// Most entries one listing returns.
pub const MAX_LIST: i64 = 1000;

/// An entry about to be appended.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    /// When it happened, ms since the Unix epoch.
    pub at_ms: i64,
    /// Who: an API token's name, `unauthenticated`, or the controller itself.
    pub actor: String,
    /// What, e.g. `POST /api/v1/tasks` or `enrol`.
    pub action: String,
    /// What it was done to (an agent id, a task id), or empty.
    pub target: String,
    /// How it ended: an HTTP status, `attempt`, `refused`, `ok`.
    pub outcome: String,
    /// Anything else worth keeping, as JSON.
    pub detail: serde_json::Value,
}

/// The result of walking the whole chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditVerification {
    /// How many entries were checked and found intact (all of them when nothing is broken).
    pub entries: i64,
    /// The first broken link, if any.
    pub first_broken: Option<BrokenLink>,
    /// The last intact entry checked.
    pub head: Option<AuditHead>,
}

impl AuditVerification {
    /// Whether the chain is intact.
    pub fn ok(&self) -> bool {
        self.first_broken.is_none()
    }
}

/// The hash of an entry, as lowercase hex: SHA-256 over, in order, the tag `cordon-audit/1`,
/// `prev_hash` (its hex text), `actor`, `action`, `target`, `outcome` and `detail` (the stored
/// JSON text), each as an 8-byte big-endian length then its UTF-8 bytes, with `seq` and `at_ms`
/// as 8-byte big-endian two's complement after `prev_hash`. Every field carries its length, so
/// no two different entries encode to the same bytes.
#[allow(clippy::too_many_arguments)]
pub fn entry_hash(
    prev_hash: &str,
    seq: i64,
    at_ms: i64,
    actor: &str,
    action: &str,
    target: &str,
    outcome: &str,
    detail: &str,
) -> String {
    fn field(hasher: &mut Sha256, bytes: &[u8]) {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    }
    let mut hasher = Sha256::new();
    field(&mut hasher, ENCODING_TAG.as_bytes());
    field(&mut hasher, prev_hash.as_bytes());
    hasher.update(seq.to_be_bytes());
    hasher.update(at_ms.to_be_bytes());
    for text in [actor, action, target, outcome, detail] {
        field(&mut hasher, text.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// A row as stored, detail still as text: what the hash covers.
struct StoredRow {
    seq: i64,
    at_ms: i64,
    actor: String,
    action: String,
    target: String,
    outcome: String,
    detail: String,
    prev_hash: String,
    hash: String,
}

impl StoredRow {
    fn from_row(row: &AnyRow, op: &'static str) -> Result<Self, StoreError> {
        let get = |name: &str| row.try_get::<String, _>(name).map_err(db_err(op));
        Ok(Self {
            seq: row.try_get("seq").map_err(db_err(op))?,
            at_ms: row.try_get("at_ms").map_err(db_err(op))?,
            actor: get("actor")?,
            action: get("action")?,
            target: get("target")?,
            outcome: get("outcome")?,
            detail: get("detail")?,
            prev_hash: get("prev_hash")?,
            hash: get("hash")?,
        })
    }

    fn computed_hash(&self) -> String {
        entry_hash(
            &self.prev_hash,
            self.seq,
            self.at_ms,
            &self.actor,
            &self.action,
            &self.target,
            &self.outcome,
            &self.detail,
        )
    }

    fn into_entry(self) -> AuditEntry {
        let detail =
            serde_json::from_str(&self.detail).unwrap_or(serde_json::Value::String(self.detail));
        AuditEntry {
            seq: self.seq,
            at_ms: self.at_ms,
            actor: self.actor,
            action: self.action,
            target: self.target,
            outcome: self.outcome,
            detail,
            prev_hash: self.prev_hash,
            hash: self.hash,
        }
    }
}

const SELECT_COLUMNS: &str =
    "SELECT seq, at_ms, actor, action, target, outcome, detail, prev_hash, hash FROM audit_log";

impl Store {
    /// Appends `entry` to the chain and returns it as stored (with its seq and hashes).
    pub async fn append_audit(&self, entry: &NewAuditEntry) -> Result<AuditEntry, StoreError> {
        let mut tx = self.begin_write("begin audit append").await?;
        let stored = self.append_audit_on(&mut tx, entry).await?;
        tx.commit().await.map_err(db_err("commit audit entry"))?;
        Ok(stored)
    }

    /// Appends `entry` inside `tx`, a transaction from [`Store::begin_write`], so it commits
    /// (or not) together with the change it records. Call it before the transaction's other
    /// writes: on PostgreSQL it takes the log's lock, and every writer takes that lock first.
    pub(crate) async fn append_audit_on(
        &self,
        tx: &mut sqlx::AnyConnection,
        entry: &NewAuditEntry,
    ) -> Result<AuditEntry, StoreError> {
        let detail = serde_json::to_string(&entry.detail).map_err(|source| StoreError::Json {
            what: "audit detail",
            source,
        })?;
        if self.backend == Backend::Postgres {
            // Held until commit: appenders on every replica queue here, each then reads the
            // head its predecessor committed. (Selected FROM the function: the Any driver
            // cannot carry `void`.)
            sqlx::query("SELECT 1 FROM pg_advisory_xact_lock($1)")
                .bind(POSTGRES_AUDIT_LOCK_KEY)
                .execute(&mut *tx)
                .await
                .map_err(db_err("lock audit log"))?;
        }
        let head = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err("read audit head"))?;
        let (seq, prev_hash) = match head {
            Some(row) => {
                let seq: i64 = row.try_get("seq").map_err(db_err("read audit head"))?;
                let hash: String = row.try_get("hash").map_err(db_err("read audit head"))?;
                (seq + 1, hash)
            }
            None => (1, GENESIS_HASH.to_owned()),
        };
        let hash = entry_hash(
            &prev_hash,
            seq,
            entry.at_ms,
            &entry.actor,
            &entry.action,
            &entry.target,
            &entry.outcome,
            &detail,
        );
        sqlx::query(
            "INSERT INTO audit_log \
             (seq, at_ms, actor, action, target, outcome, detail, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(seq)
        .bind(entry.at_ms)
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.target)
        .bind(&entry.outcome)
        .bind(&detail)
        .bind(&prev_hash)
        .bind(&hash)
        .execute(&mut *tx)
        .await
        .map_err(db_err("insert audit entry"))?;
        Ok(AuditEntry {
            seq,
            at_ms: entry.at_ms,
            actor: entry.actor.clone(),
            action: entry.action.clone(),
            target: entry.target.clone(),
            outcome: entry.outcome.clone(),
            detail: entry.detail.clone(),
            prev_hash,
            hash,
        })
    }

    /// Up to `limit` entries (at most [`MAX_LIST`]) with seq above `after`, oldest first.
    pub async fn list_audit(&self, after: i64, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = self.audit_page(after, limit.clamp(1, MAX_LIST)).await?;
        Ok(rows.into_iter().map(StoredRow::into_entry).collect())
    }

    /// Walks the whole chain in seq order, a page at a time, and stops at the first broken
    /// link.
    pub async fn verify_audit(&self) -> Result<AuditVerification, StoreError> {
        let mut checked = 0_i64;
        let mut head: Option<AuditHead> = None;
        let mut after = 0_i64;
        loop {
            let page = self.audit_page(after, VERIFY_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for row in page {
                let expected_seq = head.as_ref().map_or(1, |h| h.seq + 1);
                let expected_prev = head.as_ref().map_or(GENESIS_HASH, |h| h.hash.as_str());
                let broken = if row.seq != expected_seq {
                    Some(BrokenLink {
                        seq: expected_seq,
                        reason: BreakReason::Gap,
                        detail: format!(
                            "entry {expected_seq} is missing; the next entry is {}",
                            row.seq
                        ),
                    })
                } else if row.prev_hash != expected_prev {
                    Some(BrokenLink {
                        seq: row.seq,
                        reason: BreakReason::PrevHashMismatch,
                        detail: format!(
                            "prev_hash is {} but the entry before it hashes to {expected_prev}",
                            row.prev_hash
                        ),
                    })
                } else {
                    let computed = row.computed_hash();
                    (computed != row.hash).then(|| BrokenLink {
                        seq: row.seq,
                        reason: BreakReason::HashMismatch,
                        detail: format!(
                            "stored hash is {} but the entry's fields hash to {computed}",
                            row.hash
                        ),
                    })
                };
                if let Some(broken) = broken {
                    return Ok(AuditVerification {
                        entries: checked,
                        first_broken: Some(broken),
                        head,
                    });
                }
                checked += 1;
                head = Some(AuditHead {
                    seq: row.seq,
                    hash: row.hash,
                });
            }
        }
        Ok(AuditVerification {
            entries: checked,
            first_broken: None,
            head,
        })
    }

    async fn audit_page(&self, after: i64, limit: i64) -> Result<Vec<StoredRow>, StoreError> {
        const OP: &str = "read audit log";
        let rows = sqlx::query(&format!(
            "{SELECT_COLUMNS} WHERE seq > $1 ORDER BY seq LIMIT $2"
        ))
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err(OP))?;
        rows.iter()
            .map(|row| StoredRow::from_row(row, OP))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::backend_tests;

    const NOW: i64 = 1_700_000_000_000;

    fn entry(n: i64) -> NewAuditEntry {
        NewAuditEntry {
            at_ms: NOW + n,
            actor: "alice".into(),
            action: "POST /api/v1/tasks".into(),
            target: format!("agent-{n}"),
            outcome: "201".into(),
            detail: serde_json::json!({ "n": n }),
        }
    }

    async fn append(store: &Store, count: i64) {
        for n in 1..=count {
            store.append_audit(&entry(n)).await.unwrap();
        }
    }

    async fn execute(store: &Store, sql: &str) {
        sqlx::query(sql).execute(store.pool()).await.unwrap();
    }

    /// The encoding is part of the on-disk format: every existing chain depends on it.
    #[test]
    fn the_hash_encoding_is_pinned() {
        let hash = entry_hash(GENESIS_HASH, 1, 2, "a", "b", "c", "d", "{}");
        assert_eq!(hash.len(), 64);
        assert_eq!(
            hash,
            entry_hash(GENESIS_HASH, 1, 2, "a", "b", "c", "d", "{}"),
            "deterministic"
        );
        // Moving a byte from one field to the next changes the hash: fields carry lengths.
        assert_ne!(
            hash,
            entry_hash(GENESIS_HASH, 1, 2, "ab", "", "c", "d", "{}")
        );
        assert_ne!(
            hash,
            entry_hash(GENESIS_HASH, 2, 1, "a", "b", "c", "d", "{}")
        );
        let mut expected = Sha256::new();
        for part in [ENCODING_TAG, GENESIS_HASH] {
            expected.update((part.len() as u64).to_be_bytes());
            expected.update(part.as_bytes());
        }
        expected.update(1_i64.to_be_bytes());
        expected.update(2_i64.to_be_bytes());
        for part in ["a", "b", "c", "d", "{}"] {
            expected.update((part.len() as u64).to_be_bytes());
            expected.update(part.as_bytes());
        }
        assert_eq!(hash, hex::encode(expected.finalize()));
    }

    async fn entries_link_into_a_chain(store: &Store) {
        let empty = store.verify_audit().await.unwrap();
        assert!(empty.ok());
        assert_eq!((empty.entries, empty.head), (0, None));

        let first = store.append_audit(&entry(1)).await.unwrap();
        assert_eq!(first.seq, 1);
        assert_eq!(first.prev_hash, GENESIS_HASH);
        let second = store.append_audit(&entry(2)).await.unwrap();
        assert_eq!(second.seq, 2);
        assert_eq!(second.prev_hash, first.hash);
        assert_ne!(second.hash, first.hash);

        let listed = store.list_audit(0, 10).await.unwrap();
        assert_eq!(listed, vec![first.clone(), second.clone()]);
        assert_eq!(store.list_audit(1, 10).await.unwrap(), vec![second.clone()]);
        assert_eq!(store.list_audit(0, 1).await.unwrap(), vec![first]);

        let verified = store.verify_audit().await.unwrap();
        assert_eq!(
            verified,
            AuditVerification {
                entries: 2,
                first_broken: None,
                head: Some(AuditHead {
                    seq: 2,
                    hash: second.hash
                }),
            }
        );
    }

    async fn verify_walks_more_than_one_page(store: &Store) {
        let total = VERIFY_PAGE + 5;
        append(store, total).await;
        let verified = store.verify_audit().await.unwrap();
        assert!(verified.ok(), "{verified:?}");
        assert_eq!(verified.entries, total);
        // A break on the second page is still found.
        execute(
            store,
            &format!(
                "UPDATE audit_log SET actor = 'mallory' WHERE seq = {}",
                VERIFY_PAGE + 2
            ),
        )
        .await;
        let broken = store.verify_audit().await.unwrap().first_broken.unwrap();
        assert_eq!(broken.seq, VERIFY_PAGE + 2);
    }

    async fn concurrent_appends_do_not_fork(store: &Store) {
        let appends = (1..=16).map(|n| {
            let store = store.clone();
            async move { store.append_audit(&entry(n)).await }
        });
        let mut joined = tokio::task::JoinSet::new();
        for append in appends {
            joined.spawn(append);
        }
        let mut seqs = Vec::new();
        while let Some(result) = joined.join_next().await {
            seqs.push(result.unwrap().unwrap().seq);
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=16).collect::<Vec<_>>());
        let verified = store.verify_audit().await.unwrap();
        assert!(verified.ok(), "{verified:?}");
        assert_eq!(verified.entries, 16);
    }

    async fn an_edited_detail_is_caught(store: &Store) {
        append(store, 5).await;
        execute(
            store,
            "UPDATE audit_log SET detail = '{\"n\":99}' WHERE seq = 3",
        )
        .await;
        let verified = store.verify_audit().await.unwrap();
        let broken = verified.first_broken.unwrap();
        assert_eq!((broken.seq, broken.reason), (3, BreakReason::HashMismatch));
        assert_eq!(verified.entries, 2);
        assert_eq!(verified.head.map(|h| h.seq), Some(2));
    }

    async fn an_edit_with_its_hash_recomputed_is_caught_at_the_next_entry(store: &Store) {
        append(store, 4).await;
        let row = store.list_audit(1, 1).await.unwrap().remove(0);
        let forged = entry_hash(
            &row.prev_hash,
            row.seq,
            row.at_ms,
            "mallory",
            &row.action,
            &row.target,
            &row.outcome,
            &row.detail.to_string(),
        );
        sqlx::query("UPDATE audit_log SET actor = 'mallory', hash = $1 WHERE seq = 2")
            .bind(&forged)
            .execute(store.pool())
            .await
            .unwrap();
        let broken = store.verify_audit().await.unwrap().first_broken.unwrap();
        assert_eq!(
            (broken.seq, broken.reason),
            (3, BreakReason::PrevHashMismatch)
        );
    }

    async fn a_deleted_entry_is_caught(store: &Store) {
        append(store, 5).await;
        execute(store, "DELETE FROM audit_log WHERE seq = 4").await;
        let broken = store.verify_audit().await.unwrap().first_broken.unwrap();
        assert_eq!((broken.seq, broken.reason), (4, BreakReason::Gap));
        assert!(
            broken.detail.contains("next entry is 5"),
            "{}",
            broken.detail
        );

        // Deleting the first entry is a gap too.
        execute(store, "DELETE FROM audit_log WHERE seq = 1").await;
        let broken = store.verify_audit().await.unwrap().first_broken.unwrap();
        assert_eq!((broken.seq, broken.reason), (1, BreakReason::Gap));
    }

    async fn reordered_entries_are_caught(store: &Store) {
        append(store, 5).await;
        // Swap entries 2 and 3 (through a free seq: it is the primary key).
        execute(store, "UPDATE audit_log SET seq = 100 WHERE seq = 2").await;
        execute(store, "UPDATE audit_log SET seq = 2 WHERE seq = 3").await;
        execute(store, "UPDATE audit_log SET seq = 3 WHERE seq = 100").await;
        let broken = store.verify_audit().await.unwrap().first_broken.unwrap();
        assert_eq!(broken.seq, 2);
        assert_eq!(broken.reason, BreakReason::PrevHashMismatch);
    }

    async fn a_detail_that_is_no_longer_json_still_lists(store: &Store) {
        append(store, 1).await;
        execute(
            store,
            "UPDATE audit_log SET detail = 'not json' WHERE seq = 1",
        )
        .await;
        let listed = store.list_audit(0, 10).await.unwrap();
        assert_eq!(listed[0].detail, serde_json::json!("not json"));
        let broken = store.verify_audit().await.unwrap().first_broken.unwrap();
        assert_eq!((broken.seq, broken.reason), (1, BreakReason::HashMismatch));
    }

    backend_tests!(
        entries_link_into_a_chain,
        verify_walks_more_than_one_page,
        concurrent_appends_do_not_fork,
        an_edited_detail_is_caught,
        an_edit_with_its_hash_recomputed_is_caught_at_the_next_entry,
        a_deleted_entry_is_caught,
        reordered_entries_are_caught,
        a_detail_that_is_no_longer_json_still_lists,
    );
}
