//! The registry's database: one diesel code path over SQLite (embedded default) and PostgreSQL
//! (production), an r2d2 pool with timeouts, embedded per-backend migrations, and `run`, which
//! keeps blocking database work off the async runtime's worker threads.

pub(crate) mod batches;
pub(crate) mod bulk;
pub(crate) mod dialect;
pub(crate) mod disclosure;
pub(crate) mod disclosure_batch;
pub(crate) mod enumeration;
pub(crate) mod holdings;
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

/// How many times a transaction that lost a race with another writer is run again.
const RACE_ATTEMPTS: usize = 4;

/// True when `error` means the transaction lost a race with a concurrent writer and running it
/// again (from its reads) will settle it: a key another writer took meanwhile, a serialization
/// failure, a deadlock the database broke by aborting this side.
pub(crate) fn lost_race(error: &RegistryError) -> bool {
    use diesel::result::{DatabaseErrorKind as K, Error as E};
    match error {
        RegistryError::Database(E::DatabaseError(
            K::UniqueViolation | K::SerializationFailure,
            _,
        )) => true,
        // PostgreSQL's deadlock_detected (40P01) has no kind of its own in diesel.
        RegistryError::Database(E::DatabaseError(K::Unknown, info)) => {
            info.message().contains("deadlock detected")
        }
        _ => false,
    }
}

/// Runs `attempt` (a whole transaction) until it does not lose a race, at most `RACE_ATTEMPTS`
/// times; `also` names other errors worth another attempt.
pub(crate) fn retry_races<T>(
    also: impl Fn(&RegistryError) -> bool,
    mut attempt: impl FnMut() -> Result<T, RegistryError>,
) -> Result<T, RegistryError> {
    let mut tries = 1;
    loop {
        match attempt() {
            Err(e) if tries < RACE_ATTEMPTS && (lost_race(&e) || also(&e)) => {
                tracing::debug!(error = %e, tries, "transaction lost a race; running it again");
                tries += 1;
            }
            other => return other,
        }
    }
}

/// A pooled connection, and whether it is known to be dead (so the pool discards it instead of
/// handing it to the next caller).
pub(crate) struct Pooled {
    conn: DbConnection,
    lost: bool,
}

/// Opens connections for the pool, configured per backend (`dialect::connect`).
#[derive(Debug)]
pub(crate) struct ConnectionManager {
    url: DatabaseUrl,
}

impl ManageConnection for ConnectionManager {
    type Connection = Pooled;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<Pooled, r2d2::Error> {
        Ok(Pooled {
            conn: dialect::connect(&self.url)?,
            lost: false,
        })
    }

    fn is_valid(&self, pooled: &mut Pooled) -> Result<(), r2d2::Error> {
        pooled
            .conn
            .batch_execute("SELECT 1")
            .map_err(r2d2::Error::QueryError)
    }

    /// Called as a connection goes back to the pool: dead (found so by `Database::run`) or left
    /// in a broken transaction, it is dropped, and the pool opens a fresh one when needed.
    fn has_broken(&self, pooled: &mut Pooled) -> bool {
        pooled.lost || diesel::r2d2::R2D2Connection::is_broken(&mut pooled.conn)
    }
}

/// A connection from `pool`: an idle one at once, else waiting up to the pool's timeout (for
/// one to come back or a new one to open), counted and timed in the pool metrics; a timeout is
/// UNAVAILABLE.
fn checkout(
    pool: &r2d2::Pool<ConnectionManager>,
) -> Result<r2d2::PooledConnection<ConnectionManager>, RegistryError> {
    if let Some(pooled) = pool.try_get() {
        return Ok(pooled);
    }
    let metrics = cpis_core::metrics::metrics();
    metrics.db_pool_waits.add(1, &[]);
    let waited = std::time::Instant::now();
    let pooled = pool.get();
    metrics
        .db_pool_wait
        .record(waited.elapsed().as_secs_f64(), &[]);
    pooled.map_err(|_| {
        metrics.db_pool_timeouts.add(1, &[]);
        RegistryError::Unavailable
    })
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
    /// Shared so the pool gauges can hold it weakly (see `cpis_core::metrics::watch_pool`).
    pool: std::sync::Arc<r2d2::Pool<ConnectionManager>>,
    engine: &'static str,
    url: DatabaseUrl,
    /// The health probe's own connection.
    probe: std::sync::Arc<std::sync::Mutex<Option<DbConnection>>>,
    /// Probes under way (a hung database can hold some).
    probing: std::sync::Arc<std::sync::atomic::AtomicUsize>,
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
            .build_unchecked(ConnectionManager { url: url.clone() });
        let pool = std::sync::Arc::new(pool);
        let watched = std::sync::Arc::downgrade(&pool);
        cpis_core::metrics::watch_pool(move || {
            let pool = watched.upgrade()?;
            let state = pool.state();
            Some(cpis_core::metrics::PoolConnections {
                in_use: u64::from(state.connections.saturating_sub(state.idle_connections)),
                idle: u64::from(state.idle_connections),
                max: u64::from(pool.max_size()),
            })
        });
        Ok(Self {
            pool,
            engine,
            url,
            probe: std::sync::Arc::default(),
            probing: std::sync::Arc::default(),
        })
    }

    /// "sqlite" or "postgresql".
    pub fn engine(&self) -> &'static str {
        self.engine
    }

    /// Runs blocking database work on the blocking thread pool with a pooled connection.
    /// A pool timeout is UNAVAILABLE. When the work fails on a database error, one cheap probe
    /// tells a failed statement from a dead connection: a dead one is discarded (so a database
    /// restart heals as soon as it is back) and the call answers UNAVAILABLE, not INTERNAL.
    pub async fn run<T, F>(&self, work: F) -> Result<T, RegistryError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> Result<T, RegistryError> + Send + 'static,
    {
        let pool = self.pool.clone();
        // The work's log lines belong to the call that asked for it (its request id).
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _call = span.enter();
            let mut pooled = checkout(&pool)?;
            let result = work(&mut pooled.conn);
            let suspect = matches!(
                result,
                Err(RegistryError::Database(_) | RegistryError::OutcomeUnknown)
            );
            if suspect && pooled.conn.batch_execute("SELECT 1").is_err() {
                pooled.lost = true;
                if let Err(error) = &result {
                    tracing::warn!(%error, "database connection lost; discarded");
                }
                // An unknown outcome stays unknown; anything else was not done.
                if !matches!(result, Err(RegistryError::OutcomeUnknown)) {
                    return Err(RegistryError::Unavailable);
                }
            }
            result
        })
        .await
        .map_err(|e| RegistryError::Internal(format!("database task failed: {e}")))?
    }

    /// True when the database answers a trivial query, on a connection of its own (so a pool
    /// busy with real work never reads as a database that is down). The connection is taken out
    /// while it is used: a probe stuck on a hung database is abandoned, and the next one connects
    /// afresh (to whatever the URL now leads to, after a failover); at most a few are ever stuck.
    pub async fn answers(&self) -> bool {
        const MOST_STUCK: usize = 3;
        let (probe, url, in_flight) = (self.probe.clone(), self.url.clone(), self.probing.clone());
        if in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= MOST_STUCK {
            in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            return false;
        }
        let answered = tokio::task::spawn_blocking(move || {
            let taken = probe
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            let mut conn = match taken {
                Some(conn) => conn,
                None => match dialect::connect(&url) {
                    Ok(conn) => conn,
                    Err(_) => return false,
                },
            };
            let answered = conn.batch_execute("SELECT 1").is_ok();
            if answered {
                *probe
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(conn);
            }
            answered
        })
        .await
        .unwrap_or(false);
        in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        answered
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
