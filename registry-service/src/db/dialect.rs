//! Every place PostgreSQL and SQLite differ, in one module: connecting and session settings,
//! migrations, multi-row inserts (diesel's MultiConnection cannot express them), bulk reads and
//! writes (index probes, binary COPY and array updates on PostgreSQL), and cross-replica
//! wake-ups (NOTIFY). Everything else in `db` is one diesel code path.

use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use diesel::r2d2;
use diesel::{pg::PgConnection, sqlite::SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use secrecy::ExposeSecret as _;

use super::{
    DatabaseUrl, DbConnection,
    models::{
        BatchRejectionRow, NewAccessEvent, NewChildRecord, NewHoldingPeriod, NotificationRow,
    },
    schema::{access_events, batch_rejections, child_records, holding_periods, notifications},
};
use crate::error::RegistryError;

mod batch;
mod bulk;

pub(crate) use batch::{
    counts_first_for_one, guard_counts, recent_access_rows, take_sequence_ranges, take_sequences,
};
pub(crate) use bulk::{insert_records, stored_records, update_records};

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// The PostgreSQL channel replicas listen on; the payload is the council's ODS code.
pub(crate) const NOTIFY_CHANNEL: &str = "cpis_notifications";

/// Rows per multi-row INSERT: well under SQLite's bound-parameter limit (32,766).
pub(crate) const INSERT_ROWS: usize = 500;

/// A hand-written PostgreSQL statement that diesel prepares once per connection and reuses
/// (keyed by its SQL text and bind types), as it does the query builder's. `sql_query` on its
/// own is never cached, so each batch parsed and planned its statements again: in PostgreSQL's
/// statement log, parse and plan were 0.65 ms of the guard statement's 2.8 ms a batch (BENCHMARKS).
///
/// - Only for SQL text that never varies (a literal): each text is a prepared statement kept for
///   the connection's life.
/// - After five runs PostgreSQL may keep a generic plan, blind to the bound values. Fit only for
///   statements whose plan cannot depend on them: those that scan per row of `unnest($n)`
///   through correlated subqueries (the values reach the scans at run time either way), a
///   primary-key probe, or an insert of `unnest`ed arrays. Not for
///   `= ANY($1)` over a table (see `plan_for_actual_values`).
/// - Run it with `load` or with its own `execute` (below), which hand diesel the statement
///   itself: diesel's `execute` takes a reference, whose `QueryFragment` asks the inner
///   `sql_query`, and so never caches.
pub(crate) struct Prepared<Q>(pub(crate) Q);

impl<Q> Prepared<Q>
where
    Self: diesel::query_builder::QueryFragment<diesel::pg::Pg> + diesel::query_builder::QueryId,
{
    /// Runs a statement whose rows, if any, are not wanted. (Shadows `RunQueryDsl::execute`,
    /// which would prepare it again every time; returns no count, as the rows it could count
    /// are those returned, not those affected.)
    pub(crate) fn execute(self, conn: &mut PgConnection) -> QueryResult<()> {
        use diesel::connection::{DefaultLoadingMode, LoadConnection};
        for row in LoadConnection::<DefaultLoadingMode>::load(conn, self)? {
            row?;
        }
        Ok(())
    }
}

impl<Q: diesel::query_builder::QueryFragment<diesel::pg::Pg>>
    diesel::query_builder::QueryFragment<diesel::pg::Pg> for Prepared<Q>
{
    fn walk_ast<'b>(
        &'b self,
        pass: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    // `sql_query` says it is unsafe to cache because its text is arbitrary; this one's is fixed.
    fn is_safe_to_cache_prepared(&self, _backend: &diesel::pg::Pg) -> QueryResult<bool> {
        Ok(true)
    }
}

impl<Q> diesel::query_builder::QueryId for Prepared<Q> {
    // No type-level id: the cache is keyed by the SQL text and its bind types.
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q> diesel::query_builder::Query for Prepared<Q> {
    type SqlType = diesel::sql_types::Untyped;
}

impl<Q, Conn> RunQueryDsl<Conn> for Prepared<Q> {}

/// Opens a connection configured for the registry.
pub(crate) fn connect(url: &DatabaseUrl) -> Result<DbConnection, r2d2::Error> {
    match url {
        DatabaseUrl::Postgres(url) => {
            // A database that accepts TCP but never answers (hung, or behind a dead route) must
            // not hold a connect forever, and a connection to a host that vanished must fail
            // rather than wait on the kernel's defaults: bound both unless the operator chose.
            let mut url = url.expose_secret().to_owned();
            for (key, value) in [
                ("connect_timeout", "3"),
                ("keepalives_idle", "10"),
                ("keepalives_interval", "5"),
                ("keepalives_count", "3"),
                ("tcp_user_timeout", "30000"),
            ] {
                if !url.contains(&format!("{key}=")) {
                    let separator = if url.contains('?') { '&' } else { '?' };
                    url = format!("{url}{separator}{key}={value}");
                }
            }
            let mut conn = PgConnection::establish(&url).map_err(r2d2::Error::ConnectionError)?;
            // Bound every statement so a stuck query cannot hold a connection forever.
            conn.batch_execute("SET statement_timeout = '60s'; SET lock_timeout = '10s'")
                .map_err(r2d2::Error::QueryError)?;
            Ok(DbConnection::Pg(conn))
        }
        DatabaseUrl::Sqlite(path) => {
            let path = path.to_string_lossy();
            let mut conn =
                SqliteConnection::establish(&path).map_err(r2d2::Error::ConnectionError)?;
            // WAL for concurrent readers; foreign keys are off by default in SQLite;
            // synchronous=FULL because an accepted record must survive a power cut.
            conn.batch_execute(
                "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; \
                 PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000;",
            )
            .map_err(r2d2::Error::QueryError)?;
            Ok(DbConnection::Sqlite(conn))
        }
    }
}

/// Names of migrations not yet applied.
pub(crate) fn pending_migrations(conn: &mut DbConnection) -> Result<Vec<String>, RegistryError> {
    let pending = match conn {
        DbConnection::Pg(c) => c
            .pending_migrations(POSTGRES_MIGRATIONS)
            .map(|list| list.iter().map(|m| m.name().to_string()).collect()),
        DbConnection::Sqlite(c) => c
            .pending_migrations(SQLITE_MIGRATIONS)
            .map(|list| list.iter().map(|m| m.name().to_string()).collect()),
    };
    pending.map_err(|e| RegistryError::Migration(e.to_string()))
}

/// Applies every pending migration; returns the names applied.
pub(crate) fn run_migrations(conn: &mut DbConnection) -> Result<Vec<String>, RegistryError> {
    let applied = match conn {
        DbConnection::Pg(c) => c
            .run_pending_migrations(POSTGRES_MIGRATIONS)
            .map(|list| list.iter().map(ToString::to_string).collect()),
        DbConnection::Sqlite(c) => c
            .run_pending_migrations(SQLITE_MIGRATIONS)
            .map(|list| list.iter().map(ToString::to_string).collect()),
    };
    applied.map_err(|e| RegistryError::Migration(e.to_string()))
}

/// Tests: runs the pending migrations before the first whose name holds `marker`, then that
/// one too when `including`; the names of those run.
#[cfg(test)]
pub(crate) fn run_migrations_until(
    conn: &mut DbConnection,
    marker: &str,
    including: bool,
) -> Result<Vec<String>, RegistryError> {
    fn run<DB: diesel::backend::Backend, C: MigrationHarness<DB>>(
        conn: &mut C,
        // A const each time: `EmbeddedMigrations` is neither `Copy` nor `Clone`.
        source: fn() -> EmbeddedMigrations,
        marker: &str,
        including: bool,
    ) -> diesel::migration::Result<Vec<String>> {
        let mut ran = Vec::new();
        loop {
            let pending = conn.pending_migrations(source())?;
            let Some(next) = pending.first() else {
                return Ok(ran);
            };
            let name = next.name().to_string();
            let is_marked = name.contains(marker);
            if is_marked && !including {
                return Ok(ran);
            }
            conn.run_migration(next.as_ref())?;
            ran.push(name);
            if is_marked {
                return Ok(ran);
            }
        }
    }
    match conn {
        DbConnection::Pg(c) => run(c, || POSTGRES_MIGRATIONS, marker, including),
        DbConnection::Sqlite(c) => run(c, || SQLITE_MIGRATIONS, marker, including),
    }
    .map_err(|e| RegistryError::Migration(e.to_string()))
}

/// One multi-row INSERT of `rows` into `table` inside the caller's transaction: diesel's
/// MultiConnection cannot build multi-row inserts, so each backend's own connection runs it.
/// (On SQLite diesel writes one multi-row statement only for a struct derived with
/// `treat_none_as_default_value = false`; for others, see `insert_rows_apart`.)
macro_rules! insert_rows {
    ($conn:expr, $table:path, $rows:expr) => {
        Ok(match $conn {
            DbConnection::Pg(c) => diesel::insert_into($table).values($rows).execute(c)?,
            DbConnection::Sqlite(c) => diesel::insert_into($table).values($rows).execute(c)?,
        })
    };
}

/// SQLite: a disclosure batch's rows (access events, notifications) one row a statement,
/// prepared once per connection, in the caller's transaction. For these structs diesel's own
/// multi-row insert on SQLite runs the rows one by one inside a SAVEPOINT of its own, and inside
/// a savepoint SQLite first copies every page a row touches to a sub-journal: 7.6 % of a loaded
/// SQLite registry's CPU in a profile. A failed row fails the caller's transaction, which the
/// caller rolls back whole.
macro_rules! insert_rows_apart {
    ($sqlite:expr, $table:path, $rows:expr) => {{
        let mut inserted = 0;
        for row in $rows {
            inserted += diesel::insert_into($table).values(row).execute($sqlite)?;
        }
        Ok(inserted)
    }};
}

/// Inserts `rows` (at most `INSERT_ROWS`) of child records.
pub(crate) fn insert_child_records(
    conn: &mut DbConnection,
    rows: &[NewChildRecord],
) -> Result<usize, RegistryError> {
    insert_rows!(conn, child_records::table, rows)
}

/// Inserts `rows` (at most `INSERT_ROWS`) of holding periods.
pub(crate) fn insert_holding_periods(
    conn: &mut DbConnection,
    rows: &[NewHoldingPeriod],
) -> Result<usize, RegistryError> {
    insert_rows!(conn, holding_periods::table, rows)
}

/// Inserts `rows` (at most a thousand) of a batch's rejections.
pub(crate) fn insert_batch_rejections(
    conn: &mut DbConnection,
    rows: &[BatchRejectionRow],
) -> Result<usize, RegistryError> {
    insert_rows!(conn, batch_rejections::table, rows)
}

/// Inserts `rows` (at most `INSERT_ROWS`) of a disclosure batch's access events. PostgreSQL:
/// one statement of fixed text whatever the number of rows (each column bound as an array and
/// unnested, in order), so it is prepared once per connection: diesel's multi-row INSERT is
/// new SQL for each number of rows and was parsed again by every batch (about 0.1 ms of
/// PostgreSQL's time with its planning, by its statement log). Returns the rows given: on
/// PostgreSQL one statement puts them all in or fails. SQLite: `insert_rows_apart`.
pub(crate) fn insert_access_events(
    conn: &mut DbConnection,
    rows: &[NewAccessEvent],
) -> Result<usize, RegistryError> {
    use diesel::sql_types::{Array, BigInt, Binary, Integer, Text};
    let pg = match conn {
        DbConnection::Pg(pg) => pg,
        DbConnection::Sqlite(sqlite) => {
            return insert_rows_apart!(sqlite, access_events::table, rows);
        }
    };
    let text = |f: fn(&NewAccessEvent) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
    let int = |f: fn(&NewAccessEvent) -> i32| rows.iter().map(f).collect::<Vec<i32>>();
    Prepared(
        diesel::sql_query(
            "INSERT INTO access_events (access_id, nhs_number, access_time, access_mode, \
               accessor_key, organisation_ods_code, care_setting, event) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::integer[], \
               $5::text[], $6::text[], $7::integer[], $8::bytea[])",
        )
        .bind::<Array<Text>, _>(text(|r| &r.access_id))
        .bind::<Array<Text>, _>(text(|r| &r.nhs_number))
        .bind::<Array<BigInt>, _>(rows.iter().map(|r| r.access_time).collect::<Vec<i64>>())
        .bind::<Array<Integer>, _>(int(|r| r.access_mode))
        .bind::<Array<Text>, _>(text(|r| &r.accessor_key))
        .bind::<Array<Text>, _>(text(|r| &r.organisation_ods_code))
        .bind::<Array<Integer>, _>(int(|r| r.care_setting))
        .bind::<Array<Binary>, _>(
            rows.iter()
                .map(|r| r.event.as_slice())
                .collect::<Vec<&[u8]>>(),
        ),
    )
    .execute(pg)?;
    // One statement: every row went in, or it failed.
    Ok(rows.len())
}

/// Queues `rows` (at most `INSERT_ROWS`) of notifications and, on PostgreSQL, tells other
/// replicas on commit that their councils have new ones (NOTIFY, delivered only on commit;
/// SQLite serves one node, so there is no one to tell). PostgreSQL: one statement of fixed text
/// for both, prepared once per connection (see `insert_access_events`), so a batch's
/// notifications cost one round trip, not two. SQLite: `insert_rows_apart`.
pub(crate) fn queue_notifications(
    conn: &mut DbConnection,
    rows: &[NotificationRow],
) -> Result<usize, RegistryError> {
    use diesel::sql_types::{Array, BigInt, Binary, Text};
    let pg = match conn {
        DbConnection::Pg(pg) => pg,
        DbConnection::Sqlite(sqlite) => {
            return insert_rows_apart!(sqlite, notifications::table, rows);
        }
    };
    let whole = |f: fn(&NotificationRow) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
    let councils: Vec<&str> = rows.iter().map(|r| r.local_authority.as_str()).collect();
    let bodies: Vec<&[u8]> = rows.iter().map(|r| r.notification.as_slice()).collect();
    Prepared(
        diesel::sql_query(
            "WITH queued AS ( \
               INSERT INTO notifications (local_authority, sequence, create_time, notification) \
               SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bytea[]) \
               RETURNING local_authority) \
             SELECT pg_notify($5, code) \
             FROM (SELECT DISTINCT local_authority FROM queued) AS c(code)",
        )
        .bind::<Array<Text>, _>(councils)
        .bind::<Array<BigInt>, _>(whole(|r| r.sequence))
        .bind::<Array<BigInt>, _>(whole(|r| r.create_time))
        .bind::<Array<Binary>, _>(bodies)
        .bind::<Text, _>(NOTIFY_CHANNEL),
    )
    .execute(pg)?;
    Ok(rows.len())
}

/// Plans the rest of the transaction's statements for their real values. On PostgreSQL a
/// prepared statement's generic plan, chosen while the table was small, keeps a sequential scan
/// for `nhs_number = ANY($n)` as the table grows (measured: 30x slower by 40,000 rows).
pub(crate) fn plan_for_actual_values(conn: &mut DbConnection) -> Result<(), RegistryError> {
    if let DbConnection::Pg(pg) = conn {
        pg.batch_execute("SET LOCAL plan_cache_mode = force_custom_plan")?;
    }
    Ok(())
}

/// Inside a transaction: tells other replicas, on commit, that council `ods_code` has new
/// notifications. SQLite serves one node, so there is no one to tell.
pub(crate) fn notify_on_commit(
    conn: &mut DbConnection,
    ods_code: &str,
) -> Result<(), RegistryError> {
    if let DbConnection::Pg(pg) = conn {
        Prepared(
            diesel::sql_query("SELECT pg_notify($1, $2)")
                .bind::<diesel::sql_types::Text, _>(NOTIFY_CHANNEL)
                .bind::<diesel::sql_types::Text, _>(ods_code),
        )
        .execute(pg)?;
    }
    Ok(())
}

/// A row's key in `enumeration_last_seen`: where a prune's chunk ends and the next begins.
#[derive(Clone, Default, PartialEq, Eq, QueryableByName)]
pub(crate) struct LastSeenKey {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub subject: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub nhs_number: String,
}

/// Leaves the NHS number out: Debug output ends up in logs and panics (as `NhsNumber`'s).
impl std::fmt::Debug for LastSeenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LastSeenKey")
            .field("subject", &self.subject)
            .field("nhs_number", &"<redacted>")
            .finish()
    }
}

/// The longest one chunk of a prune may run on PostgreSQL before it is cancelled (its rows
/// stay for the next pass): well under the 10 s a disclosure waits for a row lock.
const PRUNE_STATEMENT_TIMEOUT: &str = "SET LOCAL statement_timeout = '5s'";

/// The key `$3` rows after (`$1`, `$2`): where a prune's chunk of `$3 + 1` rows ends.
pub(crate) const PRUNE_CHUNK_END: &str = "SELECT subject, nhs_number FROM enumeration_last_seen \
     WHERE (subject, nhs_number) > ($1, $2) \
     ORDER BY subject, nhs_number LIMIT 1 OFFSET $3";

/// PostgreSQL: a chunk's delete, of the rows after (`$1`, `$2`) last seen before the earlier of
/// `$3` and the database's clock less `$4`, up to its end key where it has one; by row id, the
/// rows locked `SKIP LOCKED`. Joined back on the key instead of by row id, the planner chose a
/// hash join over a sequential scan of the whole table.
pub(crate) const PG_PRUNE_CHUNK_FROM: &str = "DELETE FROM enumeration_last_seen \
     WHERE ctid = ANY(ARRAY(SELECT ctid FROM enumeration_last_seen \
         WHERE (subject, nhs_number) > ($1, $2) \
           AND last_seen < LEAST($3, \
               (extract(epoch FROM statement_timestamp()) * 1000000)::bigint - $4)";

/// The end of `PG_PRUNE_CHUNK_FROM`.
pub(crate) const PG_PRUNE_CHUNK_LOCK: &str = "FOR UPDATE SKIP LOCKED))";

/// SQLite: a chunk's delete, of the rows among the next `span` keys last seen before the cutoff.
pub(crate) const SQLITE_PRUNE_CHUNK: &str = "DELETE FROM enumeration_last_seen \
     WHERE (subject, nhs_number) IN ( \
         SELECT subject, nhs_number FROM enumeration_last_seen \
         WHERE (subject, nhs_number) > (?, ?) \
         ORDER BY subject, nhs_number LIMIT ?) \
       AND last_seen < ?";

/// One chunk of a prune of `enumeration_last_seen`: of the `span` rows that come after `after`
/// in key order, deletes those last seen more than `kept` before `now`, and returns how many
/// and the chunk's last key (where the next chunk starts), or `None` for the chunk that reached
/// the end of the table. A chunk reads at most `span` rows however few it deletes, and the
/// database orders the keys (its collation, not Rust's), so a pass reads each row once.
///
/// PostgreSQL: the delete in a transaction of its own with a statement timeout; the rows it
/// deletes are locked `SKIP LOCKED`, so a row a disclosure is moving forward at that moment is
/// left for the next pass: a prune never waits for a disclosure, nor can deadlock with one.
/// They are found by an index range bounded by the chunk's keys and deleted by their row ids (a
/// TID scan). The cutoff is also held to the database's own clock less `kept`, so a registry
/// whose clock runs ahead cannot delete rows another replica still counts. SQLite: one process
/// owns the file, so there is one clock, and one writer, so a chunk simply takes its turn.
pub(crate) fn delete_last_seen_before(
    conn: &mut DbConnection,
    (now, kept): (i64, i64),
    after: &LastSeenKey,
    span: i64,
) -> Result<(usize, Option<LastSeenKey>), RegistryError> {
    use diesel::sql_types::{BigInt, Text};
    let before = now.saturating_sub(kept);
    // The chunk's last key: the span-th after `after`.
    let end: Option<LastSeenKey> = {
        let sql = PRUNE_CHUNK_END;
        let offset = span.saturating_sub(1).max(0);
        let rows: Vec<LastSeenKey> = match conn {
            DbConnection::Pg(pg) => diesel::sql_query(sql)
                .bind::<Text, _>(&after.subject)
                .bind::<Text, _>(&after.nhs_number)
                .bind::<BigInt, _>(offset)
                .load(pg)?,
            DbConnection::Sqlite(sqlite) => diesel::sql_query(sql.replace('$', "?"))
                .bind::<Text, _>(&after.subject)
                .bind::<Text, _>(&after.nhs_number)
                .bind::<BigInt, _>(offset)
                .load(sqlite)?,
        };
        rows.into_iter().next()
    };
    let deleted = match conn {
        DbConnection::Pg(pg) => pg.transaction(|pg| {
            pg.batch_execute(PRUNE_STATEMENT_TIMEOUT)?;
            // Two texts rather than one with `$3 IS NULL OR …`: a plan kept for any value
            // would lose the upper bound and scan to the end of the table every chunk.
            let query = match &end {
                Some(end) => diesel::sql_query(format!(
                    "{PG_PRUNE_CHUNK_FROM} AND (subject, nhs_number) <= ($5, $6) {PG_PRUNE_CHUNK_LOCK}"
                ))
                .into_boxed()
                .bind::<Text, _>(after.subject.clone())
                .bind::<Text, _>(after.nhs_number.clone())
                .bind::<BigInt, _>(before)
                .bind::<BigInt, _>(kept)
                .bind::<Text, _>(end.subject.clone())
                .bind::<Text, _>(end.nhs_number.clone()),
                None => diesel::sql_query(format!("{PG_PRUNE_CHUNK_FROM} {PG_PRUNE_CHUNK_LOCK}"))
                    .into_boxed()
                    .bind::<Text, _>(after.subject.clone())
                    .bind::<Text, _>(after.nhs_number.clone())
                    .bind::<BigInt, _>(before)
                    .bind::<BigInt, _>(kept),
            };
            query.execute(pg)
        })?,
        // The same span, as the `span` keys after `after`: written as a range up to the
        // chunk's end instead, SQLite searched the window index by subject alone and read every
        // row of the chunk's subjects, however many. The two statements see the same rows: the
        // pool's one SQLite connection runs nothing between them.
        DbConnection::Sqlite(sqlite) => diesel::sql_query(SQLITE_PRUNE_CHUNK)
            .bind::<Text, _>(&after.subject)
            .bind::<Text, _>(&after.nhs_number)
            .bind::<BigInt, _>(span)
            .bind::<BigInt, _>(before)
            .execute(sqlite)?,
    };
    Ok((deleted, end))
}
