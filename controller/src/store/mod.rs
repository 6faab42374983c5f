//! The controller's persistent store: agents, their certificates, enrolment and API tokens, and a
//! small key/value table.
//!
//! One set of queries runs over [`sqlx::AnyPool`], so the same code serves the embedded SQLite
//! default (a file in the data dir) and PostgreSQL, which several controller replicas can share.
//! Only types the Any driver carries are used: `i64` (times as milliseconds since the Unix
//! epoch, booleans as 0/1), `String` (ids, JSON) and `Option`s of those. Callers pass the
//! current time in, so behaviour that depends on time is testable.
//!
//! Each concern lives in its own file: [`agents`] (enrolment, sessions, revocation), [`tokens`]
//! (enrolment and API tokens), [`meta`] (key/value and counters); [`migrations`] holds the schema
//! for each backend.

pub mod actions;
pub mod agents;
pub mod alerts;
pub mod audit;
mod error;
pub mod evidence;
pub mod hunts;
pub mod incidents;
pub mod lookup;
pub mod meta;
pub mod migrations;
pub mod observables;
pub mod similar;
pub mod task_writes;
pub mod tasks;
pub mod tokens;
pub mod watches;
pub mod webhooks;

use std::path::Path;
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;

use sqlx::any::{AnyPoolOptions, AnyQueryResult};
use sqlx::pool::PoolConnectionMetadata;
use sqlx::{Any, AnyConnection, AnyPool, Executor, Transaction};

pub use actions::{ActionEnd, ActionRecord, ActionState, NewAction};
pub use agents::{
    AgentRecord, EnrollError, EnrollRefusal, NewAgent, NewCertificate, PresenceChange,
};
pub use alerts::{AlertIncident, AlertOutcome, AlertRecord, HostCandidate, NewAlert, Observed};
pub use audit::{AuditEntry, AuditVerification, BreakReason, BrokenLink, NewAuditEntry};
pub(crate) use error::db_err;
pub use error::StoreError;
pub use evidence::{EvidenceRecord, KeyPin};
pub use hunts::{HuntRecord, HuntTarget, HuntTaskRow, NewHunt, TaskCounts};
pub use incidents::{
    CreateOutcome, IncidentChange, IncidentFilter, IncidentHost, IncidentLink, IncidentRecord,
    NewIncident, NewTimelineEntry, StageEntry, TimelineEntry,
};
pub use observables::{NewObservable, NewSighting, Recorded};
pub use tasks::{NewTask, TaskEnd, TaskRecord, TaskState};
pub use tokens::{
    ApiTokenRecord, EnrollmentRevocation, EnrollmentTokenRecord, NewEnrollmentToken,
    ParseRoleError, Role,
};
pub use watches::{
    NewWatch, NewWatchEvent, StoredChanges, WatchEventRecord, WatchRecord, STOPPED_AT_LIMIT,
};

/// Connections kept to a SQLite file. SQLite serialises writers anyway; a few connections let
/// readers proceed alongside a writer (WAL).
const SQLITE_MAX_CONNECTIONS: u32 = 4;
/// Connections kept to a PostgreSQL server by one controller.
const POSTGRES_MAX_CONNECTIONS: u32 = 10;
/// How long a caller waits for a free pooled connection before the operation fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// A stored enumeration's value read back (a state, a role): one the API does not know is
/// corrupt data, named.
pub(crate) fn parse_stored<T: std::str::FromStr>(
    what: &'static str,
    value: &str,
) -> Result<T, StoreError> {
    value.parse().map_err(|_| StoreError::InvalidData {
        what,
        detail: value.to_owned(),
    })
}

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// Picks the backend from a database URL's scheme.
    fn from_url(url: &str) -> Result<Self, StoreError> {
        let scheme = url.split_once(':').map_or(url, |(scheme, _)| scheme);
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            // The scheme only: the rest of a URL may carry a password.
            _ => Err(StoreError::UnsupportedUrl {
                scheme: scheme.to_owned(),
            }),
        }
    }
}

/// The controller's database handle. Cheap to clone: the pool is shared.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Task state changes waiting to be committed together (see [`task_writes`]).
    task_writes: std::sync::Arc<task_writes::TaskWrites>,
}

impl Store {
    /// Opens (creating if missing, with mode 0600) the SQLite database at `path`, and migrates it.
    pub async fn open_sqlite(path: &Path) -> Result<Self, StoreError> {
        create_private_file(path)?;
        // An absolute path keeps the URL unambiguous (`sqlite://dir/x` would read `dir` as a host).
        let path = std::fs::canonicalize(path).map_err(|source| StoreError::CreateFile {
            path: path.to_owned(),
            source,
        })?;
        let url = sqlite_url(&path)?;
        Self::connect(&url).await
    }

    /// Connects to `url` (`sqlite://…` or `postgres://…`) and applies any pending migrations.
    ///
    /// For SQLite prefer [`Store::open_sqlite`], which also creates the file with mode 0600.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        // Idempotent: sqlx guards the installation with its own `Once`.
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let max_connections = match backend {
            Backend::Sqlite => SQLITE_MAX_CONNECTIONS,
            Backend::Postgres => POSTGRES_MAX_CONNECTIONS,
        };
        let setup: ConnectionSetup = match backend {
            Backend::Sqlite => sqlite_pragmas,
            Backend::Postgres => no_setup,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(setup)
            .connect(url)
            .await
            .map_err(db_err("connect to database"))?;
        let store = Self {
            pool,
            backend,
            task_writes: task_writes::TaskWrites::new(),
        };
        if let Err(e) = store.migrate().await {
            store.close().await;
            return Err(e);
        }
        Ok(store)
    }

    /// Which database this store talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The underlying connection pool, for queries that belong to other modules.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Closes every connection; later operations on this store (or its clones) fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Begins a transaction that will write.
    ///
    /// On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`): a deferred transaction
    /// that reads first and then writes can fail at once with SQLITE_BUSY instead of waiting.
    pub(crate) async fn begin_write(
        &self,
        op: &'static str,
    ) -> Result<Transaction<'static, Any>, StoreError> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        };
        tx.map_err(db_err(op))
    }
}

/// What [`AnyPoolOptions::after_connect`] runs on each new connection.
type ConnectionSetup =
    for<'c> fn(
        &'c mut AnyConnection,
        PoolConnectionMetadata,
    ) -> Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send + 'c>>;

/// Sets up a new SQLite connection. Pragmas are per connection, so every pooled connection
/// needs them: WAL lets readers run beside the writer, foreign keys are off by default, and the
/// busy timeout makes writers queue instead of failing at once.
fn sqlite_pragmas(
    conn: &mut AnyConnection,
    _meta: PoolConnectionMetadata,
) -> Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send + '_>> {
    Box::pin(async move {
        conn.execute("PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;")
            .await?;
        Ok(())
    })
}

/// PostgreSQL connections need no per-connection setup.
fn no_setup(
    _conn: &mut AnyConnection,
    _meta: PoolConnectionMetadata,
) -> Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send + '_>> {
    Box::pin(async { Ok(()) })
}

/// Creates `path` with mode 0600 if it does not exist yet, so the database (and the WAL and
/// shared-memory files SQLite derives from it) are readable by the controller's user only.
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::CreateFile {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Builds `sqlite://PATH?mode=rwc`, percent-encoding the path (sqlx decodes it again), so a
/// file name containing `?`, `#`, `%` or spaces still names that file.
fn sqlite_url(path: &Path) -> Result<String, StoreError> {
    let Some(text) = path.to_str() else {
        return Err(StoreError::CreateFile {
            path: path.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "database path is not valid UTF-8",
            ),
        });
    };
    let mut url = String::from("sqlite://");
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"/-._~".contains(&byte) {
            url.push(char::from(byte));
        } else {
            url.push_str(&format!("%{byte:02X}"));
        }
    }
    url.push_str("?mode=rwc");
    Ok(url)
}

/// Whether a statement touched at least one row.
pub(crate) fn touched(result: &AnyQueryResult) -> bool {
    result.rows_affected() > 0
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Runs each store test on SQLite (a temporary file) and on PostgreSQL (a fresh schema in the
    //! database named by `CORDON_TEST_DATABASE_URL`, skipped loudly when that is unset).

    use std::future::Future;
    use std::io::Write;
    use std::panic::AssertUnwindSafe;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use sqlx::any::AnyPoolOptions;

    use super::Store;

    /// The environment variable naming the PostgreSQL database the tests may use.
    pub(crate) const DATABASE_URL_VAR: &str = "CORDON_TEST_DATABASE_URL";

    /// Runs `test` against a store in a fresh SQLite file.
    pub(crate) async fn on_sqlite<F, Fut>(test: F)
    where
        F: FnOnce(Store) -> Fut,
        Fut: Future<Output = ()>,
    {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open_sqlite(&dir.path().join("cordon.db"))
            .await
            .expect("open sqlite store");
        let outcome = CatchUnwind(Box::pin(test(store.clone()))).await;
        store.close().await;
        rethrow(outcome);
    }

    /// Runs `test` against a store in a fresh PostgreSQL schema, dropped afterwards even if the
    /// test panics.
    pub(crate) async fn on_postgres<F, Fut>(test: F)
    where
        F: FnOnce(Store) -> Fut,
        Fut: Future<Output = ()>,
    {
        let Ok(url) = std::env::var(DATABASE_URL_VAR) else {
            // Straight to the process's stderr: `eprintln!` would be captured, and hidden, by the
            // test harness for a test that passes.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {DATABASE_URL_VAR} not set (PostgreSQL variant not run)"
            );
            return;
        };
        sqlx::any::install_default_drivers();
        let schema = format!("cordon_test_{}", uuid::Uuid::new_v4().simple());
        let admin = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .expect("connect to test PostgreSQL");
        sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
            .execute(&admin)
            .await
            .expect("create test schema");

        let separator = if url.contains('?') { '&' } else { '?' };
        let schema_url = format!("{url}{separator}options=-c%20search_path%3D{schema}");
        let outcome = match Store::connect(&schema_url).await {
            Ok(store) => {
                let outcome = CatchUnwind(Box::pin(test(store.clone()))).await;
                store.close().await;
                Some(outcome)
            }
            Err(e) => {
                eprintln!("could not open store in schema {schema}: {e:?}");
                None
            }
        };
        sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&admin)
            .await
            .expect("drop test schema");
        admin.close().await;
        rethrow(outcome.expect("open PostgreSQL store"));
    }

    type Panic = Box<dyn std::any::Any + Send>;

    /// Polls a test body, turning a panic into a value so clean-up can run before it is
    /// re-raised. (Not `tokio::spawn`: that needs a `Send` future, which rustc cannot always
    /// prove for sqlx's higher-ranked executor bounds.)
    struct CatchUnwind<F>(Pin<Box<F>>);

    impl<F: Future<Output = ()>> Future for CatchUnwind<F> {
        type Output = Result<(), Panic>;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let inner = self.0.as_mut();
            match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
                Ok(Poll::Pending) => Poll::Pending,
                Ok(Poll::Ready(())) => Poll::Ready(Ok(())),
                Err(panic) => Poll::Ready(Err(panic)),
            }
        }
    }

    fn rethrow(outcome: Result<(), Panic>) {
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    /// Enrols agent `id` (with a throwaway token and certificate) for tests that need one.
    pub(crate) async fn enrolled_agent(store: &Store, id: &str, now_ms: i64) {
        let hash = format!("hash-{id}");
        store
            .create_enrollment_token(&super::NewEnrollmentToken {
                token_hash: hash.clone(),
                created_at_ms: now_ms,
                expires_at_ms: now_ms + 60_000,
                created_by: "t".into(),
                note: None,
            })
            .await
            .expect("create token");
        store
            .enroll_agent(
                &hash,
                now_ms,
                &super::NewAgent {
                    id: id.into(),
                    hostname: id.into(),
                    enrolled_at_ms: now_ms,
                },
                &super::NewCertificate {
                    serial: format!("serial-{id}"),
                    issued_at_ms: now_ms,
                    not_after_ms: now_ms + 1,
                },
            )
            .await
            .expect("enrol agent");
    }

    /// For each `async fn name(store: &Store)`, generates a module `name` with a `sqlite` and a
    /// `postgres` test.
    macro_rules! backend_tests {
        ($($name:ident),* $(,)?) => {$(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    $crate::store::test_support::on_sqlite(|store| async move {
                        super::$name(&store).await
                    })
                    .await;
                }

                #[tokio::test]
                async fn postgres() {
                    $crate::store::test_support::on_postgres(|store| async move {
                        super::$name(&store).await
                    })
                    .await;
                }
            }
        )*};
    }
    pub(crate) use backend_tests;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_is_chosen_by_scheme() {
        assert_eq!(
            Backend::from_url("sqlite:///x.db").ok(),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::from_url("postgres://u@h/db").ok(),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::from_url("postgresql://u@h/db").ok(),
            Some(Backend::Postgres)
        );
        let err = Backend::from_url("mysql://root:hunter2@h/db").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn sqlite_url_escapes_awkward_file_names() {
        let url = sqlite_url(Path::new("/tmp/a b?c#d%e.db")).unwrap();
        assert_eq!(url, "sqlite:///tmp/a%20b%3Fc%23d%25e.db?mode=rwc");
    }

    #[tokio::test]
    async fn sqlite_file_is_private_and_reopens_with_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odd name?.db");
        let store = Store::open_sqlite(&path).await.unwrap();
        assert_eq!(store.backend(), Backend::Sqlite);
        store.set_meta("k", "v").await.unwrap();
        let mut conn = store.pool().acquire().await.unwrap();
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(journal, "wal");
        let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(foreign_keys, 1);
        drop(conn);
        store.close().await;

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        // Migrations run again on open and must leave the data alone.
        let store = Store::open_sqlite(&path).await.unwrap();
        assert_eq!(store.get_meta("k").await.unwrap().as_deref(), Some("v"));
        let versions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(versions, migrations::latest_version(Backend::Sqlite));
        store.close().await;
    }

    #[tokio::test]
    async fn unsupported_url_is_refused() {
        let err = Store::connect("mysql://localhost/db").await.unwrap_err();
        assert!(matches!(err, StoreError::UnsupportedUrl { .. }), "{err}");
    }
}
