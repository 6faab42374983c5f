//! Evidence records and agents' signing keys.
//!
//! The bytes of evidence live on disk, content-addressed (see [`crate::evidence`]); the store
//! keeps one record per collection — which task, which agent, what path — with the manifest the
//! agent signed, so every later read can re-verify. An agent's signing key is pinned the first
//! time it is seen and never silently replaced.

use serde::{Deserialize, Serialize};
use sqlx::{any::AnyRow, Row};

use super::{db_err, touched, Store, StoreError};

/// One collection of evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceRecord {
    pub task_id: String,
    pub sha256: String,
    pub size: i64,
    /// "file" or "snapshot".
    pub kind: String,
    pub agent_id: String,
    pub source_path: Option<String>,
    /// The manifest's JSON text exactly as signed.
    pub manifest: String,
    /// Hex of the signer's Ed25519 public key and of the signature.
    pub agent_public_key: String,
    pub signature: String,
    pub received_at_ms: i64,
}

/// What pinning an agent's signing key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPin {
    /// First sight: the key is now pinned.
    Pinned,
    /// The key matches the pinned one.
    Matches,
    /// Another key is pinned (hex).
    Mismatch { pinned: String },
}

const COLUMNS: &str = "task_id, sha256, size, kind, agent_id, source_path, manifest, \
    agent_public_key, signature, received_at";

impl Store {
    pub async fn insert_evidence(&self, record: &EvidenceRecord) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO evidence ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(&record.task_id)
        .bind(&record.sha256)
        .bind(record.size)
        .bind(&record.kind)
        .bind(&record.agent_id)
        .bind(&record.source_path)
        .bind(&record.manifest)
        .bind(&record.agent_public_key)
        .bind(&record.signature)
        .bind(record.received_at_ms)
        .execute(self.pool())
        .await
        .map_err(db_err("insert evidence"))?;
        Ok(())
    }

    /// Every collection of the bytes with this hash, oldest first.
    pub async fn evidence_by_sha256(
        &self,
        sha256: &str,
    ) -> Result<Vec<EvidenceRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM evidence WHERE sha256 = $1 ORDER BY received_at, task_id"
        ))
        .bind(sha256)
        .fetch_all(self.pool())
        .await
        .map_err(db_err("read evidence"))?;
        rows.iter().map(evidence_from_row).collect()
    }

    /// The evidence a task produced, if any.
    pub async fn evidence_for_task(
        &self,
        task_id: &str,
    ) -> Result<Option<EvidenceRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM evidence WHERE task_id = $1"
        ))
        .bind(task_id)
        .fetch_optional(self.pool())
        .await
        .map_err(db_err("read evidence"))?;
        row.as_ref().map(evidence_from_row).transpose()
    }

    /// Newest first, optionally for one agent.
    pub async fn list_evidence(
        &self,
        agent_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<EvidenceRecord>, StoreError> {
        let by_agent = format!(
            "SELECT {COLUMNS} FROM evidence WHERE agent_id = $1 \
             ORDER BY received_at DESC, task_id LIMIT $2"
        );
        let all =
            format!("SELECT {COLUMNS} FROM evidence ORDER BY received_at DESC, task_id LIMIT $1");
        let rows = match agent_id {
            Some(agent) => sqlx::query(&by_agent).bind(agent).bind(limit),
            None => sqlx::query(&all).bind(limit),
        }
        .fetch_all(self.pool())
        .await
        .map_err(db_err("list evidence"))?;
        rows.iter().map(evidence_from_row).collect()
    }

    /// The agent's pinned signing key (hex), if one is pinned.
    pub async fn agent_signing_key(&self, agent_id: &str) -> Result<Option<String>, StoreError> {
        let key: Option<Option<String>> =
            sqlx::query_scalar("SELECT signing_key FROM agents WHERE id = $1")
                .bind(agent_id)
                .fetch_optional(self.pool())
                .await
                .map_err(db_err("read agent signing key"))?;
        Ok(key.flatten())
    }

    /// Pins `key_hex` as the agent's signing key if none is pinned, and says how it compares.
    pub async fn pin_agent_signing_key(
        &self,
        agent_id: &str,
        key_hex: &str,
    ) -> Result<KeyPin, StoreError> {
        let result =
            sqlx::query("UPDATE agents SET signing_key = $2 WHERE id = $1 AND signing_key IS NULL")
                .bind(agent_id)
                .bind(key_hex)
                .execute(self.pool())
                .await
                .map_err(db_err("pin agent signing key"))?;
        if touched(&result) {
            return Ok(KeyPin::Pinned);
        }
        match self.agent_signing_key(agent_id).await? {
            Some(pinned) if pinned == key_hex => Ok(KeyPin::Matches),
            Some(pinned) => Ok(KeyPin::Mismatch { pinned }),
            None => Err(StoreError::InvalidData {
                what: "agent",
                detail: format!("no agent {agent_id}"),
            }),
        }
    }
}

fn evidence_from_row(row: &AnyRow) -> Result<EvidenceRecord, StoreError> {
    let get = |e: sqlx::Error| StoreError::Database {
        op: "decode evidence",
        source: e,
    };
    Ok(EvidenceRecord {
        task_id: row.try_get("task_id").map_err(get)?,
        sha256: row.try_get("sha256").map_err(get)?,
        size: row.try_get("size").map_err(get)?,
        kind: row.try_get("kind").map_err(get)?,
        agent_id: row.try_get("agent_id").map_err(get)?,
        source_path: row.try_get("source_path").map_err(get)?,
        manifest: row.try_get("manifest").map_err(get)?,
        agent_public_key: row.try_get("agent_public_key").map_err(get)?,
        signature: row.try_get("signature").map_err(get)?,
        received_at_ms: row.try_get("received_at").map_err(get)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{backend_tests, enrolled_agent};

    const NOW: i64 = 1_700_000_000_000;

    fn record(task_id: &str, sha: &str, at: i64) -> EvidenceRecord {
        EvidenceRecord {
            task_id: task_id.into(),
            sha256: sha.into(),
            size: 3,
            kind: "file".into(),
            agent_id: "a1".into(),
            source_path: Some("/etc/hosts".into()),
            manifest: "{}".into(),
            agent_public_key: "aa".into(),
            signature: "bb".into(),
            received_at_ms: at,
        }
    }

    async fn records_are_found_by_hash_task_and_agent(store: &Store) {
        enrolled_agent(store, "a1", NOW).await;
        store
            .insert_evidence(&record("t1", "s1", NOW))
            .await
            .unwrap();
        store
            .insert_evidence(&record("t2", "s1", NOW + 1))
            .await
            .unwrap();
        store
            .insert_evidence(&record("t3", "s2", NOW + 2))
            .await
            .unwrap();
        let same = store.evidence_by_sha256("s1").await.unwrap();
        assert_eq!(
            same.iter().map(|r| r.task_id.as_str()).collect::<Vec<_>>(),
            ["t1", "t2"]
        );
        assert_eq!(
            store.evidence_for_task("t3").await.unwrap(),
            Some(record("t3", "s2", NOW + 2))
        );
        assert_eq!(store.evidence_for_task("nope").await.unwrap(), None);
        let newest = store.list_evidence(Some("a1"), 2).await.unwrap();
        assert_eq!(
            newest
                .iter()
                .map(|r| r.task_id.as_str())
                .collect::<Vec<_>>(),
            ["t3", "t2"]
        );
        assert!(store
            .list_evidence(Some("a2"), 10)
            .await
            .unwrap()
            .is_empty());
        assert!(
            store
                .insert_evidence(&record("t1", "s9", NOW))
                .await
                .is_err(),
            "one record per task"
        );
    }

    async fn a_signing_key_is_pinned_once(store: &Store) {
        enrolled_agent(store, "a1", NOW).await;
        assert_eq!(store.agent_signing_key("a1").await.unwrap(), None);
        assert_eq!(
            store.pin_agent_signing_key("a1", "k1").await.unwrap(),
            KeyPin::Pinned
        );
        assert_eq!(
            store.pin_agent_signing_key("a1", "k1").await.unwrap(),
            KeyPin::Matches
        );
        assert_eq!(
            store.pin_agent_signing_key("a1", "k2").await.unwrap(),
            KeyPin::Mismatch {
                pinned: "k1".into()
            }
        );
        assert_eq!(
            store.agent_signing_key("a1").await.unwrap().as_deref(),
            Some("k1")
        );
        assert!(store.pin_agent_signing_key("ghost", "k1").await.is_err());
    }

    backend_tests!(
        records_are_found_by_hash_task_and_agent,
        a_signing_key_is_pinned_once
    );
}
