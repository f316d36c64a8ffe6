//! The floors the figures are divided by, measured by the benchmark itself on a database the
//! registry has migrated (through `serve`): the engine's own bulk load (COPY on PostgreSQL,
//! multi-row inserts in one transaction on SQLite) and its own point read plus insert in one
//! transaction. Plain diesel on our own connections, set up as the
//! registry sets up its own (same pragmas, same pool size), so a floor is what the engine can do
//! and not what the registry's code does. The tables below restate the columns of
//! `registry-service/migrations` that the floors touch; the registry's schema stays private.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cpis_proto::cpis::common::v1::{AccessMode, ChildRecord};
use cpis_proto::google::r#type::Date;
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use diesel::r2d2::{ManageConnection, Pool};

diesel::table! {
    child_records (id) {
        id -> BigInt,
        local_authority -> Text,
        nhs_number -> Text,
        local_case_id -> Nullable<Text>,
        given_name -> Text,
        family_name -> Text,
        date_of_birth -> Integer,
        cpp_start -> Nullable<Integer>,
        cpp_end -> Nullable<Integer>,
        cpp_delete -> Nullable<Integer>,
        lac_start -> Nullable<Integer>,
        lac_end -> Nullable<Integer>,
        lac_delete -> Nullable<Integer>,
        lac_legal_basis -> Nullable<Integer>,
        ucpp_start -> Nullable<Integer>,
        ucpp_end -> Nullable<Integer>,
        ucpp_delete -> Nullable<Integer>,
        ucpp_expected_delivery -> Nullable<Integer>,
        version -> BigInt,
        create_time -> BigInt,
        update_time -> BigInt,
    }
}

diesel::table! {
    access_events (id) {
        id -> BigInt,
        access_id -> Text,
        nhs_number -> Text,
        access_time -> BigInt,
        access_mode -> Integer,
        accessor_key -> Text,
        organisation_ods_code -> Text,
        care_setting -> Integer,
        event -> Binary,
    }
}

/// A connection to either engine; the floors' queries are written once for both.
#[derive(diesel::MultiConnection)]
pub enum FloorConnection {
    /// PostgreSQL.
    Pg(diesel::pg::PgConnection),
    /// SQLite.
    Sqlite(diesel::sqlite::SqliteConnection),
}

/// Opens connections configured as the registry configures its own, so that durability
/// settings (SQLite's synchronous=FULL above all) weigh on the floor as they do on the registry.
#[derive(Debug)]
struct Connector {
    url: String,
}

impl Connector {
    fn connect(&self) -> Result<FloorConnection, diesel::r2d2::Error> {
        use diesel::r2d2::Error;
        if let Some(path) = self.url.strip_prefix("sqlite://") {
            let mut conn = diesel::sqlite::SqliteConnection::establish(path)
                .map_err(Error::ConnectionError)?;
            conn.batch_execute(
                "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; \
                 PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000;",
            )
            .map_err(Error::QueryError)?;
            Ok(FloorConnection::Sqlite(conn))
        } else {
            let mut conn =
                diesel::pg::PgConnection::establish(&self.url).map_err(Error::ConnectionError)?;
            conn.batch_execute("SET statement_timeout = '60s'; SET lock_timeout = '10s'")
                .map_err(Error::QueryError)?;
            Ok(FloorConnection::Pg(conn))
        }
    }
}

impl ManageConnection for Connector {
    type Connection = FloorConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<FloorConnection, Self::Error> {
        Connector::connect(self)
    }

    fn is_valid(&self, conn: &mut FloorConnection) -> Result<(), Self::Error> {
        conn.batch_execute("SELECT 1")
            .map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, _conn: &mut FloorConnection) -> bool {
        false
    }
}

/// Days since 1970-01-01, the stored form of a calendar date.
fn days(date: &Date) -> anyhow::Result<i32> {
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).context("epoch")?;
    let month = u32::try_from(date.month)?;
    let day = u32::try_from(date.day)?;
    let date = chrono::NaiveDate::from_ymd_opt(date.year, month, day).context("a valid date")?;
    Ok(i32::try_from(date.signed_duration_since(epoch).num_days())?)
}

/// A child record as the registry stores it (every column but the id).
#[derive(Clone, Debug, Insertable, Queryable, Selectable)]
#[diesel(table_name = child_records, treat_none_as_default_value = false)]
struct RecordRow {
    local_authority: String,
    nhs_number: String,
    local_case_id: Option<String>,
    given_name: String,
    family_name: String,
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

impl RecordRow {
    /// The row a benchmark record (a child on a CPP) gets on its first write: version 1.
    fn of(council: &str, record: &ChildRecord) -> anyhow::Result<Self> {
        let plan = record
            .child_protection_plan
            .as_ref()
            .and_then(|p| p.period.as_ref());
        let day = |d: Option<&Date>| d.map(days).transpose();
        Ok(Self {
            local_authority: council.to_owned(),
            nhs_number: record.nhs_number.clone(),
            local_case_id: Some(record.local_case_id.clone()).filter(|c| !c.is_empty()),
            given_name: record.given_name.clone(),
            family_name: record.family_name.clone(),
            date_of_birth: days(record.date_of_birth.as_ref().context("date of birth")?)?,
            cpp_start: day(plan.and_then(|p| p.start_date.as_ref()))?,
            cpp_end: day(plan.and_then(|p| p.end_date.as_ref()))?,
            cpp_delete: day(plan.and_then(|p| p.delete_date.as_ref()))?,
            lac_start: None,
            lac_end: None,
            lac_delete: None,
            lac_legal_basis: None,
            ucpp_start: None,
            ucpp_end: None,
            ucpp_delete: None,
            ucpp_expected_delivery: None,
            version: 1,
            create_time: 0,
            update_time: 0,
        })
    }
}

/// Rows per INSERT statement on SQLite, as the registry's bulk path writes them.
const ROWS_PER_STATEMENT: usize = 500;

/// The engine's own best bulk load of `records` for council `council` into the migrated
/// database at `url` (rows/s), and what it was: on PostgreSQL one binary COPY of every row in one
/// statement (as `psql \copy` loads a file); on SQLite every row in one transaction, sorted by
/// NHS number, `ROWS_PER_STATEMENT` rows per prepared INSERT. No gRPC, no validation, no change
/// detection, no holding periods. The council must exist (the table's foreign key).
pub async fn bulk_rate(
    url: &str,
    council: &str,
    records: &[ChildRecord],
) -> anyhow::Result<BulkFloor> {
    let mut rows = records
        .iter()
        .map(|r| RecordRow::of(council, r))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let connector = Connector {
        url: url.to_owned(),
    };
    let count = rows.len();
    tokio::task::spawn_blocking(move || -> anyhow::Result<BulkFloor> {
        let mut conn = connector.connect()?;
        let backend = match &mut conn {
            FloorConnection::Pg(c) => diesel::select(
                diesel::dsl::sql::<diesel::sql_types::Integer>("pg_backend_pid()"),
            )
            .get_result::<i32>(c)?
            .to_string(),
            FloorConnection::Sqlite(_) => "self".to_owned(),
        };
        let cpu_before = cpu_seconds(&backend);
        let started = Instant::now();
        let what = match &mut conn {
            FloorConnection::Pg(c) => {
                diesel::copy_from(child_records::table)
                    .from_insertable(&rows)
                    .execute(c)?;
                "COPY of every row in one statement"
            }
            FloorConnection::Sqlite(c) => {
                rows.sort_by(|a, b| a.nhs_number.cmp(&b.nhs_number));
                c.transaction(|c| {
                    for part in rows.chunks(ROWS_PER_STATEMENT) {
                        diesel::insert_into(child_records::table)
                            .values(part)
                            .execute(c)?;
                    }
                    diesel::QueryResult::Ok(())
                })?;
                "multi-row INSERTs of 500, one transaction"
            }
        };
        Ok(BulkFloor {
            rate: count as f64 / started.elapsed().as_secs_f64(),
            what,
            cpu: cpu_seconds(&backend) - cpu_before,
        })
    })
    .await?
}

/// The engine's own bulk load, measured.
pub struct BulkFloor {
    /// Rows per second.
    pub rate: f64,
    /// How the rows were loaded.
    pub what: &'static str,
    /// CPU seconds the load took: of the database backend on PostgreSQL, of this process on
    /// SQLite.
    pub cpu: f64,
}

/// Empties the tables a bulk load writes, so the next load starts where the last one did.
pub async fn empty_records(url: &str) -> anyhow::Result<()> {
    let connector = Connector {
        url: url.to_owned(),
    };
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut conn = connector.connect()?;
        let sql = match conn {
            FloorConnection::Pg(_) => "TRUNCATE child_records, holding_periods",
            FloorConnection::Sqlite(_) => "DELETE FROM holding_periods; DELETE FROM child_records;",
        };
        conn.batch_execute(sql)?;
        Ok(())
    })
    .await?
}

/// CPU seconds a process has used (user and system), from `/proc/PID/stat`; 0 where it cannot
/// be read. Linux reports them in USER_HZ, which is 100 on every architecture it runs on.
pub fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name may hold spaces: the fields start after its closing parenthesis.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are the 14th and 15th fields; the 3rd is the first after the name.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// One backend process of the database.
#[derive(QueryableByName)]
struct Backend {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pid: i32,
}

/// CPU seconds used so far by the PostgreSQL backends serving the database at `url` (the
/// registry's pooled connections), on this machine; 0 for SQLite, which runs in-process, and for
/// a PostgreSQL elsewhere. A backend that exits between two readings takes its seconds with it.
pub async fn database_cpu_seconds(url: &str) -> anyhow::Result<f64> {
    if url.starts_with("sqlite://") {
        return Ok(0.0);
    }
    let connector = Connector {
        url: url.to_owned(),
    };
    tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        let mut conn = connector.connect()?;
        let backends: Vec<Backend> = diesel::sql_query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .load(&mut conn)?;
        // Only processes of this machine named postgres: a database elsewhere (another host, a
        // container's namespace) reports pids that are not, or are someone else's, here.
        Ok(backends
            .iter()
            .map(|b| b.pid.to_string())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim() == "postgres")
            })
            .map(|pid| cpu_seconds(&pid))
            .sum())
    })
    .await?
}

/// Every column of a stored record, read back as the registry reads a disclosure's records.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = child_records)]
#[allow(dead_code)] // read to be paid for, never looked at
struct StoredRecord {
    id: i64,
    #[diesel(embed)]
    row: RecordRow,
}

/// A pool on the registry's database, sized as the registry sizes its own: one connection on
/// SQLite (one writer), `max_connections` on PostgreSQL.
#[derive(Clone)]
pub struct FloorPool {
    pool: Pool<Connector>,
}

/// Numbers the floor's access events (their ids are unique in the table).
static NEXT_ACCESS: AtomicU64 = AtomicU64::new(0);

/// SplitMix64's finaliser: a bijection on u64 that scatters consecutive inputs.
fn scatter(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The `n`-th access id, shaped like the registry's (`acc-0-` and 32 hex digits) and, like its
/// random ones, landing anywhere in the unique index rather than always at its end, so the index
/// does the same work. Distinct for distinct `n` (the first half is a bijection of `n`).
fn access_id(n: u64) -> String {
    format!("acc-0-{:016x}{:016x}", scatter(n), scatter(!n))
}

impl FloorPool {
    /// Builds the pool without connecting.
    pub fn open(url: &str, max_connections: u32) -> Self {
        let size = if url.starts_with("sqlite://") {
            1
        } else {
            max_connections.max(1)
        };
        let pool = Pool::builder()
            .max_size(size)
            .min_idle(Some(0))
            .connection_timeout(Duration::from_secs(10))
            .test_on_check_out(false)
            .build_unchecked(Connector {
                url: url.to_owned(),
            });
        Self { pool }
    }

    /// The engine's own point read of `nhs_number`'s records and one access-event insert, in
    /// one transaction on a pooled connection: no visibility rules, notifications or
    /// recent-access query. Returns the records read.
    pub async fn read_and_insert(&self, nhs_number: String) -> anyhow::Result<usize> {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
            let mut conn = pool.get()?;
            let access_id = access_id(NEXT_ACCESS.fetch_add(1, Ordering::Relaxed));
            let read = conn.transaction(|conn| {
                let rows: Vec<StoredRecord> = child_records::table
                    .filter(child_records::nhs_number.eq(&nhs_number))
                    .select(StoredRecord::as_select())
                    .load(conn)?;
                diesel::insert_into(access_events::table)
                    .values((
                        access_events::access_id.eq(access_id),
                        access_events::nhs_number.eq(&nhs_number),
                        access_events::access_time.eq(0_i64),
                        access_events::access_mode.eq(AccessMode::ScheduledSilentRead as i32),
                        access_events::accessor_key.eq("floor"),
                        access_events::organisation_ods_code.eq("FLOOR"),
                        access_events::care_setting.eq(0),
                        access_events::event.eq(Vec::<u8>::new()),
                    ))
                    .execute(conn)?;
                diesel::QueryResult::Ok(rows.len())
            })?;
            Ok(read)
        })
        .await?
    }
}
