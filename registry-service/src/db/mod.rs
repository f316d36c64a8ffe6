//! The registry's database: one diesel code path over SQLite (embedded default) and PostgreSQL
//! (production), an r2d2 pool with timeouts, embedded per-backend migrations, and `run`, which
//! keeps blocking database work off the async runtime's worker threads.

pub(crate) mod dialect;
pub(crate) mod disclosure;
pub(crate) mod keys;
pub(crate) mod models;
pub(crate) mod nhs_status;
pub(crate) mod outbox;
pub(crate) mod records;
pub(crate) mod schema;
#[cfg(test)]
mod schema_drift;

use std::{path::PathBuf, time::Duration};

use diesel::connection::SimpleConnection as _;
use diesel::r2d2::{self, ManageConnection};
use diesel::{pg::PgConnection, sqlite::SqliteConnection};
use secrecy::SecretString;

use crate::error::RegistryError;

/// A connection to either backend; diesel queries written once run on both.
#[derive(diesel::MultiConnection)]
pub(crate) enum DbConnection {
    /// PostgreSQL (production).
    Pg(PgConnection),
    /// SQLite (embedded default).
    Sqlite(SqliteConnection),
}

/// Which engine a URL names.
#[derive(Clone, Debug)]
pub enum DatabaseUrl {
    /// `postgres://…` or `postgresql://…` (kept secret: it may hold a password).
    Postgres(SecretString),
    /// `sqlite://PATH`: a file.
    Sqlite(PathBuf),
}

impl DatabaseUrl {
    /// Parses by scheme. MultiConnection's own `establish` hides why a URL failed, so we
    /// dispatch ourselves.
    pub fn parse(url: &str) -> Result<Self, RegistryError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(SecretString::from(url.to_owned())))
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(RegistryError::Config(
                    "sqlite:// URL needs a file path".into(),
                ));
            }
            Ok(Self::Sqlite(PathBuf::from(path)))
        } else {
            Err(RegistryError::Config(
                "database URL must start with postgres://, postgresql:// or sqlite://".into(),
            ))
        }
    }

    /// Engine name for logs (never the URL: it may carry a password).
    pub fn engine(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgresql",
            Self::Sqlite(_) => "sqlite",
        }
    }
}

/// Opens connections for the pool, configured per backend (`dialect::connect`).
#[derive(Debug)]
pub(crate) struct ConnectionManager {
    url: DatabaseUrl,
}

impl ManageConnection for ConnectionManager {
    type Connection = DbConnection;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<DbConnection, r2d2::Error> {
        dialect::connect(&self.url)
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), r2d2::Error> {
        conn.batch_execute("SELECT 1")
            .map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, _conn: &mut DbConnection) -> bool {
        false
    }
}

/// Pool settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PoolOptions {
    /// Most connections (PostgreSQL). SQLite always uses one writer connection.
    pub max_connections: u32,
    /// How long a call waits for a connection before answering UNAVAILABLE.
    pub acquire_timeout: Duration,
}

/// The registry's database handle; cheap to clone.
#[derive(Clone)]
pub(crate) struct Database {
    pool: r2d2::Pool<ConnectionManager>,
    engine: &'static str,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("engine", &self.engine)
            .finish()
    }
}

impl Database {
    /// Builds the pool without connecting (connections open on first use), so a server can
    /// start, report NOT_SERVING and wait for its database.
    pub fn open(url: DatabaseUrl, options: PoolOptions) -> Result<Self, RegistryError> {
        let engine = url.engine();
        if let DatabaseUrl::Sqlite(path) = &url
            && let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                RegistryError::Config(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        // SQLite allows one writer at a time; one connection avoids SQLITE_BUSY upgrades and
        // keeps write order simple. Concurrency comes from short transactions.
        let max_size = match url {
            DatabaseUrl::Sqlite(_) => 1,
            DatabaseUrl::Postgres(_) => options.max_connections.max(1),
        };
        let pool = r2d2::Pool::builder()
            .max_size(max_size)
            .min_idle(Some(0))
            .connection_timeout(options.acquire_timeout)
            .test_on_check_out(false)
            .build_unchecked(ConnectionManager { url });
        Ok(Self { pool, engine })
    }

    /// "sqlite" or "postgresql".
    pub fn engine(&self) -> &'static str {
        self.engine
    }

    /// Runs blocking database work on the blocking thread pool with a pooled connection.
    /// A pool timeout is UNAVAILABLE.
    pub async fn run<T, F>(&self, work: F) -> Result<T, RegistryError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> Result<T, RegistryError> + Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get().map_err(|_| RegistryError::Unavailable)?;
            work(&mut conn)
        })
        .await
        .map_err(|e| RegistryError::Internal(format!("database task failed: {e}")))?
    }

    /// Names of migrations not yet applied.
    pub async fn pending_migrations(&self) -> Result<Vec<String>, RegistryError> {
        self.run(dialect::pending_migrations).await
    }

    /// Applies every pending migration; returns the names applied.
    pub async fn migrate(&self) -> Result<Vec<String>, RegistryError> {
        self.run(dialect::run_migrations).await
    }
}
