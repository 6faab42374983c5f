//! The database schema, as ordered migrations kept separately for each backend.
//!
//! A migration is never edited once released: change the schema by appending a new version to
//! both lists. `Store::migrate` (run by every open) applies the ones a database has not recorded
//! in `schema_migrations`, each in its own transaction.
//!
//! Types are limited to what the Any driver carries: `TEXT` for ids, hex serials and JSON,
//! `BIGINT` for milliseconds since the Unix epoch and for booleans (0/1).

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{Any, Transaction};

use super::{db_err, Backend, Store, StoreError};

/// One schema change.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Position in the sequence, starting at 1; recorded in `schema_migrations`.
    pub version: i64,
    /// What it does, for error messages.
    pub description: &'static str,
    /// The statements, run together inside one transaction.
    pub sql: &'static str,
}

/// The bookkeeping table; identical on both backends and safe to run every time.
pub const CREATE_SCHEMA_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY,
    applied_at BIGINT NOT NULL
)";

/// Key of the PostgreSQL advisory lock held while migrating ("CORDON" in ASCII).
pub const POSTGRES_LOCK_KEY: i64 = 0x434F_5244_4F4E;

const SQLITE_V1: &str = include_str!("migrations/sqlite_v1.sql");

const POSTGRES_V1: &str = include_str!("migrations/postgres_v1.sql");

/// Version 2, identical on both backends: collection tasks queued per agent.
const TASKS_V2: &str = include_str!("migrations/tasks_v2.sql");

/// Version 3, identical on both backends: each agent's pinned signing key, and evidence records
/// (the bytes live on disk, content-addressed; a record is one collection of them with the
/// agent's signed manifest).
const EVIDENCE_V3: &str = include_str!("migrations/evidence_v3.sql");

/// Version 4: file watches and the changes agents report for them. Separate per backend only
/// for the event id: SQLite's `INTEGER PRIMARY KEY AUTOINCREMENT`, PostgreSQL's `BIGSERIAL`
/// (both read as `i64`; ids only grow, so clients page with `after=`).
const SQLITE_WATCHES_V4: &str = include_str!("migrations/sqlite_watches_v4.sql");

const POSTGRES_WATCHES_V4: &str = include_str!("migrations/postgres_watches_v4.sql");

/// Version 5, identical on both backends: hunts. A hunt's tasks are ordinary tasks carrying its
/// id in `tasks.hunt_id` (a column since version 2), indexed here so a hunt's progress is one
/// index range.
const HUNTS_V5: &str = include_str!("migrations/hunts_v5.sql");

/// Version 6, identical on both backends: signed containment actions. `request` is the
/// `ActionRequest` as JSON and `signing_bytes` the hex of exactly what every signer signed;
/// `signatures` is a JSON list (key id, public key, signature, who added it). An action is
/// delivered as an ordinary task (`task_id`) once enough distinct keys signed it.
const ACTIONS_V6: &str = include_str!("migrations/actions_v6.sql");

/// Version 7, identical on both backends: the hash-chained audit log. `seq` is assigned by the
/// appender (last + 1, under a write lock), not by the database, so a missing number is a
/// deleted entry; `hash` = SHA-256 over `prev_hash` and the entry's fields (see `store::audit`).
const AUDIT_V7: &str = include_str!("migrations/audit_v7.sql");

/// Incidents (v8): the incident, its hosts, what is attached to it (tasks, hunts, actions,
/// evidence), its timeline of stored entries, and one row per stage entered, which the playbook
/// runner works through (`playbook_state` pending → done) so a stage's playbook runs once even
/// across restarts. `open_fingerprint` holds the alert fingerprint while the incident is open
/// and NULL once closed: its unique index lets one open incident per fingerprint exist, however
/// many controllers take alerts at once.
/// The timeline's ids only grow (each backend's own counter), so entries page with `after=`.
const SQLITE_INCIDENTS_V8: &str = include_str!("migrations/sqlite_incidents_v8.sql");

const POSTGRES_INCIDENTS_V8: &str = include_str!("migrations/postgres_incidents_v8.sql");

/// Alerts (v9): every alert taken in, with the incident it opened or joined, written in the
/// same transaction as that incident change. `detail` is the alert as mapped (the timeline
/// entry's detail); `raw` the payload exactly as received (bounded by the intake), whose
/// SHA-256 is `raw_sha256`. The same statements serve both backends.
const ALERTS_V9: &str = include_str!("migrations/alerts_v9.sql");

/// Outgoing webhooks (v10) and their delivery outbox: one row per event a webhook wants,
/// written before anything is sent and worked through by the delivery worker (see
/// `store::webhooks`). `events` is a JSON list of kind patterns; `secret` the HMAC key, which
/// the API shows only once. The same statements serve both backends.
const WEBHOOKS_V10: &str = include_str!("migrations/webhooks_v10.sql");

/// Version 11: how many changes each watch has stored, so a runaway watch is stopped at its
/// limit without counting rows on every insert.
const WATCH_CHANGES_V11: &str = include_str!("migrations/watch_changes_v11.sql");

/// Version 12, identical on both backends: incidents' observables and their sightings (see
/// `store::observables`).
const OBSERVABLES_V12: &str = include_str!("migrations/observables_v12.sql");

/// Version 13, identical on both backends: each alert's rule (`source:rule`), indexed, so
/// incidents whose alerts share a rule are found without reading every alert. Alerts taken in
/// before it have none.
const ALERT_RULES_V13: &str = include_str!("migrations/alert_rules_v13.sql");

/// Version 14, identical on both backends: observables by value and time, so the newest
/// incidents holding a common value are found without reading them all.
const OBSERVABLES_BY_TIME_V14: &str = include_str!("migrations/observables_by_time_v14.sql");

/// SQLite migrations, in order. (`NOT NULL` on the primary keys because SQLite, unlike
/// PostgreSQL, would otherwise accept NULL in a non-INTEGER primary key.)
pub const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        description: "agents, certificates, tokens, meta",
        sql: SQLITE_V1,
    },
    Migration {
        version: 2,
        description: "tasks",
        sql: TASKS_V2,
    },
    Migration {
        version: 3,
        description: "agent signing keys, evidence",
        sql: EVIDENCE_V3,
    },
    Migration {
        version: 4,
        description: "file watches and their events",
        sql: SQLITE_WATCHES_V4,
    },
    Migration {
        version: 5,
        description: "hunts",
        sql: HUNTS_V5,
    },
    Migration {
        version: 6,
        description: "signed containment actions",
        sql: ACTIONS_V6,
    },
    Migration {
        version: 7,
        description: "audit log",
        sql: AUDIT_V7,
    },
    Migration {
        version: 8,
        description: "incidents",
        sql: SQLITE_INCIDENTS_V8,
    },
    Migration {
        version: 9,
        description: "alerts",
        sql: ALERTS_V9,
    },
    Migration {
        version: 10,
        description: "webhooks and their deliveries",
        sql: WEBHOOKS_V10,
    },
    Migration {
        version: 11,
        description: "change counts on watches",
        sql: WATCH_CHANGES_V11,
    },
    Migration {
        version: 12,
        description: "observables and their sightings",
        sql: OBSERVABLES_V12,
    },
    Migration {
        version: 13,
        description: "alert rules",
        sql: ALERT_RULES_V13,
    },
    Migration {
        version: 14,
        description: "observables by value and time",
        sql: OBSERVABLES_BY_TIME_V14,
    },
];

/// PostgreSQL migrations, in order.
pub const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        description: "agents, certificates, tokens, meta",
        sql: POSTGRES_V1,
    },
    Migration {
        version: 2,
        description: "tasks",
        sql: TASKS_V2,
    },
    Migration {
        version: 3,
        description: "agent signing keys, evidence",
        sql: EVIDENCE_V3,
    },
    Migration {
        version: 4,
        description: "file watches and their events",
        sql: POSTGRES_WATCHES_V4,
    },
    Migration {
        version: 5,
        description: "hunts",
        sql: HUNTS_V5,
    },
    Migration {
        version: 6,
        description: "signed containment actions",
        sql: ACTIONS_V6,
    },
    Migration {
        version: 7,
        description: "audit log",
        sql: AUDIT_V7,
    },
    Migration {
        version: 8,
        description: "incidents",
        sql: POSTGRES_INCIDENTS_V8,
    },
    Migration {
        version: 9,
        description: "alerts",
        sql: ALERTS_V9,
    },
    Migration {
        version: 10,
        description: "webhooks and their deliveries",
        sql: WEBHOOKS_V10,
    },
    Migration {
        version: 11,
        description: "change counts on watches",
        sql: WATCH_CHANGES_V11,
    },
    Migration {
        version: 12,
        description: "observables and their sightings",
        sql: OBSERVABLES_V12,
    },
    Migration {
        version: 13,
        description: "alert rules",
        sql: ALERT_RULES_V13,
    },
    Migration {
        version: 14,
        description: "observables by value and time",
        sql: OBSERVABLES_BY_TIME_V14,
    },
];

/// The migrations for `backend`, in the order they are applied.
pub fn for_backend(backend: Backend) -> &'static [Migration] {
    match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    }
}

/// The schema version a fully migrated database of `backend` is at.
pub fn latest_version(backend: Backend) -> i64 {
    for_backend(backend).last().map_or(0, |m| m.version)
}

impl Store {
    /// Applies, in order, every migration for this backend that the database has not recorded
    /// yet, each in its own transaction. Re-running is a no-op.
    ///
    /// On PostgreSQL each step holds a transaction-scoped advisory lock, so controller replicas
    /// starting together apply each migration exactly once.
    pub(crate) async fn migrate(&self) -> Result<(), StoreError> {
        let list = for_backend(self.backend);
        let known = latest_version(self.backend);

        let mut tx = self.begin_write("begin migration").await?;
        self.lock_migrations(&mut tx).await?;
        sqlx::raw_sql(CREATE_SCHEMA_MIGRATIONS)
            .execute(&mut *tx)
            .await
            .map_err(db_err("create schema_migrations table"))?;
        let found: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err("read schema version"))?;
        tx.commit()
            .await
            .map_err(db_err("commit schema_migrations table"))?;
        if let Some(found) = found.filter(|&found| found > known) {
            return Err(StoreError::SchemaTooNew { found, known });
        }

        for migration in list {
            let failed = |source| StoreError::Migration {
                version: migration.version,
                description: migration.description,
                source,
            };
            let mut tx = self.begin_write("begin migration").await?;
            self.lock_migrations(&mut tx).await?;
            // Checked under the lock: another replica may have applied it since we looked.
            let applied: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(migration.version)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(failed)?;
            if applied.is_some() {
                tx.rollback().await.map_err(failed)?;
                continue;
            }
            sqlx::raw_sql(migration.sql)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(migration.version)
                .bind(wall_clock_ms())
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            tx.commit().await.map_err(failed)?;
        }
        Ok(())
    }

    /// Serialises migrators across PostgreSQL sessions until the transaction ends. SQLite needs
    /// nothing more: `BEGIN IMMEDIATE` already holds the database's single write lock.
    async fn lock_migrations(&self, tx: &mut Transaction<'static, Any>) -> Result<(), StoreError> {
        if self.backend == Backend::Postgres {
            // Selected FROM the function so the result column is an integer, not `void`, which
            // the Any driver cannot represent.
            sqlx::query("SELECT 1 FROM pg_advisory_xact_lock($1)")
                .bind(POSTGRES_LOCK_KEY)
                .execute(&mut **tx)
                .await
                .map_err(db_err("lock migrations"))?;
        }
        Ok(())
    }
}

/// The wall clock in milliseconds since the Unix epoch; only for bookkeeping the store does on
/// its own (migration timestamps). Everything callers see takes the time as an argument.
fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::backend_tests;

    #[test]
    fn versions_start_at_one_and_increase_by_one() {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let versions: Vec<i64> = for_backend(backend).iter().map(|m| m.version).collect();
            let expected: Vec<i64> = (1..=versions.len() as i64).collect();
            assert_eq!(versions, expected, "{backend:?}");
        }
    }

    #[test]
    fn both_backends_reach_the_same_version() {
        assert_eq!(
            latest_version(Backend::Sqlite),
            latest_version(Backend::Postgres)
        );
    }

    async fn migrating_again_is_a_no_op(store: &Store) {
        store.set_meta("survives", "yes").await.unwrap();
        store.migrate().await.unwrap();
        // Concurrent migrators (several replicas starting at once) must not trip over each other.
        let (a, b) = tokio::join!(store.migrate(), store.migrate());
        a.unwrap();
        b.unwrap();
        assert_eq!(
            store.get_meta("survives").await.unwrap().as_deref(),
            Some("yes")
        );
        let versions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(versions, latest_version(store.backend()));
    }

    async fn newer_schema_is_refused(store: &Store) {
        let future = latest_version(store.backend()) + 1;
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(future)
            .bind(0_i64)
            .execute(store.pool())
            .await
            .unwrap();
        let err = store.migrate().await.unwrap_err();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found, .. } if found == future),
            "{err}"
        );
    }

    backend_tests!(migrating_again_is_a_no_op, newer_schema_is_refused);
}
