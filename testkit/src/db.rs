//! A fresh database per test on either backend: a SQLite file in a temporary directory, or a new
//! PostgreSQL database created on the server named by `CPIS_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and dropped afterwards.
//! With `CI=true` an unreachable PostgreSQL fails the test instead of skipping it.

use std::sync::atomic::{AtomicU32, Ordering};

use diesel::{Connection as _, RunQueryDsl as _, pg::PgConnection};

/// The two engines every registry test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A database that exists for one test.
pub struct TestDb {
    /// The URL to give the registry.
    pub url: String,
    /// The backend.
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

fn admin_url() -> String {
    std::env::var("CPIS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    /// Creates a fresh database; `None` (with a message) when PostgreSQL is unreachable outside
    /// CI, so a laptop without PostgreSQL still runs the SQLite half.
    pub fn create(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("registry.sqlite3").display());
                Some(Self {
                    url,
                    backend,
                    _dir: Some(dir),
                    pg: None,
                })
            }
            Backend::Postgres => {
                let admin = admin_url();
                let mut conn = match PgConnection::establish(&admin) {
                    Ok(conn) => conn,
                    Err(error) => {
                        assert!(
                            !in_ci(),
                            "PostgreSQL unreachable in CI ({error}); scripts/postgres.sh must start it"
                        );
                        eprintln!("SKIPPED: PostgreSQL unreachable ({error})");
                        return None;
                    }
                };
                let name = format!(
                    "cpis_test_{}_{}_{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::SeqCst),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.subsec_nanos())
                        .unwrap_or_default()
                );
                diesel::sql_query(format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .expect("create test database");
                let base = admin
                    .rsplit_once('/')
                    .map_or(admin.as_str(), |(base, _)| base);
                let url = format!("{base}/{name}");
                Some(Self {
                    url,
                    backend,
                    _dir: None,
                    pg: Some((admin, name)),
                })
            }
        }
    }
}

/// One row of a `SELECT COUNT(*) AS n …`.
#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

impl TestDb {
    /// Runs `sql` on the database directly, as an intruder or a failing disk would: for tests
    /// that damage stored data to see what the services make of it.
    pub fn execute(&self, sql: &str) -> usize {
        use diesel::sqlite::SqliteConnection;
        match self.backend {
            Backend::Postgres => {
                let mut conn =
                    PgConnection::establish(&self.url).expect("connect to test database");
                diesel::sql_query(sql).execute(&mut conn).expect("execute")
            }
            Backend::Sqlite => {
                let path = self.url.trim_start_matches("sqlite://");
                let mut conn = SqliteConnection::establish(path).expect("open test database");
                diesel::sql_query(sql).execute(&mut conn).expect("execute")
            }
        }
    }

    /// The `n` of `sql`, a `SELECT COUNT(*) AS n …` run on the database directly: for tests that
    /// check what is stored beyond what any RPC shows (an audit row, for example).
    pub fn count(&self, sql: &str) -> i64 {
        use diesel::sqlite::SqliteConnection;
        let rows: Vec<Count> = match self.backend {
            Backend::Postgres => {
                let mut conn =
                    PgConnection::establish(&self.url).expect("connect to test database");
                diesel::sql_query(sql).load(&mut conn).expect("count")
            }
            Backend::Sqlite => {
                let path = self.url.trim_start_matches("sqlite://");
                let mut conn = SqliteConnection::establish(path).expect("open test database");
                diesel::sql_query(sql).load(&mut conn).expect("count")
            }
        };
        rows.first().map(|row| row.n).expect("one row")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.pg
            && let Ok(mut conn) = PgConnection::establish(admin)
        {
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn);
        }
    }
}

/// Runs an async test body once per backend, each with its own database.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::db::Backend::Sqlite).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::db::Backend::Postgres).await;
                }
            }
        )*
    };
}
