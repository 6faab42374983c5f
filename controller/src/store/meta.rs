//! A small key/value table for controller-wide values such as the CRL number.

use super::{db_err, Store, StoreError};

impl Store {
    /// The value stored under `key`, if any.
    pub async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err("read meta value"))
    }

    /// Stores `value` under `key`, replacing any earlier value.
    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(db_err("write meta value"))?;
        Ok(())
    }

    /// Atomically increments the integer counter stored under `key` (starting from 0 when
    /// absent) and returns the new value, e.g. for CRL numbers. Safe across concurrent callers
    /// and, on PostgreSQL, across controller replicas.
    pub async fn next_counter(&self, key: &str) -> Result<i64, StoreError> {
        // A single upsert is atomic on both backends; the value column is TEXT, hence the casts.
        let value: String = sqlx::query_scalar(
            "INSERT INTO meta (key, value) VALUES ($1, '1') \
             ON CONFLICT (key) DO UPDATE \
             SET value = CAST(CAST(meta.value AS BIGINT) + 1 AS TEXT) \
             RETURNING value",
        )
        .bind(key)
        .fetch_one(&self.pool)
        .await
        .map_err(db_err("increment counter"))?;
        value.parse().map_err(|_| StoreError::InvalidData {
            what: "meta counter",
            detail: format!("value {value:?} under key {key:?} is not an integer"),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::store::test_support::backend_tests;
    use crate::store::Store;

    async fn meta_values_upsert(store: &Store) {
        assert_eq!(store.get_meta("ca.fingerprint").await.unwrap(), None);
        store.set_meta("ca.fingerprint", "abc").await.unwrap();
        store.set_meta("ca.fingerprint", "def").await.unwrap();
        assert_eq!(
            store.get_meta("ca.fingerprint").await.unwrap().as_deref(),
            Some("def")
        );
    }

    async fn counters_increase_by_one_without_gaps(store: &Store) {
        assert_eq!(store.next_counter("crl.number").await.unwrap(), 1);
        assert_eq!(store.next_counter("crl.number").await.unwrap(), 2);
        assert_eq!(store.next_counter("other").await.unwrap(), 1);
        assert_eq!(
            store.get_meta("crl.number").await.unwrap().as_deref(),
            Some("2")
        );

        // Concurrent callers each get their own number.
        let (a, b, c, d) = tokio::join!(
            store.next_counter("crl.number"),
            store.next_counter("crl.number"),
            store.next_counter("crl.number"),
            store.next_counter("crl.number"),
        );
        let mut got = [a.unwrap(), b.unwrap(), c.unwrap(), d.unwrap()];
        got.sort_unstable();
        assert_eq!(got, [3, 4, 5, 6]);

        // Continuing from a value set explicitly (e.g. restored from a backup).
        store.set_meta("crl.number", "41").await.unwrap();
        assert_eq!(store.next_counter("crl.number").await.unwrap(), 42);
    }

    backend_tests!(meta_values_upsert, counters_increase_by_one_without_gaps);
}
