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
    bulk::ChangedRecord,
    models::{
        AccessEventRow, BatchRejectionRow, ChildRecordRow, NewAccessEvent, NewChildRecord,
        NewHoldingPeriod, NotificationRow, RecordContent,
    },
    schema::{access_events, batch_rejections, child_records, holding_periods, notifications},
};
use crate::error::RegistryError;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// The PostgreSQL channel replicas listen on; the payload is the council's ODS code.
pub(crate) const NOTIFY_CHANNEL: &str = "cpis_notifications";

/// Rows per multi-row INSERT: well under SQLite's bound-parameter limit (32,766).
pub(crate) const INSERT_ROWS: usize = 500;

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

/// One multi-row INSERT of `rows` into `table` inside the caller's transaction: diesel's
/// MultiConnection cannot build multi-row inserts, so each backend's own connection runs it.
macro_rules! insert_rows {
    ($conn:expr, $table:path, $rows:expr) => {
        Ok(match $conn {
            DbConnection::Pg(c) => diesel::insert_into($table).values($rows).execute(c)?,
            DbConnection::Sqlite(c) => diesel::insert_into($table).values($rows).execute(c)?,
        })
    };
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

/// Inserts `rows` (at most `INSERT_ROWS`) of access events.
pub(crate) fn insert_access_events(
    conn: &mut DbConnection,
    rows: &[NewAccessEvent],
) -> Result<usize, RegistryError> {
    insert_rows!(conn, access_events::table, rows)
}

/// Inserts `rows` (at most `INSERT_ROWS`) of notifications.
pub(crate) fn insert_notifications(
    conn: &mut DbConnection,
    rows: &[NotificationRow],
) -> Result<usize, RegistryError> {
    insert_rows!(conn, notifications::table, rows)
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

/// Council `ods_code`'s stored records for `numbers`, inside the caller's transaction: one index
/// probe per number on PostgreSQL (a LATERAL subquery with LIMIT 1 stays a nested loop over an
/// index whatever the plan cache or the statistics say: for `nhs_number = ANY(..)` a generic plan,
/// or a table without statistics yet (one a big upload is still filling), scanned every record of
/// the council, so each chunk cost more than the last); `nhs_number IN (..)` on SQLite, whose
/// planner probes the index. (Forcing custom plans instead, as this did before, also re-planned
/// the foreign-key checks' cached plans for every row written: half the database's time.)
pub(crate) fn stored_records(
    conn: &mut DbConnection,
    ods_code: &str,
    numbers: &[String],
) -> Result<Vec<ChildRecordRow>, RegistryError> {
    if let DbConnection::Pg(pg) = conn {
        use diesel::sql_types::{Array, Text};
        return Ok(diesel::sql_query(
            "SELECT c.* FROM unnest($2) AS n (number) CROSS JOIN LATERAL \
             (SELECT * FROM child_records AS r WHERE r.local_authority = $1 \
              AND r.nhs_number = n.number LIMIT 1) AS c",
        )
        .bind::<Text, _>(ods_code)
        .bind::<Array<Text>, _>(numbers)
        .load(pg)?);
    }
    Ok(child_records::table
        .filter(child_records::local_authority.eq(ods_code))
        .filter(child_records::nhs_number.eq_any(numbers))
        .select(ChildRecordRow::as_select())
        .load(conn)?)
}

/// A new record as binary COPY sends it: every column but the id, a NULL sent as NULL (COPY
/// has no DEFAULT), borrowed from the row it was made from.
#[derive(Insertable)]
#[diesel(table_name = child_records, treat_none_as_default_value = false)]
struct CopiedRecord<'a> {
    local_authority: &'a str,
    nhs_number: &'a str,
    local_case_id: Option<&'a str>,
    given_name: &'a str,
    family_name: &'a str,
    date_of_birth: i32,
    cpp_start: Option<i32>,
    cpp_end: Option<i32>,
    cpp_delete: Option<i32>,
    lac_start: Option<i32>,
    lac_end: Option<i32>,
    lac_delete: Option<i32>,
    lac_legal_basis: Option<i32>,
    ucpp_start: Option<i32>,
    ucpp_end: Option<i32>,
    ucpp_delete: Option<i32>,
    ucpp_expected_delivery: Option<i32>,
    version: i64,
    create_time: i64,
    update_time: i64,
}

impl<'a> From<&'a NewChildRecord> for CopiedRecord<'a> {
    fn from(row: &'a NewChildRecord) -> Self {
        let c = &row.content;
        Self {
            local_authority: &row.local_authority,
            nhs_number: &row.nhs_number,
            local_case_id: c.local_case_id.as_deref(),
            given_name: &c.given_name,
            family_name: &c.family_name,
            date_of_birth: c.date_of_birth,
            cpp_start: c.cpp_start,
            cpp_end: c.cpp_end,
            cpp_delete: c.cpp_delete,
            lac_start: c.lac_start,
            lac_end: c.lac_end,
            lac_delete: c.lac_delete,
            lac_legal_basis: c.lac_legal_basis,
            ucpp_start: c.ucpp_start,
            ucpp_end: c.ucpp_end,
            ucpp_delete: c.ucpp_delete,
            ucpp_expected_delivery: c.ucpp_expected_delivery,
            version: row.version,
            create_time: row.create_time,
            update_time: row.update_time,
        }
    }
}

/// Inserts new records and opens a holding period for each, inside the caller's transaction.
/// PostgreSQL: one binary COPY per table (the engine's own bulk path: no statement to parse or
/// plan per row, no bound-parameter limit). SQLite: multi-row INSERTs (in-process, so there are
/// no round trips to save).
pub(crate) fn insert_records(
    conn: &mut DbConnection,
    rows: &[NewChildRecord],
) -> Result<(), RegistryError> {
    if rows.is_empty() {
        return Ok(());
    }
    let periods: Vec<NewHoldingPeriod> = rows.iter().map(NewHoldingPeriod::from).collect();
    if let DbConnection::Pg(pg) = conn {
        let copied: Vec<CopiedRecord<'_>> = rows.iter().map(CopiedRecord::from).collect();
        diesel::copy_from(child_records::table)
            .from_insertable(&copied)
            .execute(pg)?;
        diesel::copy_from(holding_periods::table)
            .from_insertable(&periods)
            .execute(pg)?;
        return Ok(());
    }
    for part in rows.chunks(INSERT_ROWS) {
        insert_child_records(conn, part)?;
    }
    for part in periods.chunks(INSERT_ROWS) {
        insert_holding_periods(conn, part)?;
    }
    Ok(())
}

/// The array update of changed records on PostgreSQL: one statement for the whole set.
const UPDATE_FROM_ARRAYS: &str = "\
UPDATE child_records AS c SET \
 local_case_id = u.local_case_id, given_name = u.given_name, family_name = u.family_name, \
 date_of_birth = u.date_of_birth, cpp_start = u.cpp_start, cpp_end = u.cpp_end, \
 cpp_delete = u.cpp_delete, lac_start = u.lac_start, lac_end = u.lac_end, \
 lac_delete = u.lac_delete, lac_legal_basis = u.lac_legal_basis, ucpp_start = u.ucpp_start, \
 ucpp_end = u.ucpp_end, ucpp_delete = u.ucpp_delete, \
 ucpp_expected_delivery = u.ucpp_expected_delivery, \
 version = c.version + 1, update_time = $18 \
FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
 AS u (id, version, local_case_id, given_name, family_name, date_of_birth, cpp_start, \
 cpp_end, cpp_delete, lac_start, lac_end, lac_delete, lac_legal_basis, ucpp_start, ucpp_end, \
 ucpp_delete, ucpp_expected_delivery) \
WHERE c.id = u.id AND c.version = u.version";

/// Updates each of `rows` to its new content, version + 1, at `now`, where it is still at the
/// version read (inside the caller's transaction); returns how many were updated.
/// PostgreSQL: one statement over arrays of the columns. SQLite: one prepared UPDATE per row.
pub(crate) fn update_records(
    conn: &mut DbConnection,
    rows: &[ChangedRecord],
    now: i64,
) -> Result<usize, RegistryError> {
    use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text};
    if rows.is_empty() {
        return Ok(0);
    }
    if let DbConnection::Pg(pg) = conn {
        let int = |f: fn(&RecordContent) -> Option<i32>| -> Vec<Option<i32>> {
            rows.iter().map(|r| f(&r.content)).collect()
        };
        let text = |f: fn(&RecordContent) -> &str| -> Vec<&str> {
            rows.iter().map(|r| f(&r.content)).collect()
        };
        let updated = diesel::sql_query(UPDATE_FROM_ARRAYS)
            .bind::<Array<BigInt>, _>(rows.iter().map(|r| r.id).collect::<Vec<_>>())
            .bind::<Array<BigInt>, _>(rows.iter().map(|r| r.version).collect::<Vec<_>>())
            .bind::<Array<Nullable<Text>>, _>(
                rows.iter()
                    .map(|r| r.content.local_case_id.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind::<Array<Text>, _>(text(|c| &c.given_name))
            .bind::<Array<Text>, _>(text(|c| &c.family_name))
            .bind::<Array<Integer>, _>(
                rows.iter()
                    .map(|r| r.content.date_of_birth)
                    .collect::<Vec<_>>(),
            )
            .bind::<Array<Nullable<Integer>>, _>(int(|c| c.cpp_start))
            .bind::<Array<Nullable<Integer>>, _>(int(|c| c.cpp_end))
            .bind::<Array<Nullable<Integer>>, _>(int(|c| c.cpp_delete))
            .bind::<Array<Nullable<Integer>>, _>(int(|c| c.lac_start))
            .bind::<Array<Nullable<Integer>>, _>(int(|c| c.lac_end))
            .bind::<Array<Nullable<Integer>>, _>(int(|c| c.lac_delete))
            .bind::<Array<Nullable<Integer>>, _>(int(|c| c.lac_legal_basis))
            .bind::<Array<Nullable<Integer>>, _>(int(|c| c.ucpp_start))
            .bind::<Array<Nullable<Integer>>, _>(int(|c| c.ucpp_end))
            .bind::<Array<Nullable<Integer>>, _>(int(|c| c.ucpp_delete))
            .bind::<Array<Nullable<Integer>>, _>(int(|c| c.ucpp_expected_delivery))
            .bind::<BigInt, _>(now)
            .execute(pg)?;
        return Ok(updated);
    }
    let mut updated = 0;
    for row in rows {
        updated += diesel::update(
            child_records::table
                .filter(child_records::id.eq(row.id))
                .filter(child_records::version.eq(row.version)),
        )
        .set((
            &row.content,
            child_records::version.eq(row.version + 1),
            child_records::update_time.eq(now),
        ))
        .execute(conn)?;
    }
    Ok(updated)
}

/// One row of `recent_access_rows`: the number it is of, and the event.
#[derive(QueryableByName)]
struct RecentRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    nhs_number: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    access_time: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    accessor_key: String,
    #[diesel(sql_type = diesel::sql_types::Binary)]
    event: Vec<u8>,
}

/// PostgreSQL: the newest `limit` access events of mode `mode` of each of `numbers`, newest
/// first within each number, in one statement (a lateral index scan per number). `None` on
/// SQLite, which has no LATERAL and no round trip to save.
pub(crate) fn recent_access_rows(
    conn: &mut DbConnection,
    numbers: &[&str],
    mode: i32,
    limit: i64,
) -> Result<Option<Vec<(String, AccessEventRow)>>, RegistryError> {
    let DbConnection::Pg(pg) = conn else {
        return Ok(None);
    };
    let rows: Vec<RecentRow> = diesel::sql_query(
        "SELECT n.nhs_number, e.id, e.access_time, e.accessor_key, e.event \
         FROM unnest($1::text[]) AS n(nhs_number) CROSS JOIN LATERAL ( \
           SELECT id, access_time, accessor_key, event FROM access_events \
           WHERE access_events.nhs_number = n.nhs_number AND access_mode = $2 \
           ORDER BY access_time DESC, id DESC LIMIT $3) AS e \
         ORDER BY n.nhs_number, e.access_time DESC, e.id DESC",
    )
    .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(numbers)
    .bind::<diesel::sql_types::Integer, _>(mode)
    .bind::<diesel::sql_types::BigInt, _>(limit)
    .load(pg)?;
    Ok(Some(
        rows.into_iter()
            .map(|r| {
                (
                    r.nhs_number,
                    AccessEventRow {
                        id: r.id,
                        access_time: r.access_time,
                        accessor_key: r.accessor_key,
                        event: r.event,
                    },
                )
            })
            .collect(),
    ))
}

/// PostgreSQL: the enumeration guard's counts for every lookup of a batch in one statement (each
/// lookup's the same as `enumeration::check` reads, by the same index scans). `None` on SQLite,
/// where each lookup's own statement costs no round trip.
pub(crate) fn guard_counts(
    conn: &mut DbConnection,
    questions: &[super::enumeration::GuardQuestion],
) -> Result<Option<Vec<super::enumeration::GuardCounts>>, RegistryError> {
    use crate::domain::enumeration::{DAY, HOUR};
    use diesel::sql_types::{Array, BigInt, Nullable, Text};
    let DbConnection::Pg(pg) = conn else {
        return Ok(None);
    };
    let column = |f: fn(&super::enumeration::GuardQuestion) -> String| {
        questions.iter().map(f).collect::<Vec<String>>()
    };
    let keys = |f: fn(&super::enumeration::GuardQuestion) -> Option<String>| {
        questions.iter().map(f).collect::<Vec<Option<String>>>()
    };
    let ordinals: Vec<i64> = (0..questions.len())
        .map(|i| i64::try_from(i).unwrap_or(i64::MAX))
        .collect();
    let nows: Vec<i64> = questions.iter().map(|q| q.now).collect();
    let counts = diesel::sql_query(
        "SELECT \
           (SELECT max(t.throttled_until) FROM lookup_throttles t \
            WHERE t.subject IN (m.key_a, m.key_o) AND t.throttled_until > m.now) AS in_force, \
           (SELECT count(DISTINCT e.nhs_number) FROM access_events e \
            WHERE e.accessor_key = m.accessor AND e.access_time > m.now - $8 \
              AND e.nhs_number <> ALL(string_to_array(m.acc_excl, ','))) AS accessor_hour, \
           (SELECT count(DISTINCT e.nhs_number) FROM access_events e \
            WHERE e.accessor_key = m.accessor AND e.access_time > m.now - $9 \
              AND e.nhs_number <> ALL(string_to_array(m.acc_excl, ','))) AS accessor_day, \
           (SELECT count(DISTINCT e.nhs_number) FROM access_events e \
            WHERE e.organisation_ods_code = m.ods AND e.access_time > m.now - $8 \
              AND e.nhs_number <> ALL(string_to_array(m.org_excl, ','))) AS organisation_hour \
         FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], \
                     $7::text[], $10::text[]) \
           AS m(i, accessor, ods, key_a, key_o, now, acc_excl, org_excl) \
         ORDER BY m.i",
    )
    .bind::<Array<BigInt>, _>(&ordinals)
    .bind::<Array<Text>, _>(column(|q| q.accessor_key.clone()))
    .bind::<Array<Text>, _>(column(|q| q.ods_code.clone()))
    .bind::<Array<Nullable<Text>>, _>(keys(|q| q.accessor_throttle.clone()))
    .bind::<Array<Nullable<Text>>, _>(keys(|q| q.organisation_throttle.clone()))
    .bind::<Array<BigInt>, _>(&nows)
    .bind::<Array<Text>, _>(column(|q| q.accessor_excluded.clone()))
    .bind::<BigInt, _>(HOUR)
    .bind::<BigInt, _>(DAY)
    .bind::<Array<Text>, _>(column(|q| q.organisation_excluded.clone()))
    .load(pg)?;
    Ok(Some(counts))
}

/// One council's new last sequence (`take_sequence_ranges`).
#[derive(QueryableByName)]
struct LastSequence {
    #[diesel(sql_type = diesel::sql_types::Text)]
    ods_code: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    last_notification_sequence: i64,
}

/// PostgreSQL, inside a transaction: takes `wanted` more notification sequences of each council
/// (in code order, the one lock order) and returns each council's new last sequence, in two
/// statements whatever the number of councils: the rows locked in code order
/// (`ORDER BY … FOR UPDATE` locks as it returns them), then one UPDATE of them all. `None` on
/// SQLite (one writer, no round trips): `take_sequences` per council there.
pub(crate) fn take_sequence_ranges(
    conn: &mut DbConnection,
    wanted: &std::collections::BTreeMap<String, i64>,
) -> Result<Option<std::collections::HashMap<String, i64>>, RegistryError> {
    let DbConnection::Pg(pg) = conn else {
        return Ok(None);
    };
    let codes: Vec<&str> = wanted.keys().map(String::as_str).collect();
    let counts: Vec<i64> = wanted.values().copied().collect();
    diesel::sql_query(
        "SELECT ods_code FROM local_authorities WHERE ods_code = ANY($1) \
         ORDER BY ods_code FOR UPDATE",
    )
    .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(&codes)
    .execute(pg)?;
    let lasts: Vec<LastSequence> = diesel::sql_query(
        "UPDATE local_authorities AS la \
         SET last_notification_sequence = la.last_notification_sequence + v.n \
         FROM unnest($1::text[], $2::bigint[]) AS v(ods_code, n) \
         WHERE la.ods_code = v.ods_code \
         RETURNING la.ods_code, la.last_notification_sequence",
    )
    .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(&codes)
    .bind::<diesel::sql_types::Array<diesel::sql_types::BigInt>, _>(&counts)
    .load(pg)?;
    Ok(Some(
        lasts
            .into_iter()
            .map(|l| (l.ods_code, l.last_notification_sequence))
            .collect(),
    ))
}

/// Inside a transaction: takes `count` more notification sequences of council `ods_code` (locking
/// its row until commit) and returns the last of them, in one statement (UPDATE … RETURNING,
/// which diesel's MultiConnection cannot express).
pub(crate) fn take_sequences(
    conn: &mut DbConnection,
    ods_code: &str,
    count: i64,
) -> Result<i64, RegistryError> {
    use super::schema::local_authorities::dsl::{
        last_notification_sequence as last, local_authorities,
    };
    let update = || {
        diesel::update(local_authorities.find(ods_code))
            .set(last.eq(last + count))
            .returning(last)
    };
    Ok(match conn {
        DbConnection::Pg(c) => update().get_result(c)?,
        DbConnection::Sqlite(c) => update().get_result(c)?,
    })
}

/// Inside a transaction: tells other replicas, on commit, that council `ods_code` has new
/// notifications. SQLite serves one node, so there is no one to tell.
pub(crate) fn notify_on_commit(
    conn: &mut DbConnection,
    ods_code: &str,
) -> Result<(), RegistryError> {
    if let DbConnection::Pg(pg) = conn {
        diesel::sql_query("SELECT pg_notify($1, $2)")
            .bind::<diesel::sql_types::Text, _>(NOTIFY_CHANNEL)
            .bind::<diesel::sql_types::Text, _>(ods_code)
            .execute(pg)?;
    }
    Ok(())
}

/// `notify_on_commit` for every council of `ods_codes`, in one statement.
pub(crate) fn notify_all_on_commit(
    conn: &mut DbConnection,
    ods_codes: &[&str],
) -> Result<(), RegistryError> {
    if let DbConnection::Pg(pg) = conn {
        diesel::sql_query("SELECT pg_notify($1, code) FROM unnest($2) AS code")
            .bind::<diesel::sql_types::Text, _>(NOTIFY_CHANNEL)
            .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(ods_codes)
            .execute(pg)?;
    }
    Ok(())
}
