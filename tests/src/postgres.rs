//! The PostgreSQL store for tests: a schema of each test's own on the database CI provides.

/// The PostgreSQL URL for tests, or `None` with a loud skip message.
pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("CORDON_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("SKIPPED {test}: CORDON_TEST_DATABASE_URL is not set (CI sets it)");
            None
        }
    }
}

/// A schema of one test's own, so runs never see each other's rows; dropped with [`PgSchema::drop`].
pub struct PgSchema {
    base: String,
    name: String,
}

impl PgSchema {
    /// Creates a new, uniquely named schema, or `None` (with a loud skip message naming `test`)
    /// when `CORDON_TEST_DATABASE_URL` is not set.
    pub async fn create(test: &str) -> Option<Self> {
        let base = postgres_url(test)?;
        let name = format!("cordon_e2e_{}", uuid::Uuid::new_v4().simple());
        exec(&base, &format!("CREATE SCHEMA {name}")).await;
        Some(PgSchema { base, name })
    }

    /// The database URL with this schema as the search path.
    pub fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-c%20search_path%3D{}", self.base, self.name)
    }

    /// Drops the schema and everything in it.
    pub async fn drop(self) {
        exec(&self.base, &format!("DROP SCHEMA {} CASCADE", self.name)).await;
    }
}

/// Runs one SQL statement on `url`.
async fn exec(url: &str, sql: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url)
        .await
        .expect("connect to PostgreSQL");
    sqlx::query(sql).execute(&pool).await.expect(sql);
    pool.close().await;
}
