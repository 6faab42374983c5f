//! Turning what a person typed into ids: an id prefix (or a SHA-256 prefix for evidence), and
//! for agents a hostname in any case. The caller validates the prefix first
//! ([`cordon_api::lookup::id_prefix`]): only hex digits and `-` reach a `LIKE` here, so no
//! pattern character can.

use cordon_api::lookup::{LookupKind, LookupMatch};
use sqlx::Row;

use super::{db_err, Store, StoreError};

/// The id column, the label expression and the table of each kind.
fn source(kind: LookupKind) -> (&'static str, &'static str, &'static str) {
    match kind {
        LookupKind::Agent => ("id", "hostname", "agents"),
        LookupKind::Incident => ("id", "title", "incidents"),
        LookupKind::Action => ("id", "kind", "actions"),
        LookupKind::Task => ("id", "kind", "tasks"),
        LookupKind::Hunt => ("id", "COALESCE(label, '')", "hunts"),
        LookupKind::Watch => ("id", "paths", "watches"),
        LookupKind::Alert => ("id", "source", "alerts"),
        LookupKind::Evidence => ("sha256", "MIN(kind)", "evidence"),
    }
}

impl Store {
    /// Up to `limit` things of `kind` whose id starts with `prefix` (when given), after the
    /// agents whose hostname is `hostname` (any case, when given), ordered by id.
    pub async fn lookup(
        &self,
        kind: LookupKind,
        prefix: Option<&str>,
        hostname: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LookupMatch>, StoreError> {
        let (id, label, table) = source(kind);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut found = Vec::new();
        if let (LookupKind::Agent, Some(hostname)) = (kind, hostname) {
            let rows = sqlx::query(
                "SELECT id, hostname FROM agents WHERE lower(hostname) = $1 ORDER BY id LIMIT $2",
            )
            .bind(hostname.to_lowercase())
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("look up agents by hostname"))?;
            for row in &rows {
                found.push(LookupMatch {
                    id: row.try_get(0).map_err(db_err("read agent lookup"))?,
                    label: row.try_get(1).map_err(db_err("read agent lookup"))?,
                    by_hostname: true,
                });
            }
        }
        if let Some(prefix) = prefix {
            let group = if kind == LookupKind::Evidence {
                " GROUP BY sha256"
            } else {
                ""
            };
            let rows = sqlx::query(&format!(
                "SELECT {id}, {label} FROM {table} WHERE {id} LIKE $1{group} ORDER BY {id} LIMIT $2"
            ))
            .bind(format!("{prefix}%"))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("look up ids by prefix"))?;
            for row in &rows {
                let id: String = row.try_get(0).map_err(db_err("read id lookup"))?;
                if found.iter().any(|m| m.id == id) {
                    continue;
                }
                let label: String = row.try_get(1).map_err(db_err("read id lookup"))?;
                found.push(LookupMatch {
                    id,
                    label: readable(kind, label),
                    by_hostname: false,
                });
            }
        }
        Ok(found)
    }
}

/// A watch's paths are stored as a JSON list: shown as the paths.
fn readable(kind: LookupKind, label: String) -> String {
    if kind != LookupKind::Watch {
        return label;
    }
    match serde_json::from_str::<Vec<String>>(&label) {
        Ok(paths) => paths.join(", "),
        Err(_) => label,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::backend_tests;

    async fn add_agent(store: &Store, id: &str, hostname: &str) {
        sqlx::query("INSERT INTO agents (id, hostname, enrolled_at) VALUES ($1, $2, 0)")
            .bind(id)
            .bind(hostname)
            .execute(&store.pool)
            .await
            .unwrap();
    }

    async fn hostnames_match_in_any_case_and_prefixes_by_id(store: &Store) {
        add_agent(store, "ab12-0001", "Web-01").await;
        add_agent(store, "ab13-0002", "web-01").await;
        add_agent(store, "cd00-0003", "db-01").await;
        let ids = |found: Vec<LookupMatch>| -> Vec<(String, bool)> {
            found.into_iter().map(|m| (m.id, m.by_hostname)).collect()
        };
        let by_name = store
            .lookup(LookupKind::Agent, None, Some("WEB-01"), 10)
            .await
            .unwrap();
        assert_eq!(
            ids(by_name),
            [("ab12-0001".into(), true), ("ab13-0002".into(), true)]
        );
        let by_prefix = store
            .lookup(LookupKind::Agent, Some("ab1"), Some("ab1"), 10)
            .await
            .unwrap();
        assert_eq!(
            ids(by_prefix),
            [("ab12-0001".into(), false), ("ab13-0002".into(), false)]
        );
        // A hostname match is not listed twice when its id also starts with the query.
        add_agent(store, "cd01-0004", "cd0").await;
        let both = store
            .lookup(LookupKind::Agent, Some("cd0"), Some("cd0"), 10)
            .await
            .unwrap();
        assert_eq!(
            ids(both),
            [("cd01-0004".into(), true), ("cd00-0003".into(), false)]
        );
        let limited = store
            .lookup(LookupKind::Agent, Some("ab"), None, 1)
            .await
            .unwrap();
        assert_eq!(limited.len(), 1);
        let none = store
            .lookup(LookupKind::Incident, Some("ab"), None, 10)
            .await
            .unwrap();
        assert!(none.is_empty());
    }

    backend_tests!(hostnames_match_in_any_case_and_prefixes_by_id);
}
