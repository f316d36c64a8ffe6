//! Group commit's engine-specific statements: a whole batch's recent accesses and enumeration
//! guard counts in one statement each on PostgreSQL (LATERAL), the guard counts in one
//! prepared-once statement a lookup on SQLite, and each council's notification sequence range
//! taken once per batch.

use diesel::prelude::*;

use crate::db::{DbConnection, models::AccessEventRow};
use crate::error::RegistryError;

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
    let rows: Vec<RecentRow> = crate::db::dialect::Prepared(
        diesel::sql_query(
            "SELECT n.nhs_number, e.id, e.access_time, e.accessor_key, e.event \
         FROM unnest($1::text[]) AS n(nhs_number) CROSS JOIN LATERAL ( \
           SELECT id, access_time, accessor_key, event FROM access_events \
           WHERE access_events.nhs_number = n.nhs_number AND access_mode = $2 \
           ORDER BY access_time DESC, id DESC LIMIT $3) AS e \
         ORDER BY n.nhs_number, e.access_time DESC, e.id DESC",
        )
        .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(numbers)
        .bind::<diesel::sql_types::Integer, _>(mode)
        .bind::<diesel::sql_types::BigInt, _>(limit),
    )
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

/// PostgreSQL: the enumeration guard's counts for every member of a batch (`guard_counts`),
/// over `enumeration_last_seen` (a row a distinct number, so a count reads no more rows than
/// the window's distinct children). The clinician's hour and day come from one scan of the
/// day (the hour is its tail), so
/// a member costs two index scans, not three. Prepared once per connection: its text never
/// varies, only its arrays. Each member's lists of numbers left out are split into arrays
/// once, in `x`; `OFFSET 0` keeps PostgreSQL from folding `x` into the scans, where the split
/// ran again for every row scanned and took half the statement's time (600 rows an
/// organisation: 40 ms a batch of 16 against 19 ms, `EXPLAIN ANALYZE`, BENCHMARKS).
const GUARD_COUNTS: &str = "SELECT \
       (SELECT max(t.throttled_until) FROM lookup_throttles t \
        WHERE t.subject IN (m.key_a, m.key_o) AND t.throttled_until > m.now) AS in_force, \
       a.accessor_hour, a.accessor_day, \
       (SELECT count(*) FROM enumeration_last_seen s \
        WHERE s.subject = 'organisation:' || m.ods AND s.last_seen > m.now - $8 \
          AND s.nhs_number <> ALL(x.org_excl)) AS organisation_hour \
     FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], \
                 $7::text[], $10::text[]) \
       AS m(i, accessor, ods, key_a, key_o, now, acc_excl, org_excl) \
     CROSS JOIN LATERAL ( \
       SELECT string_to_array(m.acc_excl, ',') AS acc_excl, \
              string_to_array(m.org_excl, ',') AS org_excl OFFSET 0) AS x \
     CROSS JOIN LATERAL ( \
       SELECT count(*) FILTER (WHERE s.last_seen > m.now - $8) AS accessor_hour, \
              count(*) AS accessor_day \
       FROM enumeration_last_seen s \
       WHERE s.subject = m.accessor AND s.last_seen > m.now - $9 \
         AND s.nhs_number <> ALL(x.acc_excl)) AS a \
     ORDER BY m.i";

/// The enumeration guard's counts for every lookup of a batch (each lookup's the same as
/// `enumeration::check` reads, by the same index scans). PostgreSQL: one statement for the
/// batch. SQLite: one statement a lookup (no round trip to save), of one fixed shape so it is
/// prepared once per connection (`check`'s lists of numbers make it new SQL every time).
pub(crate) fn guard_counts(
    conn: &mut DbConnection,
    questions: &[crate::db::enumeration::GuardQuestion],
) -> Result<Vec<crate::db::enumeration::GuardCounts>, RegistryError> {
    let pg = match conn {
        DbConnection::Pg(pg) => pg,
        DbConnection::Sqlite(sqlite) => {
            return questions
                .iter()
                .map(|question| sqlite_guard_counts(sqlite, question))
                .collect();
        }
    };
    let counts = crate::db::dialect::Prepared(bind_guard(GUARD_COUNTS, questions)).load(pg)?;
    Ok(counts)
}

/// `sql` (`GUARD_COUNTS`, or in tests a statement around it) with `questions` bound as its
/// arrays, a member an element.
fn bind_guard(
    sql: impl Into<String>,
    questions: &[crate::db::enumeration::GuardQuestion],
) -> diesel::query_builder::BoxedSqlQuery<'static, diesel::pg::Pg, diesel::query_builder::SqlQuery>
{
    use crate::domain::enumeration::{DAY, HOUR};
    use diesel::sql_types::{Array, BigInt, Nullable, Text};
    let column = |f: fn(&crate::db::enumeration::GuardQuestion) -> String| {
        questions.iter().map(f).collect::<Vec<String>>()
    };
    let keys = |f: fn(&crate::db::enumeration::GuardQuestion) -> Option<String>| {
        questions.iter().map(f).collect::<Vec<Option<String>>>()
    };
    let ordinals: Vec<i64> = (0..questions.len())
        .map(|i| i64::try_from(i).unwrap_or(i64::MAX))
        .collect();
    let nows: Vec<i64> = questions.iter().map(|q| q.now).collect();
    diesel::sql_query(sql)
        .into_boxed()
        .bind::<Array<BigInt>, _>(ordinals)
        .bind::<Array<Text>, _>(column(|q| q.accessor_key.clone()))
        .bind::<Array<Text>, _>(column(|q| q.ods_code.clone()))
        .bind::<Array<Nullable<Text>>, _>(keys(|q| q.accessor_throttle.clone()))
        .bind::<Array<Nullable<Text>>, _>(keys(|q| q.organisation_throttle.clone()))
        .bind::<Array<BigInt>, _>(nows)
        .bind::<Array<Text>, _>(column(|q| q.accessor_excluded.clone()))
        .bind::<BigInt, _>(HOUR)
        .bind::<BigInt, _>(DAY)
        .bind::<Array<Text>, _>(column(|q| q.organisation_excluded.clone()))
}

/// Whether a batch of one lookup should read its guard counts first (`guard_counts`) rather
/// than go straight to `enumeration::check`: on SQLite the counts are a statement prepared once,
/// cheaper than `check`'s (whose lists of numbers make new SQL each time). On PostgreSQL both are
/// one prepared statement (`check`'s lists are bound arrays); the counts would save one index
/// scan of three, not measured against the arrays and LATERAL join they add for one lookup.
pub(crate) fn counts_first_for_one(conn: &DbConnection) -> bool {
    matches!(conn, DbConnection::Sqlite(_))
}

diesel::define_sql_function! {
    /// SQLite's `instr(haystack, needle)`: where `needle` first starts in `haystack`, 0 if nowhere.
    fn instr(haystack: diesel::sql_types::Text, needle: diesel::sql_types::Text) -> diesel::sql_types::Integer;
}

/// SQLite: one lookup's guard counts (`guard_counts`) in diesel's query builder, with no list
/// of values in it, so diesel caches the prepared statement (a list makes new SQL each time, and
/// parsing it took about 5 % of a loaded registry's CPU).
fn sqlite_guard_counts(
    conn: &mut diesel::sqlite::SqliteConnection,
    question: &crate::db::enumeration::GuardQuestion,
) -> Result<crate::db::enumeration::GuardCounts, RegistryError> {
    use crate::db::schema::{enumeration_last_seen, lookup_throttles};
    use crate::domain::enumeration::{DAY, HOUR};
    use diesel::dsl::{count_star, max};
    use diesel::sql_types::Text;
    // No throttle key: no rule is on for this accessor, and `lets_through` reads nothing.
    if question.accessor_throttle.is_none() && question.organisation_throttle.is_none() {
        return Ok(crate::db::enumeration::GuardCounts::default());
    }
    // A comma-separated list of numbers ",a,b," holds ",n," exactly when n is one of them:
    // NHS numbers are ten digits (validated), never a comma.
    let not_in = |list: &str| {
        instr(
            format!(",{list},"),
            ",".into_sql::<Text>()
                .concat(enumeration_last_seen::nhs_number)
                .concat(","),
        )
        .eq(0)
    };
    let in_force = lookup_throttles::table
        .filter(
            lookup_throttles::subject
                .nullable()
                .eq(question.accessor_throttle.clone())
                .or(lookup_throttles::subject
                    .nullable()
                    .eq(question.organisation_throttle.clone())),
        )
        .filter(lookup_throttles::throttled_until.gt(question.now))
        .select(max(lookup_throttles::throttled_until))
        .single_value();
    let by_accessor = |window: i64| {
        enumeration_last_seen::table
            .filter(enumeration_last_seen::subject.eq(question.accessor_key.clone()))
            .filter(enumeration_last_seen::last_seen.gt(question.now.saturating_sub(window)))
            .filter(not_in(&question.accessor_excluded))
            .select(count_star())
            .single_value()
    };
    let by_organisation = enumeration_last_seen::table
        .filter(enumeration_last_seen::subject.eq(
            crate::domain::enumeration::organisation_subject(&question.ods_code),
        ))
        .filter(enumeration_last_seen::last_seen.gt(question.now.saturating_sub(HOUR)))
        .filter(not_in(&question.organisation_excluded))
        .select(count_star())
        .single_value();
    let (in_force, accessor_hour, accessor_day, organisation_hour) = diesel::select((
        in_force,
        by_accessor(HOUR),
        by_accessor(DAY),
        by_organisation,
    ))
    .get_result(conn)?;
    Ok(crate::db::enumeration::GuardCounts {
        in_force,
        accessor_hour,
        accessor_day,
        organisation_hour,
    })
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
    crate::db::dialect::Prepared(
        diesel::sql_query(
            "SELECT ods_code FROM local_authorities WHERE ods_code = ANY($1) \
             ORDER BY ods_code FOR UPDATE",
        )
        .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(&codes),
    )
    .execute(pg)?;
    let lasts: Vec<LastSequence> = crate::db::dialect::Prepared(
        diesel::sql_query(
            "UPDATE local_authorities AS la \
         SET last_notification_sequence = la.last_notification_sequence + v.n \
         FROM unnest($1::text[], $2::bigint[]) AS v(ods_code, n) \
         WHERE la.ods_code = v.ods_code \
         RETURNING la.ods_code, la.last_notification_sequence",
        )
        .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(&codes)
        .bind::<diesel::sql_types::Array<diesel::sql_types::BigInt>, _>(&counts),
    )
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
/// which diesel's MultiConnection cannot express). On PostgreSQL written out, so it is prepared
/// once per connection: diesel never caches an UPDATE, and a lone lookup's was parsed and
/// planned every time (0.1 ms of PostgreSQL's time, by its statement log).
pub(crate) fn take_sequences(
    conn: &mut DbConnection,
    ods_code: &str,
    count: i64,
) -> Result<i64, RegistryError> {
    use crate::db::schema::local_authorities::dsl::{
        last_notification_sequence as last, local_authorities,
    };
    Ok(match conn {
        DbConnection::Pg(pg) => {
            #[derive(QueryableByName)]
            struct Last {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                last_notification_sequence: i64,
            }
            let row: Last = crate::db::dialect::Prepared(
                diesel::sql_query(
                    "UPDATE local_authorities \
                     SET last_notification_sequence = last_notification_sequence + $2 \
                     WHERE ods_code = $1 RETURNING last_notification_sequence",
                )
                .bind::<diesel::sql_types::Text, _>(ods_code)
                .bind::<diesel::sql_types::BigInt, _>(count),
            )
            .get_result(pg)?;
            row.last_notification_sequence
        }
        DbConnection::Sqlite(sqlite) => diesel::update(local_authorities.find(ods_code))
            .set(last.eq(last + count))
            .returning(last)
            .get_result(sqlite)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::panic)] // tests: a failed expectation is a failed test
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use diesel::connection::InstrumentationEvent;
    use diesel::connection::SimpleConnection as _;

    use super::*;
    use crate::db::dialect::{INSERT_ROWS, LastSeenKey};
    use crate::db::enumeration::GuardQuestion;

    /// A new database of `backend` with the registry's schema and a connection to it, or `None`
    /// where that engine is not available to the tests.
    fn migrated(
        backend: cpis_testkit::db::Backend,
    ) -> Option<(cpis_testkit::db::TestDb, DbConnection)> {
        let test_db = cpis_testkit::db::TestDb::create(backend)?;
        let url = crate::db::DatabaseUrl::parse(&test_db.url).expect("url");
        let mut conn = crate::db::dialect::connect(&url).expect("connect");
        crate::db::dialect::run_migrations(&mut conn).expect("migrate");
        Some((test_db, conn))
    }

    /// A line of PostgreSQL's `EXPLAIN`.
    #[derive(QueryableByName)]
    struct PlanLine {
        #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
        line: String,
    }

    /// A row of SQLite's `EXPLAIN QUERY PLAN` (its description).
    #[derive(QueryableByName)]
    struct PlanRow {
        #[diesel(sql_type = diesel::sql_types::Text)]
        detail: String,
    }

    /// A lookup's guard question with `excluded` numbers left out of its counts.
    fn question(excluded: &[&str]) -> GuardQuestion {
        GuardQuestion {
            accessor_key: "person:555000000001".into(),
            ods_code: "RXX01".into(),
            accessor_throttle: Some("person:555000000001".into()),
            organisation_throttle: Some("organisation:RXX01".into()),
            now: 1_800_000_000_000_000,
            accessor_excluded: excluded.join(","),
            organisation_excluded: excluded.join(","),
        }
    }

    /// Every row of `enumeration_last_seen`, in key order.
    fn last_seen(conn: &mut DbConnection) -> Vec<(String, String, i64)> {
        use crate::db::schema::enumeration_last_seen;
        enumeration_last_seen::table
            .order((
                enumeration_last_seen::subject,
                enumeration_last_seen::nhs_number,
            ))
            .load(conn)
            .expect("last seen")
    }

    /// Records `rows` in a transaction of their own (one insert statement).
    fn record(conn: &mut DbConnection, rows: &[crate::db::models::NewAccessEvent]) {
        conn.transaction(|conn| crate::db::dialect::insert_access_events(conn, rows))
            .expect("accesses");
    }

    /// A row of `enumeration_last_seen`, as `last_seen` reads it.
    fn seen_row(subject: &str, nhs: &str, at: i64) -> (String, String, i64) {
        (subject.to_owned(), nhs.to_owned(), at)
    }

    /// An access of `nhs` by `accessor` of organisation RXX01 at `at`; `i` keeps its id apart.
    fn access(i: i64, nhs: &str, accessor: &str, at: i64) -> crate::db::models::NewAccessEvent {
        crate::db::models::NewAccessEvent {
            access_id: format!("access-{i}"),
            nhs_number: nhs.to_owned(),
            access_time: at,
            access_mode: 1,
            accessor_key: accessor.to_owned(),
            organisation_ods_code: "RXX01".to_owned(),
            care_setting: 1,
            event: Vec::new(),
        }
    }

    /// PostgreSQL: each hand-written statement of a batch (recent accesses, the sequence
    /// ranges' lock and update, a lone council's sequence update, the access events' insert and
    /// the notifications' insert with its NOTIFY) is prepared once per connection and reused,
    /// whatever the number of rows. Before, all were parsed again every batch: diesel never
    /// caches a `sql_query`, an UPDATE, nor a multi-row INSERT (new SQL for each number of rows),
    /// and its `execute` never caches at all. The rows and the NOTIFY must still arrive.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_batch_statements_are_prepared_once() {
        use crate::db::models::{NewAccessEvent, NotificationRow};
        use crate::db::schema::{access_events, local_authorities, notifications};
        let Some((test_db, mut conn)) = migrated(cpis_testkit::db::Backend::Postgres) else {
            return;
        };
        let mut listener = PgConnection::establish(&test_db.url).expect("listener");
        diesel::sql_query(format!("LISTEN {}", crate::db::dialect::NOTIFY_CHANNEL))
            .execute(&mut listener)
            .expect("listen");
        diesel::insert_into(local_authorities::table)
            .values((
                local_authorities::ods_code.eq("RXX01"),
                local_authorities::name.eq("Test council"),
                local_authorities::emergency_duty_phone.eq("0300 000 0000"),
                local_authorities::update_time.eq(0_i64),
                local_authorities::last_notification_sequence.eq(0_i64),
                local_authorities::acknowledged_sequence.eq(0_i64),
            ))
            .execute(&mut conn)
            .expect("a council");
        let markers = [
            "AS n(nhs_number)",
            "FOR UPDATE",
            "+ v.n",
            "+ $2 WHERE ods_code",
            "INSERT INTO access_events",
            "WITH queued AS",
        ];
        let cached: Arc<[AtomicUsize; 6]> = Arc::new(Default::default());
        let counter = cached.clone();
        let DbConnection::Pg(pg) = &mut conn else {
            panic!("a PostgreSQL URL gives a PostgreSQL connection");
        };
        pg.set_instrumentation(move |event: InstrumentationEvent<'_>| {
            if let InstrumentationEvent::CacheQuery { sql, .. } = event {
                for (marker, count) in markers.iter().zip(counter.iter()) {
                    if sql.contains(marker) {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        });
        let mut sequence = 0;
        for round in 0..3_i64 {
            let size = usize::try_from(round + 1).expect("small");
            conn.transaction(|conn| {
                let wanted = std::collections::BTreeMap::from([("RXX01".to_owned(), round + 1)]);
                take_sequence_ranges(conn, &wanted)?;
                let last = take_sequences(conn, "RXX01", round + 1)?;
                let events: Vec<NewAccessEvent> = (0..size)
                    .map(|i| NewAccessEvent {
                        access_id: format!("prepared-{round}-{i}"),
                        nhs_number: "9990000018".to_owned(),
                        access_time: 1_800_000_000_000_000 + round,
                        access_mode: 2,
                        accessor_key: "person:555000000001".to_owned(),
                        organisation_ods_code: "RXX01".to_owned(),
                        care_setting: 3,
                        event: vec![u8::try_from(i).expect("small"); 3],
                    })
                    .collect();
                crate::db::dialect::insert_access_events(conn, &events)?;
                recent_access_rows(conn, &["9990000018", "9990000026"], 1, 5)?;
                let queued: Vec<NotificationRow> = (0..size)
                    .map(|_| {
                        sequence += 1;
                        NotificationRow {
                            local_authority: "RXX01".to_owned(),
                            sequence,
                            create_time: last,
                            notification: vec![7; 2],
                        }
                    })
                    .collect();
                crate::db::dialect::queue_notifications(conn, &queued)?;
                Ok::<_, RegistryError>(())
            })
            .expect("a batch's statements");
        }
        let prepared: Vec<usize> = cached.iter().map(|c| c.load(Ordering::SeqCst)).collect();
        assert_eq!(
            prepared,
            [1, 1, 1, 1, 1, 1],
            "each of {markers:?} prepared once over three batches of 1, 2 and 3 rows"
        );
        // Every row went in, in the order given, each value in its own column.
        type Stored = (String, String, i64, i32, String, String, i32, Vec<u8>);
        let stored: Vec<Stored> = access_events::table
            .order(access_events::id)
            .select((
                access_events::access_id,
                access_events::nhs_number,
                access_events::access_time,
                access_events::access_mode,
                access_events::accessor_key,
                access_events::organisation_ods_code,
                access_events::care_setting,
                access_events::event,
            ))
            .load(&mut conn)
            .expect("events");
        let ids: Vec<&str> = stored.iter().map(|row| row.0.as_str()).collect();
        assert_eq!(
            ids,
            [
                "prepared-0-0",
                "prepared-1-0",
                "prepared-1-1",
                "prepared-2-0",
                "prepared-2-1",
                "prepared-2-2"
            ]
        );
        assert_eq!(
            stored[5],
            (
                "prepared-2-2".to_owned(),
                "9990000018".to_owned(),
                1_800_000_000_000_002,
                2,
                "person:555000000001".to_owned(),
                "RXX01".to_owned(),
                3,
                vec![2; 3]
            )
        );
        let sequences: Vec<i64> = notifications::table
            .order(notifications::sequence)
            .select(notifications::sequence)
            .load(&mut conn)
            .expect("notifications");
        assert_eq!(sequences, [1, 2, 3, 4, 5, 6]);
        let taken: i64 = local_authorities::table
            .select(local_authorities::last_notification_sequence)
            .first(&mut conn)
            .expect("council");
        assert_eq!(taken, 12, "both ways of taking sequences, 2 x (1 + 2 + 3)");
        assert!(
            matches!(
                take_sequences(&mut conn, "RZZ99", 1),
                Err(RegistryError::Database(diesel::result::Error::NotFound))
            ),
            "a council without a row has no sequences to take"
        );
        // One NOTIFY a committed batch, naming the council (PostgreSQL delivers them on commit).
        let mut heard = Vec::new();
        for _ in 0..100 {
            for notification in listener.notifications_iter() {
                heard.push(notification.expect("notification").payload);
            }
            if heard.len() >= 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(heard, ["RXX01", "RXX01", "RXX01"]);
    }

    /// PostgreSQL: the guard statement splits each member's lists of numbers left out once
    /// (`x`), not again for every row its scans read: folded into the scans, the split took half
    /// the statement's time once an organisation's hour held a few hundred lookups.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_guard_splits_each_list_once() {
        use diesel::sql_types::{Array, BigInt, Nullable, Text};
        let Some((_test_db, mut conn)) = migrated(cpis_testkit::db::Backend::Postgres) else {
            return;
        };
        let DbConnection::Pg(pg) = &mut conn else {
            panic!("a PostgreSQL URL gives a PostgreSQL connection");
        };
        let two = |a: &str, b: &str| vec![a.to_owned(), b.to_owned()];
        let plan: Vec<PlanLine> =
            diesel::sql_query(format!("EXPLAIN (VERBOSE, COSTS OFF) {GUARD_COUNTS}"))
                .bind::<Array<BigInt>, _>(vec![0_i64, 1])
                .bind::<Array<Text>, _>(two("person:1", "person:2"))
                .bind::<Array<Text>, _>(two("RXX01", "RXX01"))
                .bind::<Array<Nullable<Text>>, _>(vec![Some("person:1".to_owned()), None])
                .bind::<Array<Nullable<Text>>, _>(vec![Some("organisation:RXX01".to_owned()), None])
                .bind::<Array<BigInt>, _>(vec![1_800_000_000_000_000_i64; 2])
                .bind::<Array<Text>, _>(two("", "9990000018"))
                .bind::<BigInt, _>(crate::domain::enumeration::HOUR)
                .bind::<BigInt, _>(crate::domain::enumeration::DAY)
                .bind::<Array<Text>, _>(two("", "9990000018,9990000026"))
                .load(pg)
                .expect("the guard statement's plan");
        let plan: Vec<String> = plan.into_iter().map(|p| p.line).collect();
        // The split is a node of its own (the `Result` under each member), and the scans'
        // filters read its output: EXPLAIN VERBOSE prints such a reference in double
        // parentheses, `ALL ((string_to_array(…)))`, and a split done by the filter itself in
        // single ones, `ALL (string_to_array(…))`, which the folded statement's plan showed.
        // (A plan that kept `x` as a scan of its own would print `ALL (x.…)`.)
        let filters: Vec<&String> = plan
            .iter()
            .filter(|l| l.contains("nhs_number <> ALL"))
            .collect();
        assert_eq!(
            filters.len(),
            2,
            "both scans leave the lists out: {plan:#?}"
        );
        assert!(
            filters.iter().all(|l| !l.contains("ALL (string_to_array(")),
            "no scan splits a list again for each row it reads: {plan:#?}"
        );
        assert!(
            filters
                .iter()
                .all(|l| l.contains("ALL ((string_to_array(") || l.contains("ALL (x.")),
            "each scan reads the lists split once a member: {plan:#?}"
        );
    }

    /// SQLite: a batch's access events go in one row a statement of their own, in the batch's
    /// transaction, prepared once per connection. diesel's own multi-row insert on SQLite runs
    /// the rows one by one inside a SAVEPOINT of its own, and inside a savepoint SQLite copies
    /// every page it first touches to a sub-journal (7.6 % of a loaded registry's CPU).
    #[test]
    fn sqlite_batch_inserts_open_no_savepoint() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = crate::db::DatabaseUrl::Sqlite(dir.path().join("inserts.db"));
        let mut conn = crate::db::dialect::connect(&url).expect("connect");
        crate::db::dialect::run_migrations(&mut conn).expect("migrate");
        let (prepared, nested) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (prepared_seen, nested_seen) = (prepared.clone(), nested.clone());
        let DbConnection::Sqlite(sqlite) = &mut conn else {
            panic!("a SQLite URL gives a SQLite connection");
        };
        sqlite.set_instrumentation(move |event: InstrumentationEvent<'_>| match event {
            InstrumentationEvent::CacheQuery { sql, .. }
                if sql.contains("INSERT INTO `access_events`") =>
            {
                prepared_seen.fetch_add(1, Ordering::SeqCst);
            }
            InstrumentationEvent::BeginTransaction { depth, .. } if depth.get() > 1 => {
                nested_seen.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        });
        let event = |i: usize| crate::db::models::NewAccessEvent {
            access_id: format!("insert-test-{i}"),
            nhs_number: "9990000018".to_owned(),
            access_time: 1_800_000_000_000_000 + i64::try_from(i).expect("small"),
            access_mode: 1,
            accessor_key: "person:555000000001".to_owned(),
            organisation_ods_code: "RXX01".to_owned(),
            care_setting: 1,
            event: Vec::new(),
        };
        let mut next = 0;
        for size in [1, 3, 2, 5] {
            let rows: Vec<_> = (next..next + size).map(event).collect();
            next += size;
            let inserted = conn
                .transaction(|conn| crate::db::dialect::insert_access_events(conn, &rows))
                .expect("insert");
            assert_eq!(inserted, size, "every row of a batch of {size}");
        }
        let stored: i64 = crate::db::schema::access_events::table
            .count()
            .get_result(&mut conn)
            .expect("count");
        assert_eq!(stored, 11, "every row stored");
        assert_eq!(
            nested.load(Ordering::SeqCst),
            0,
            "no savepoint in a batch's transaction"
        );
        assert_eq!(
            prepared.load(Ordering::SeqCst),
            1,
            "batches of four sizes, one preparation"
        );
    }

    cpis_testkit::both_backends!(guard_counts_are_right_and_prepared_once);

    /// The guard statement counts what `check` counts (each window, the listed numbers left
    /// out, the latest throttle in force) and is prepared once per connection whatever the
    /// lists' lengths. Before, every lookup's guard statement was new SQL, parsed and planned
    /// again: on SQLite because its lists of numbers made new text, on PostgreSQL because
    /// diesel never caches a `sql_query` (now `dialect::Prepared`).
    async fn guard_counts_are_right_and_prepared_once(backend: cpis_testkit::db::Backend) {
        use crate::domain::enumeration::{DAY, HOUR};
        let Some((_test_db, mut conn)) = migrated(backend) else {
            return;
        };
        // The clinician looked up a, b and c a minute ago, a again half an hour ago, d two hours
        // ago and f a day and a minute ago; a colleague in the same organisation looked up e a
        // minute ago.
        let (a, b, c, d, e, f) = (
            "9990000018",
            "9990000026",
            "9990000034",
            "9990000042",
            "9990000050",
            "9990000069",
        );
        let asked = question(&[]);
        let now = asked.now;
        let colleague_key = "person:555000000002".to_owned();
        let minute = 60_000_000;
        let looked_up: Vec<crate::db::models::NewAccessEvent> = [
            (a, &asked.accessor_key, now - minute),
            (b, &asked.accessor_key, now - minute),
            (c, &asked.accessor_key, now - minute),
            (a, &asked.accessor_key, now - 30 * minute),
            (d, &asked.accessor_key, now - 2 * HOUR),
            (f, &asked.accessor_key, now - DAY - minute),
            (e, &colleague_key, now - minute),
        ]
        .iter()
        .enumerate()
        .map(
            |(i, (nhs, accessor, at))| crate::db::models::NewAccessEvent {
                access_id: format!("guard-test-{i}"),
                nhs_number: (*nhs).to_owned(),
                access_time: *at,
                access_mode: 1,
                accessor_key: (*accessor).clone(),
                organisation_ods_code: asked.ods_code.clone(),
                care_setting: 1,
                event: Vec::new(),
            },
        )
        .collect();
        conn.transaction(|conn| crate::db::dialect::insert_access_events(conn, &looked_up))
            .expect("accesses");
        let cached = Arc::new(AtomicUsize::new(0));
        let counter = cached.clone();
        // Only the guard statement (the test's own inserts are cached too): SQLite's alone
        // calls instr, PostgreSQL's alone string_to_array.
        let count_guard = move |event: InstrumentationEvent<'_>| {
            if matches!(event, InstrumentationEvent::CacheQuery { sql, .. }
                if sql.contains("instr(") || sql.contains("string_to_array"))
            {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        };
        match &mut conn {
            DbConnection::Sqlite(sqlite) => sqlite.set_instrumentation(count_guard),
            DbConnection::Pg(pg) => pg.set_instrumentation(count_guard),
        }
        // The clinician's lists differing from the organisation's, and the colleague asking
        // in the same batch, tell the statement's arrays and members apart.
        let split = GuardQuestion {
            accessor_excluded: a.to_owned(),
            organisation_excluded: e.to_owned(),
            ..question(&[])
        };
        let colleague = GuardQuestion {
            accessor_key: colleague_key.clone(),
            accessor_throttle: Some(colleague_key.clone()),
            ..question(&[])
        };
        let questions = [
            question(&[]),
            question(&[a]),
            question(&[a, b]),
            question(&[a, b, c]),
            split,
            colleague,
        ];
        let counts = guard_counts(&mut conn, &questions).expect("counts");
        let distinct: Vec<_> = counts
            .iter()
            .map(|n| (n.accessor_hour, n.accessor_day, n.organisation_hour))
            .collect();
        // The hour leaves d out, the day keeps it and leaves f out; a counts once; the
        // organisation counts e too.
        assert_eq!(
            distinct,
            [
                (Some(3), Some(4), Some(4)),
                (Some(2), Some(3), Some(3)),
                (Some(1), Some(2), Some(2)),
                (Some(0), Some(1), Some(1)),
                (Some(2), Some(3), Some(3)),
                (Some(1), Some(1), Some(4)),
            ],
            "each window, each list's numbers left out, and only those"
        );
        assert!(counts.iter().all(|n| n.in_force.is_none()), "{counts:?}");

        // A throttle in force on the clinician, an expired one on the organisation.
        for (subject, until) in [
            (asked.accessor_throttle.clone(), now + 100),
            (asked.organisation_throttle.clone(), now - 1),
        ] {
            diesel::insert_into(crate::db::schema::lookup_throttles::table)
                .values(crate::db::models::ThrottleRow {
                    subject: subject.expect("a key"),
                    throttled_until: until,
                })
                .execute(&mut conn)
                .expect("throttle");
        }
        let again = guard_counts(&mut conn, &questions).expect("counts again");
        let in_force: Vec<_> = again.iter().map(|n| n.in_force).collect();
        assert_eq!(
            in_force,
            [Some(now + 100); 5]
                .into_iter()
                .chain([None])
                .collect::<Vec<_>>(),
            "the clinician's throttle in force, not the organisation's expired one"
        );
        if backend == cpis_testkit::db::Backend::Sqlite {
            // No rule on: nothing to count, nothing read (SQLite asks one lookup at a time;
            // PostgreSQL's batch statement is asked only when some member has a rule on).
            let off = GuardQuestion {
                accessor_throttle: None,
                organisation_throttle: None,
                ..question(&[a])
            };
            let none = guard_counts(&mut conn, &[off]).expect("counts");
            assert!(none.iter().all(|n| n.accessor_day.is_none()), "{none:?}");
        }
        assert_eq!(
            cached.load(Ordering::SeqCst),
            1,
            "every guard statement (twelve on SQLite, two on PostgreSQL) from one preparation"
        );
    }

    cpis_testkit::both_backends!(guard_reads_each_number_once);

    /// The guard's counts read each subject's numbers once, however often each was looked
    /// up. Before, they read every access in the window, so one clinician re-opening the same
    /// child all day made every count of theirs and of their organisation dearer (a benchmark's
    /// hour held four lookups a child). The trigger keeps each subject's latest access, never
    /// moved back by an older one written later; the counts agree with what was looked up.
    async fn guard_reads_each_number_once(backend: cpis_testkit::db::Backend) {
        use crate::domain::enumeration::HOUR;
        let Some((_test_db, mut conn)) = migrated(backend) else {
            return;
        };
        let asked = question(&[]);
        let (now, key) = (asked.now, asked.accessor_key.clone());
        let colleague = "person:555000000002".to_owned();
        let minute = 60_000_000;
        let (a, b, c) = ("9990000018", "9990000026", "9990000034");
        // a a minute ago; b 200 times in the last 20 minutes; the colleague c 5 minutes ago;
        // then, in a statement of its own, a two hours ago (older, written later).
        let mut rows = vec![access(0, a, &key, now - minute)];
        rows.extend((1..=200).map(|i| access(i, b, &key, now - 20 * minute + i * 1_000)));
        rows.push(access(201, c, &colleague, now - 5 * minute));
        let older = [access(202, a, &key, now - 2 * HOUR)];
        record(&mut conn, &rows);
        record(&mut conn, &older);
        let seen = last_seen(&mut conn);
        assert_eq!(
            seen,
            [
                seen_row("organisation:RXX01", a, now - minute),
                seen_row("organisation:RXX01", b, now - 20 * minute + 200_000),
                seen_row("organisation:RXX01", c, now - 5 * minute),
                seen_row(&key, a, now - minute),
                seen_row(&key, b, now - 20 * minute + 200_000),
                seen_row(&colleague, c, now - 5 * minute),
            ],
            "each subject's numbers once, each at its latest access"
        );
        let questions = [question(&[]), question(&[b])];
        let counts: Vec<_> = guard_counts(&mut conn, &questions)
            .expect("counts")
            .iter()
            .map(|n| (n.accessor_hour, n.accessor_day, n.organisation_hour))
            .collect();
        assert_eq!(
            counts,
            [(Some(2), Some(2), Some(3)), (Some(1), Some(1), Some(2))],
            "distinct numbers, each list's left out"
        );

        // What the counts read: about the window's distinct numbers, not its 202 accesses.
        match &mut conn {
            DbConnection::Pg(pg) => {
                let plan: Vec<PlanLine> = bind_guard(
                    format!("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {GUARD_COUNTS}"),
                    &questions,
                )
                .load(pg)
                .expect("the guard statement's plan");
                let plan: Vec<String> = plan.into_iter().map(|p| p.line).collect();
                // Each scan's rows (returned and filtered out), over all its loops.
                let figure = |line: &str, label: &str| -> Option<u64> {
                    let rest = &line[line.find(label)? + label.len()..];
                    rest.split(|ch: char| !ch.is_ascii_digit())
                        .next()?
                        .parse()
                        .ok()
                };
                let mut read = 0;
                let mut scans = 0;
                for (i, line) in plan.iter().enumerate() {
                    if !line.contains(" Scan ")
                        || !(line.contains("access") || line.contains("enumeration"))
                    {
                        continue;
                    }
                    scans += 1;
                    let loops = figure(line, "loops=").unwrap_or(1);
                    let removed = plan
                        .iter()
                        .skip(i + 1)
                        .take_while(|l| !l.contains("->"))
                        .find_map(|l| figure(l, "Rows Removed by Filter: "))
                        .unwrap_or(0);
                    read += (figure(line, "rows=").unwrap_or(0) + removed) * loops;
                }
                assert!(scans >= 2, "the counts' scans: {plan:#?}");
                // Two members, each with 2 of the clinician's numbers and 3 of the organisation's.
                assert!(read <= 12, "{read} rows read for 3 children: {plan:#?}");
            }
            DbConnection::Sqlite(sqlite) => {
                let statement = Arc::new(std::sync::Mutex::new(String::new()));
                let captured = statement.clone();
                sqlite.set_instrumentation(move |event: InstrumentationEvent<'_>| {
                    if let InstrumentationEvent::StartQuery { query, .. } = event {
                        let sql = query.to_string();
                        if sql.contains("instr(")
                            && let Ok(mut statement) = captured.lock()
                        {
                            *statement = sql;
                        }
                    }
                });
                guard_counts(&mut conn, &questions[..1]).expect("counts");
                let sql = statement.lock().expect("captured").clone();
                let sql = sql
                    .split(" -- binds:")
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let plan: Vec<String> = diesel::sql_query(format!("EXPLAIN QUERY PLAN {sql}"))
                    .load::<PlanRow>(&mut conn)
                    .expect("the guard statement's plan")
                    .into_iter()
                    .map(|p| p.detail)
                    .collect();
                let windows = plan
                    .iter()
                    .filter(|d| {
                        d.starts_with("SEARCH") && d.contains("enumeration_last_seen_window")
                    })
                    .count();
                assert_eq!(
                    windows, 3,
                    "each count a search of the last-seen index: {plan:#?}"
                );
                assert!(
                    plan.iter()
                        .all(|d| !d.starts_with("SCAN") || d == "SCAN CONSTANT ROW"),
                    "no table scanned whole: {plan:#?}"
                );
            }
        }
    }

    cpis_testkit::both_backends!(the_backfill_fills_a_day_and_moves_no_row_back);

    /// Migration 000009 fills `enumeration_last_seen` with what the guard's day (and an hour's
    /// margin) can still count from accesses recorded before 000008's trigger, and leaves a
    /// later access the trigger recorded as it is. Times are the real clock's: the migration
    /// reads the database's.
    async fn the_backfill_fills_a_day_and_moves_no_row_back(backend: cpis_testkit::db::Backend) {
        let Some(test_db) = cpis_testkit::db::TestDb::create(backend) else {
            return;
        };
        let url = crate::db::DatabaseUrl::parse(&test_db.url).expect("url");
        let mut conn = crate::db::dialect::connect(&url).expect("connect");
        let hour = crate::domain::enumeration::HOUR;
        let now = crate::clock::Clock::system().now_micros();
        let (a, b, c) = ("9990000018", "9990000026", "9990000034");
        let key = "person:555000000001";
        let event = |i: i64, nhs: &str, at: i64| access(i, nhs, key, at);
        // Before the trigger: a two hours ago, b 24½ hours ago, c 26 hours ago.
        crate::db::dialect::run_migrations_until(&mut conn, "000008", false).expect("to 000007");
        record(
            &mut conn,
            &[
                event(0, a, now - 2 * hour),
                event(1, b, now - 49 * hour / 2),
                event(2, c, now - 26 * hour),
            ],
        );
        // The trigger, then a again an hour ago.
        let ran =
            crate::db::dialect::run_migrations_until(&mut conn, "000008", true).expect("000008");
        assert_eq!(ran.len(), 1, "{ran:?}");
        record(&mut conn, &[event(3, a, now - hour)]);
        crate::db::dialect::run_migrations(&mut conn).expect("the rest");
        let seen = last_seen(&mut conn);
        assert_eq!(
            seen,
            [
                seen_row("organisation:RXX01", a, now - hour),
                seen_row("organisation:RXX01", b, now - 49 * hour / 2),
                seen_row(key, a, now - hour),
                seen_row(key, b, now - 49 * hour / 2),
            ],
            "the last day's numbers (and the margin's), each at its latest access; nothing older"
        );
    }

    /// Every chunk of one pass of the prune at `now`, as the upkeep task runs them: the rows
    /// each deleted and the key it handed on. A pass that never ends fails the test.
    fn prune_pass(conn: &mut DbConnection, now: i64) -> Vec<(usize, Option<LastSeenKey>)> {
        let mut chunks = Vec::new();
        let mut after = LastSeenKey::default();
        for _ in 0..100 {
            let (deleted, next) =
                crate::db::enumeration::prune_chunk(conn, now, &after).expect("prune");
            chunks.push((deleted, next.clone()));
            match next {
                Some(key) => after = key,
                None => return chunks,
            }
        }
        panic!("a pass of more than 100 chunks: {chunks:?}");
    }

    /// `n` children looked up by `key` at `at`, as accesses numbered from `first`, recorded
    /// `INSERT_ROWS` at a time.
    fn record_many(conn: &mut DbConnection, first: i64, n: i64, key: &str, at: i64) {
        let rows: Vec<_> = (first..first + n)
            .map(|i| access(i, &format!("9{i:09}"), key, at))
            .collect();
        for chunk in rows.chunks(INSERT_ROWS) {
            record(conn, chunk);
        }
    }

    /// A migrated database holding `children` children looked up just now, its statistics
    /// gathered, for a test of what the planner does with a prune's statements.
    fn analysed(
        backend: cpis_testkit::db::Backend,
        children: i64,
    ) -> Option<(cpis_testkit::db::TestDb, DbConnection)> {
        let (test_db, mut conn) = migrated(backend)?;
        let now = crate::clock::Clock::system().now_micros();
        record_many(&mut conn, 0, children, "person:555000000001", now);
        conn.batch_execute("ANALYZE enumeration_last_seen")
            .expect("analyze");
        Some((test_db, conn))
    }

    fn access_events(conn: &mut DbConnection) -> i64 {
        crate::db::schema::access_events::table
            .count()
            .get_result(conn)
            .expect("count")
    }

    cpis_testkit::both_backends!(a_prune_deletes_in_chunks_what_no_window_counts);

    /// The upkeep's prune deletes the rows of `enumeration_last_seen` last seen longer ago than
    /// a day and an hour, and nothing else: not a row at exactly that age, not a recent one, and
    /// never an access event (the audit record). It goes through the table in key order in
    /// chunks that each span `PRUNE_SPAN` rows, however few of them it deletes, so a chunk's
    /// cost is bounded: 2,404 children (4,808 rows, with the organisation's) take 5 chunks.
    /// Before, nothing deleted them.
    async fn a_prune_deletes_in_chunks_what_no_window_counts(backend: cpis_testkit::db::Backend) {
        use crate::db::enumeration::PRUNE_SPAN;
        use crate::domain::enumeration::{HOUR, LAST_SEEN_KEPT};
        let Some((_test_db, mut conn)) = migrated(backend) else {
            return;
        };
        // The system clock: PostgreSQL also holds the cutoff to its own clock.
        let now = crate::clock::Clock::system().now_micros();
        let key = "person:555000000001";
        // 1,200 children looked up a moment too long ago, 1,200 an hour ago (the first chunks
        // hold both), then 3 children too long ago and one at exactly the age kept.
        record_many(&mut conn, 0, 1_200, key, now - LAST_SEEN_KEPT - 1);
        record_many(&mut conn, 1_200, 1_200, key, now - HOUR);
        record_many(&mut conn, 2_400, 3, key, now - LAST_SEEN_KEPT - 1);
        let edge = "9999999999";
        record(&mut conn, &[access(9_999, edge, key, now - LAST_SEEN_KEPT)]);
        let chunks = prune_pass(&mut conn, now);
        let deleted: usize = chunks.iter().map(|(n, _)| *n).sum();
        assert_eq!(deleted, 2 * 1_203, "{chunks:?}");
        let span = usize::try_from(PRUNE_SPAN).expect("span");
        assert_eq!(chunks.len(), (2 * 2_404_usize).div_ceil(span), "{chunks:?}");
        let seen = last_seen(&mut conn);
        assert_eq!(
            seen.len(),
            2 * 1_201,
            "what a window can still count is kept"
        );
        assert!(
            seen.iter().all(|(_, _, at)| *at >= now - LAST_SEEN_KEPT),
            "nothing older is left"
        );
        assert!(seen.contains(&seen_row(key, edge, now - LAST_SEEN_KEPT)));
        assert_eq!(
            access_events(&mut conn),
            2_404,
            "the audit record is untouched"
        );
        assert_eq!(
            prune_pass(&mut conn, now)
                .iter()
                .map(|(n, _)| n)
                .sum::<usize>(),
            0,
            "a second pass finds nothing"
        );
    }

    /// PostgreSQL: a prune never waits for a disclosure. A row a disclosure's trigger holds
    /// (moved forward in a transaction not yet committed) is skipped, the rest of the pass goes
    /// on, and once the disclosure commits the row is recent and stays. Waiting, the pass would
    /// hit this connection's statement timeout and fail the test.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_postgres_prune_skips_a_row_a_disclosure_holds() {
        use crate::domain::enumeration::LAST_SEEN_KEPT;
        let Some((test_db, mut conn)) = migrated(cpis_testkit::db::Backend::Postgres) else {
            return;
        };
        let url = crate::db::DatabaseUrl::parse(&test_db.url).expect("url");
        let mut disclosure = crate::db::dialect::connect(&url).expect("second connection");
        let now = crate::clock::Clock::system().now_micros();
        let key = "person:555000000001";
        let (held, free) = ("9990000018", "9990000026");
        let long_ago = now - LAST_SEEN_KEPT - 1;
        record(
            &mut conn,
            &[
                access(0, held, key, long_ago),
                access(1, free, key, long_ago),
            ],
        );
        conn.batch_execute("SET statement_timeout = '5s'")
            .expect("timeout");
        disclosure
            .transaction(|disclosure| {
                // The same child looked up again, not yet committed: the trigger holds its rows.
                crate::db::dialect::insert_access_events(disclosure, &[access(2, held, key, now)])
                    .map_err(|e| diesel::result::Error::QueryBuilderError(e.to_string().into()))?;
                assert_eq!(
                    prune_pass(&mut conn, now),
                    [(2, None)],
                    "the free child's two rows, without waiting for the held ones"
                );
                diesel::QueryResult::Ok(())
            })
            .expect("disclosure");
        assert_eq!(
            last_seen(&mut conn),
            [
                seen_row("organisation:RXX01", held, now),
                seen_row(key, held, now)
            ],
            "the held rows, moved forward by the disclosure, stay"
        );
        assert_eq!(prune_pass(&mut conn, now), [(0, None)]);
    }

    /// PostgreSQL: a registry whose clock runs ahead (here by ten days) cannot prune rows the
    /// database's own clock says a window may still count: another replica may be counting
    /// them. The cutoff is the earlier of the two.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_postgres_prune_holds_to_the_database_clock() {
        use crate::domain::enumeration::{DAY, HOUR};
        let Some((_test_db, mut conn)) = migrated(cpis_testkit::db::Backend::Postgres) else {
            return;
        };
        let now = crate::clock::Clock::system().now_micros();
        let key = "person:555000000001";
        record(&mut conn, &[access(0, "9990000018", key, now - HOUR)]);
        let chunks = prune_pass(&mut conn, now + 10 * DAY);
        assert_eq!(
            chunks,
            [(0, None)],
            "nothing is old by the database's clock"
        );
        assert_eq!(last_seen(&mut conn).len(), 2);
    }

    /// SQLite: a prune's two statements read the chunk's rows through the primary key, from
    /// where the last chunk stopped, so a chunk reads at most its span. Written as a range of
    /// keys instead, the delete searched the window index by subject alone and read every row
    /// of the chunk's subjects (an organisation's can be many thousands).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sqlite_prune_reads_through_the_primary_key() {
        let Some((_test_db, mut conn)) = analysed(cpis_testkit::db::Backend::Sqlite, 600) else {
            return;
        };
        let DbConnection::Sqlite(sqlite) = &mut conn else {
            panic!("a SQLite connection");
        };
        for sql in [
            crate::db::dialect::PRUNE_CHUNK_END.replace('$', "?"),
            crate::db::dialect::SQLITE_PRUNE_CHUNK.to_owned(),
        ] {
            let plan: Vec<String> = diesel::sql_query(format!("EXPLAIN QUERY PLAN {sql}"))
                .load::<PlanRow>(sqlite)
                .expect("plan")
                .into_iter()
                .map(|p| p.detail)
                .collect();
            assert!(
                plan.iter()
                    .any(|d| d.contains("PRIMARY KEY ((subject,nhs_number)>(?,?))")),
                "a range of the primary key: {plan:#?}"
            );
            assert!(
                plan.iter()
                    .all(|d| !d.contains("enumeration_last_seen_window") && !d.starts_with("SCAN")),
                "no other index, no scan: {plan:#?}"
            );
        }
    }

    /// PostgreSQL: a chunk's delete reads an index range bounded at both ends by the chunk's
    /// keys (of the primary key, or, where few rows are old, of the window index by subject and
    /// age) and deletes by row id; never a sequential scan of the table. (Joined back on the
    /// key, the planner chose a hash join over a sequential scan of the whole table; with one
    /// text for both kinds of chunk, a kept plan could lose the upper bound.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_postgres_prune_reads_a_bounded_range_and_deletes_by_row_id() {
        use crate::db::dialect::{PG_PRUNE_CHUNK_FROM, PG_PRUNE_CHUNK_LOCK};
        use diesel::sql_types::{BigInt, Text};
        let Some((_test_db, mut conn)) = analysed(cpis_testkit::db::Backend::Postgres, 2_500)
        else {
            return;
        };
        let now = crate::clock::Clock::system().now_micros();
        let DbConnection::Pg(pg) = &mut conn else {
            panic!("a PostgreSQL connection");
        };
        let plan: Vec<String> = diesel::sql_query(format!(
            "EXPLAIN {PG_PRUNE_CHUNK_FROM} AND (subject, nhs_number) <= ($5, $6) {PG_PRUNE_CHUNK_LOCK}"
        ))
        .bind::<Text, _>("organisation:RXX01")
        .bind::<Text, _>("9000000100")
        .bind::<BigInt, _>(now)
        .bind::<BigInt, _>(crate::domain::enumeration::LAST_SEEN_KEPT)
        .bind::<Text, _>("organisation:RXX01")
        .bind::<Text, _>("9000001100")
        .load::<PlanLine>(pg)
        .expect("plan")
        .into_iter()
        .map(|p| p.line)
        .collect();
        assert!(
            plan.iter().any(|l| l.contains("Tid Scan")),
            "deleted by row id: {plan:#?}"
        );
        assert!(
            plan.iter().any(|l| l.contains("Index Cond")
                && l.contains("ROW(subject, nhs_number) >")
                && l.contains("ROW(subject, nhs_number) <=")),
            "a range bounded at both ends: {plan:#?}"
        );
        assert!(
            plan.iter().all(|l| !l.contains("Seq Scan")),
            "no table scanned whole: {plan:#?}"
        );
    }
}
