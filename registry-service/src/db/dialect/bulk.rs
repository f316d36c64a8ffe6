//! The bulk upload's engine-specific reads and writes: stored records by index probes, new
//! records by binary COPY on PostgreSQL and multi-row INSERTs on SQLite, changed records by one
//! array UPDATE on PostgreSQL.

use diesel::prelude::*;

use super::{INSERT_ROWS, insert_child_records, insert_holding_periods};
use crate::db::{
    DbConnection,
    bulk::ChangedRecord,
    models::{ChildRecordRow, NewChildRecord, NewHoldingPeriod, RecordContent},
    schema::{child_records, holding_periods},
};
use crate::error::RegistryError;

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
