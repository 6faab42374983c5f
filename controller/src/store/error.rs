//! The store's error kinds: callers match these, never sqlx's.

use std::path::PathBuf;

/// Everything that can go wrong in the store, saying which operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL names a database this build does not support.
    #[error("unsupported database URL scheme `{scheme}`: expected sqlite:// or postgres://")]
    UnsupportedUrl {
        /// The scheme found in the URL.
        scheme: String,
    },
    /// The SQLite file could not be created or its path resolved.
    #[error("could not create or open database file {}", path.display())]
    CreateFile {
        /// The file that was being created.
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A database operation failed.
    #[error("database error: could not {op}")]
    Database {
        /// What was being done, e.g. "insert agent".
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// Applying a schema migration failed; the migration was rolled back.
    #[error("could not apply database migration {version} ({description})")]
    Migration {
        /// The migration's version.
        version: i64,
        /// What the migration does.
        description: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// The database was migrated by a newer controller than this one.
    #[error(
        "database schema is at version {found} but this controller knows only up to {known}; \
         upgrade the controller"
    )]
    SchemaTooNew {
        /// The highest version recorded in the database.
        found: i64,
        /// The highest version this build knows.
        known: i64,
    },
    /// The agent named in a session update does not exist.
    #[error("no agent with id `{id}`")]
    AgentNotFound {
        /// The agent id that was looked up.
        id: String,
    },
    /// A value could not be converted to or from its stored JSON form.
    #[error("could not convert {what} to or from JSON")]
    Json {
        /// What was being converted, e.g. "agent labels".
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A stored value is not what the schema promises.
    #[error("stored {what} is invalid: {detail}")]
    InvalidData {
        /// Which value, e.g. "API token role".
        what: &'static str,
        /// Why it was rejected.
        detail: String,
    },
    /// An audit entry written in the same transaction as a change could not be appended, so
    /// the change was not made either.
    #[error("the audit log cannot be written, so nothing was changed")]
    AuditUnavailable {
        #[source]
        source: Box<StoreError>,
    },
}

impl StoreError {
    /// True when the database could not be used at all (its pool closed as the controller
    /// stops, no connection came in time, or the connection broke), rather than this
    /// operation being refused: the same request may work when tried again.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database { source, .. } => match source {
                sqlx::Error::PoolClosed
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::Io(_)
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(db) => db.code().is_some_and(|c| is_unavailable_code(&c)),
                _ => false,
            },
            StoreError::AuditUnavailable { source } => source.is_unavailable(),
            _ => false,
        }
    }
}

impl StoreError {
    /// True when the write was refused because a row with the same key exists (the same
    /// envelope, a step an earlier run made): the caller decides what a duplicate means.
    pub fn is_duplicate(&self) -> bool {
        matches!(
            self,
            StoreError::Database { source: sqlx::Error::Database(db), .. } if db.is_unique_violation()
        )
    }
}

/// PostgreSQL SQLSTATEs that say the server, not the statement, is the trouble: a connection
/// exception (class 08), the server shutting down or starting up (57P01 admin shutdown, 57P02
/// crash shutdown, 57P03 cannot connect now, as during a restart or failover), or no
/// connection slot left (53300).
fn is_unavailable_code(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
}

/// Returns a `map_err` adapter that wraps a sqlx error with the operation that failed.
pub(crate) fn db_err(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Database { op, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::on_postgres;

    #[test]
    fn server_trouble_is_unavailable_and_a_bad_statement_is_not() {
        for code in ["08006", "08001", "57P01", "57P02", "57P03", "53300"] {
            assert!(is_unavailable_code(code), "{code}");
        }
        for code in ["23505", "42P01", "40001", "57014"] {
            assert!(!is_unavailable_code(code), "{code}");
        }
    }

    #[tokio::test]
    async fn a_connection_the_server_ends_is_unavailable() {
        on_postgres(|store| async move {
            // What a restarting server does to every session: ends it with 57P01.
            let err = sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
                .execute(store.pool())
                .await
                .map_err(db_err("terminate own session"))
                .expect_err("the server ends the session");
            assert!(err.is_unavailable(), "{err:?}");
            let err = sqlx::query("SELECT no_such_column FROM agents")
                .execute(store.pool())
                .await
                .map_err(db_err("read a missing column"))
                .expect_err("a bad statement");
            assert!(!err.is_unavailable(), "{err:?}");
        })
        .await;
    }
}
