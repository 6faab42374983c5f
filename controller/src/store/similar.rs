//! The reads similar-incident lookup is made of: what an incident holds that can be shared
//! (counted observables, hosts, alert rules), how many incidents hold each, and which other
//! incidents hold them. Each is one indexed query over a list of keys, so a lookup costs a few
//! round trips whatever the size of the store.

use std::collections::HashMap;

use cordon_api::observables::ObservableType;
use sqlx::Row;

use super::{db_err, parse_stored, Store, StoreError};

/// Most keys bound in one `IN (…)` list.
const KEYS_PER_QUERY: usize = 500;

/// An observable of the incident looked from, that counts for similarity.
#[derive(Debug, Clone)]
pub struct CountedObservable {
    pub key: String,
    pub kind: ObservableType,
    pub value: String,
}

/// `$first, $first+1, …` for `n` parameters.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// How many incidents there are.
    pub async fn incident_count(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT COUNT(*) FROM incidents")
            .fetch_one(self.pool())
            .await
            .map_err(db_err("count incidents"))
    }

    /// The incident's observables that count for similarity: not benign, not ignored.
    pub async fn counted_observables(
        &self,
        incident_id: &str,
    ) -> Result<Vec<CountedObservable>, StoreError> {
        let rows = sqlx::query(
            "SELECT value_key, kind, value FROM observables WHERE incident_id = $1 \
             AND verdict <> 'benign' AND ignored = 0 ORDER BY added_at, id",
        )
        .bind(incident_id)
        .fetch_all(self.pool())
        .await
        .map_err(db_err("read counted observables"))?;
        rows.iter()
            .map(|row| {
                let get = || db_err("read counted observable");
                let kind: String = row.try_get("kind").map_err(get())?;
                Ok(CountedObservable {
                    key: row.try_get("value_key").map_err(get())?,
                    kind: parse_stored("observable type", &kind)?,
                    value: row.try_get("value").map_err(get())?,
                })
            })
            .collect()
    }

    /// The distinct alert rules (`source:rule`) of the incident's alerts.
    pub async fn incident_rules(&self, incident_id: &str) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT DISTINCT rule FROM alerts WHERE incident_id = $1 AND rule IS NOT NULL \
             ORDER BY rule",
        )
        .bind(incident_id)
        .fetch_all(self.pool())
        .await
        .map_err(db_err("read incident rules"))
    }

    /// For each of `keys`, how many incidents hold it. `what` picks the table: observables
    /// (by value key), hosts (by agent id) or alerts (by rule).
    pub async fn incidents_holding(
        &self,
        what: Shared,
        keys: &[String],
    ) -> Result<HashMap<String, i64>, StoreError> {
        let mut out = HashMap::new();
        for chunk in keys.chunks(KEYS_PER_QUERY) {
            let (table, column) = what.table();
            let sql = format!(
                "SELECT {column} AS k, COUNT(DISTINCT incident_id) AS n FROM {table} \
                 WHERE {column} IN ({}) GROUP BY {column}",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for key in chunk {
                query = query.bind(key);
            }
            for row in query
                .fetch_all(self.pool())
                .await
                .map_err(db_err("count incidents holding"))?
            {
                let get = || db_err("read incidents holding");
                out.insert(
                    row.try_get::<String, _>("k").map_err(get())?,
                    row.try_get::<i64, _>("n").map_err(get())?,
                );
            }
        }
        Ok(out)
    }

    /// The other incidents (not `except`) holding each of `keys`: (incident id, key) pairs.
    /// Observables marked benign or ignored there do not count.
    pub async fn incidents_sharing(
        &self,
        what: Shared,
        keys: &[String],
        except: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut out = Vec::new();
        for chunk in keys.chunks(KEYS_PER_QUERY) {
            let (table, column) = what.table();
            let counted = match what {
                Shared::Observable => " AND verdict <> 'benign' AND ignored = 0",
                Shared::Host | Shared::Rule => "",
            };
            let sql = format!(
                "SELECT DISTINCT incident_id, {column} AS k FROM {table} \
                 WHERE {column} IN ({}) AND incident_id <> $1{counted}",
                placeholders(2, chunk.len())
            );
            let mut query = sqlx::query(&sql).bind(except);
            for key in chunk {
                query = query.bind(key);
            }
            for row in query
                .fetch_all(self.pool())
                .await
                .map_err(db_err("find incidents sharing"))?
            {
                let get = || db_err("read incidents sharing");
                out.push((
                    row.try_get("incident_id").map_err(get())?,
                    row.try_get("k").map_err(get())?,
                ));
            }
        }
        Ok(out)
    }
}

impl Store {
    /// The newest `limit` other incidents (not `except`) counting observable `key` (not benign,
    /// not ignored there): for a value held by many, so a lookup reads a bounded number of rows.
    pub async fn newest_sharing(
        &self,
        key: &str,
        except: &str,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT incident_id FROM observables WHERE value_key = $1 AND incident_id <> $2 \
             AND verdict <> 'benign' AND ignored = 0 ORDER BY added_at DESC LIMIT $3",
        )
        .bind(key)
        .bind(except)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(db_err("find newest incidents sharing"))
    }
}

/// What two incidents can share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shared {
    Observable,
    Host,
    Rule,
}

impl Shared {
    fn table(self) -> (&'static str, &'static str) {
        match self {
            Shared::Observable => ("observables", "value_key"),
            Shared::Host => ("incident_hosts", "agent_id"),
            Shared::Rule => ("alerts", "rule"),
        }
    }
}
