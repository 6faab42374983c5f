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
            StoreError::Database { source, .. } => matches!(
                source,
                sqlx::Error::PoolClosed | sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)
            ),
            _ => false,
        }
    }
}

/// Returns a `map_err` adapter that wraps a sqlx error with the operation that failed.
pub(crate) fn db_err(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Database { op, source }
}
