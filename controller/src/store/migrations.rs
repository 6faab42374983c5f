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

const SQLITE_V1: &str = "
CREATE TABLE agents (
    id TEXT PRIMARY KEY NOT NULL,
    hostname TEXT NOT NULL,
    enrolled_at BIGINT NOT NULL,
    last_seen_at BIGINT NULL,
    connected BIGINT NOT NULL DEFAULT 0,
    revoked_at BIGINT NULL,
    inventory TEXT NULL,
    labels TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE certificates (
    serial TEXT PRIMARY KEY NOT NULL,
    agent_id TEXT NOT NULL REFERENCES agents(id),
    issued_at BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    revoked_at BIGINT NULL
);
CREATE INDEX certificates_agent_id ON certificates (agent_id);
CREATE TABLE enrollment_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    note TEXT NULL,
    used_at BIGINT NULL,
    used_by_agent TEXT NULL
);
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NULL,
    revoked_at BIGINT NULL
);
CREATE TABLE meta (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
";

const POSTGRES_V1: &str = "
CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    enrolled_at BIGINT NOT NULL,
    last_seen_at BIGINT NULL,
    connected BIGINT NOT NULL DEFAULT 0,
    revoked_at BIGINT NULL,
    inventory TEXT NULL,
    labels TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE certificates (
    serial TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL REFERENCES agents(id),
    issued_at BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    revoked_at BIGINT NULL
);
CREATE INDEX certificates_agent_id ON certificates (agent_id);
CREATE TABLE enrollment_tokens (
    token_hash TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    note TEXT NULL,
    used_at BIGINT NULL,
    used_by_agent TEXT NULL
);
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NULL,
    revoked_at BIGINT NULL
);
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// Version 2, identical on both backends: collection tasks queued per agent.
const TASKS_V2: &str = "
CREATE TABLE tasks (
    id TEXT PRIMARY KEY NOT NULL,
    agent_id TEXT NOT NULL REFERENCES agents(id),
    hunt_id TEXT NULL,
    kind TEXT NOT NULL,
    request TEXT NOT NULL,
    state TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    sent_at BIGINT NULL,
    started_at BIGINT NULL,
    finished_at BIGINT NULL,
    result TEXT NULL,
    error_code TEXT NULL,
    error_message TEXT NULL
);
CREATE INDEX tasks_agent_state ON tasks (agent_id, state);
CREATE INDEX tasks_state_expires ON tasks (state, expires_at);
";

/// Version 3, identical on both backends: each agent's pinned signing key, and evidence records
/// (the bytes live on disk, content-addressed; a record is one collection of them with the
/// agent's signed manifest).
const EVIDENCE_V3: &str = "
ALTER TABLE agents ADD COLUMN signing_key TEXT NULL;
CREATE TABLE evidence (
    task_id TEXT PRIMARY KEY NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    kind TEXT NOT NULL,
    agent_id TEXT NOT NULL REFERENCES agents(id),
    source_path TEXT NULL,
    manifest TEXT NOT NULL,
    agent_public_key TEXT NOT NULL,
    signature TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX evidence_sha256 ON evidence (sha256);
CREATE INDEX evidence_agent ON evidence (agent_id, received_at);
";

/// Version 4: file watches and the changes agents report for them. Separate per backend only
/// for the event id: SQLite's `INTEGER PRIMARY KEY AUTOINCREMENT`, PostgreSQL's `BIGSERIAL`
/// (both read as `i64`; ids only grow, so clients page with `after=`).
const SQLITE_WATCHES_V4: &str = "
CREATE TABLE watches (
    id TEXT PRIMARY KEY NOT NULL,
    agent_id TEXT NOT NULL REFERENCES agents(id),
    paths TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    task_id TEXT NULL,
    stopped_at BIGINT NULL,
    stopped_by TEXT NULL
);
CREATE INDEX watches_agent ON watches (agent_id, stopped_at);
CREATE TABLE watch_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    watch_id TEXT NOT NULL REFERENCES watches(id),
    agent_id TEXT NOT NULL REFERENCES agents(id),
    path TEXT NOT NULL,
    kind TEXT NOT NULL,
    changed_at BIGINT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX watch_events_watch ON watch_events (watch_id, id);
";

const POSTGRES_WATCHES_V4: &str = "
CREATE TABLE watches (
    id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL REFERENCES agents(id),
    paths TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    task_id TEXT NULL,
    stopped_at BIGINT NULL,
    stopped_by TEXT NULL
);
CREATE INDEX watches_agent ON watches (agent_id, stopped_at);
CREATE TABLE watch_events (
    id BIGSERIAL PRIMARY KEY,
    watch_id TEXT NOT NULL REFERENCES watches(id),
    agent_id TEXT NOT NULL REFERENCES agents(id),
    path TEXT NOT NULL,
    kind TEXT NOT NULL,
    changed_at BIGINT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX watch_events_watch ON watch_events (watch_id, id);
";

/// Version 5, identical on both backends: hunts. A hunt's tasks are ordinary tasks carrying its
/// id in `tasks.hunt_id` (a column since version 2), indexed here so a hunt's progress is one
/// index range.
const HUNTS_V5: &str = "
CREATE TABLE hunts (
    id TEXT PRIMARY KEY NOT NULL,
    query TEXT NOT NULL,
    label TEXT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    agent_count BIGINT NOT NULL
);
CREATE INDEX hunts_created ON hunts (created_at);
CREATE INDEX tasks_hunt ON tasks (hunt_id, state);
";

/// Version 6, identical on both backends: signed containment actions. `request` is the
/// `ActionRequest` as JSON and `signing_bytes` the hex of exactly what every signer signed;
/// `signatures` is a JSON list (key id, public key, signature, who added it). An action is
/// delivered as an ordinary task (`task_id`) once enough distinct keys signed it.
const ACTIONS_V6: &str = "
CREATE TABLE actions (
    id TEXT PRIMARY KEY NOT NULL,
    agent_id TEXT NOT NULL REFERENCES agents(id),
    kind TEXT NOT NULL,
    request TEXT NOT NULL,
    signing_bytes TEXT NOT NULL,
    signatures TEXT NOT NULL,
    required_signers BIGINT NOT NULL,
    state TEXT NOT NULL,
    task_id TEXT NULL,
    receipt TEXT NULL,
    error_code TEXT NULL,
    error_message TEXT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    submitted_at BIGINT NULL,
    finished_at BIGINT NULL
);
CREATE INDEX actions_agent ON actions (agent_id, created_at);
CREATE INDEX actions_task ON actions (task_id);
CREATE INDEX actions_state_expires ON actions (state, expires_at);
";

/// Version 7, identical on both backends: the hash-chained audit log. `seq` is assigned by the
/// appender (last + 1, under a write lock), not by the database, so a missing number is a
/// deleted entry; `hash` = SHA-256 over `prev_hash` and the entry's fields (see `store::audit`).
const AUDIT_V7: &str = "
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY NOT NULL,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
";

/// Incidents (v8): the incident, its hosts, what is attached to it (tasks, hunts, actions,
/// evidence), its timeline of stored entries, and one row per stage entered, which the playbook
/// runner works through (`playbook_state` pending → done) so a stage's playbook runs once even
/// across restarts. `open_fingerprint` holds the alert fingerprint while the incident is open
/// and NULL once closed: its unique index lets one open incident per fingerprint exist, however
/// many controllers take alerts at once.
/// The timeline's ids only grow (each backend's own counter), so entries page with `after=`.
const SQLITE_INCIDENTS_V8: &str = "
CREATE TABLE incidents (
    id TEXT PRIMARY KEY NOT NULL,
    title TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    stage TEXT NOT NULL,
    description TEXT NOT NULL,
    assignee TEXT NULL,
    tier BIGINT NOT NULL,
    escalated_to TEXT NULL,
    labels TEXT NOT NULL,
    fingerprint TEXT NULL,
    open_fingerprint TEXT NULL,
    alert_count BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    closed_at BIGINT NULL
);
CREATE UNIQUE INDEX incidents_open_fingerprint ON incidents (open_fingerprint);
CREATE INDEX incidents_updated ON incidents (updated_at);
CREATE TABLE incident_hosts (
    incident_id TEXT NOT NULL REFERENCES incidents(id),
    agent_id TEXT NOT NULL REFERENCES agents(id),
    added_at BIGINT NOT NULL,
    added_by TEXT NOT NULL,
    PRIMARY KEY (incident_id, agent_id)
);
CREATE INDEX incident_hosts_agent ON incident_hosts (agent_id);
CREATE TABLE incident_links (
    incident_id TEXT NOT NULL REFERENCES incidents(id),
    kind TEXT NOT NULL,
    ref_id TEXT NOT NULL,
    linked_at BIGINT NOT NULL,
    linked_by TEXT NOT NULL,
    PRIMARY KEY (incident_id, kind, ref_id)
);
CREATE INDEX incident_links_ref ON incident_links (kind, ref_id);
CREATE TABLE stage_entries (
    id TEXT PRIMARY KEY NOT NULL,
    incident_id TEXT NOT NULL REFERENCES incidents(id),
    stage TEXT NOT NULL,
    entered_at BIGINT NOT NULL,
    entered_by TEXT NOT NULL,
    playbook_state TEXT NOT NULL,
    playbook_detail TEXT NULL
);
CREATE INDEX stage_entries_state ON stage_entries (playbook_state, entered_at);
CREATE TABLE incident_timeline (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT NOT NULL REFERENCES incidents(id),
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    kind TEXT NOT NULL,
    summary TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX incident_timeline_incident ON incident_timeline (incident_id, id);
";

const POSTGRES_INCIDENTS_V8: &str = "
CREATE TABLE incidents (
    id TEXT PRIMARY KEY NOT NULL,
    title TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    stage TEXT NOT NULL,
    description TEXT NOT NULL,
    assignee TEXT NULL,
    tier BIGINT NOT NULL,
    escalated_to TEXT NULL,
    labels TEXT NOT NULL,
    fingerprint TEXT NULL,
    open_fingerprint TEXT NULL,
    alert_count BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    closed_at BIGINT NULL
);
CREATE UNIQUE INDEX incidents_open_fingerprint ON incidents (open_fingerprint);
CREATE INDEX incidents_updated ON incidents (updated_at);
CREATE TABLE incident_hosts (
    incident_id TEXT NOT NULL REFERENCES incidents(id),
    agent_id TEXT NOT NULL REFERENCES agents(id),
    added_at BIGINT NOT NULL,
    added_by TEXT NOT NULL,
    PRIMARY KEY (incident_id, agent_id)
);
CREATE INDEX incident_hosts_agent ON incident_hosts (agent_id);
CREATE TABLE incident_links (
    incident_id TEXT NOT NULL REFERENCES incidents(id),
    kind TEXT NOT NULL,
    ref_id TEXT NOT NULL,
    linked_at BIGINT NOT NULL,
    linked_by TEXT NOT NULL,
    PRIMARY KEY (incident_id, kind, ref_id)
);
CREATE INDEX incident_links_ref ON incident_links (kind, ref_id);
CREATE TABLE stage_entries (
    id TEXT PRIMARY KEY NOT NULL,
    incident_id TEXT NOT NULL REFERENCES incidents(id),
    stage TEXT NOT NULL,
    entered_at BIGINT NOT NULL,
    entered_by TEXT NOT NULL,
    playbook_state TEXT NOT NULL,
    playbook_detail TEXT NULL
);
CREATE INDEX stage_entries_state ON stage_entries (playbook_state, entered_at);
CREATE TABLE incident_timeline (
    id BIGSERIAL PRIMARY KEY,
    incident_id TEXT NOT NULL REFERENCES incidents(id),
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    kind TEXT NOT NULL,
    summary TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX incident_timeline_incident ON incident_timeline (incident_id, id);
";

/// Alerts (v9): every alert taken in, with the incident it opened or joined, written in the
/// same transaction as that incident change. `detail` is the alert as mapped (the timeline
/// entry's detail); `raw` the payload exactly as received (bounded by the intake), whose
/// SHA-256 is `raw_sha256`. The same statements serve both backends.
const ALERTS_V9: &str = "
CREATE TABLE alerts (
    id TEXT PRIMARY KEY NOT NULL,
    received_at BIGINT NOT NULL,
    source TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    incident_id TEXT NOT NULL REFERENCES incidents(id),
    outcome TEXT NOT NULL,
    actor TEXT NOT NULL,
    external_id TEXT NULL,
    agent_id TEXT NULL,
    detail TEXT NOT NULL,
    raw TEXT NOT NULL,
    raw_sha256 TEXT NOT NULL
);
CREATE INDEX alerts_incident ON alerts (incident_id, received_at);
CREATE INDEX alerts_received ON alerts (received_at);
";

/// Outgoing webhooks (v10) and their delivery outbox: one row per event a webhook wants,
/// written before anything is sent and worked through by the delivery worker (see
/// `store::webhooks`). `events` is a JSON list of kind patterns; `secret` the HMAC key, which
/// the API shows only once. The same statements serve both backends.
const WEBHOOKS_V10: &str = "
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    events TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    disabled_at BIGINT NULL,
    disabled_by TEXT NULL
);
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY NOT NULL,
    webhook_id TEXT NOT NULL REFERENCES webhooks(id),
    event_id TEXT NOT NULL,
    event_kind TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    last_status BIGINT NULL,
    last_error TEXT NULL,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, created_at);
";

/// Version 11: how many changes each watch has stored, so a runaway watch is stopped at its
/// limit without counting rows on every insert.
const WATCH_CHANGES_V11: &str = "
ALTER TABLE watches ADD COLUMN changes BIGINT NOT NULL DEFAULT 0;
UPDATE watches SET changes = (SELECT COUNT(*) FROM watch_events WHERE watch_events.watch_id = watches.id);
";

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
