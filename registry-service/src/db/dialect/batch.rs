//! Group commit's engine-specific statements: a whole batch's recent accesses and enumeration
//! guard counts in one statement each on PostgreSQL (LATERAL), and each council's notification
//! sequence range taken once per batch.

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
    questions: &[crate::db::enumeration::GuardQuestion],
) -> Result<Option<Vec<crate::db::enumeration::GuardCounts>>, RegistryError> {
    use crate::domain::enumeration::{DAY, HOUR};
    use diesel::sql_types::{Array, BigInt, Nullable, Text};
    let DbConnection::Pg(pg) = conn else {
        return Ok(None);
    };
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
    use crate::db::schema::local_authorities::dsl::{
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
