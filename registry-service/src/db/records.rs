//! SQL for what councils write and read: contact details, child records (one, a listing; a bulk
//! upload's chunks are `bulk`'s). Functions take a connection, run in the caller's transaction or
//! their own (as each says), and speak domain and row types.

use chrono::NaiveDate;
use cpis_core::{nhs_number::NhsNumber, ods::OdsCode};
use diesel::prelude::*;

use super::{
    DbConnection, holdings,
    models::{
        ChildRecordRow, LocalAuthorityRow, NewChildRecord, NewHoldingPeriod, NewLocalAuthority,
        RecordContent,
    },
    nhs_status::inactive_numbers,
    schema::{child_records, local_authorities},
};
use crate::domain::contacts::{Contacts, Council};
use crate::domain::dates::to_days;
use crate::domain::nhs_status::Inactive;
use crate::domain::record::{ChildRecord, StoredRecord};
use crate::error::RegistryError;

/// Which records a listing returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StateFilter {
    /// Every record.
    All,
    /// At least one plan active (`PlanPeriod::is_active`).
    Active,
    /// No plan active.
    Ended,
}

/// Inserts or replaces a council's contact details, in one transaction.
pub(crate) fn upsert_contacts(
    conn: &mut DbConnection,
    ods_code: &OdsCode,
    contacts: &Contacts,
    now: i64,
) -> Result<Council, RegistryError> {
    let row = NewLocalAuthority::new(ods_code, contacts, now);
    conn.transaction(|conn| {
        let updated = diesel::update(local_authorities::table.find(&row.ods_code))
            .set(&row)
            .execute(conn)?;
        if updated == 0 {
            diesel::insert_into(local_authorities::table)
                .values(&row)
                .execute(conn)?;
        }
        get_council(conn, ods_code)?.ok_or_else(|| {
            RegistryError::Internal("contacts vanished inside their transaction".into())
        })
    })
}

/// A council's contact details and cursors, if it has set them.
pub(crate) fn get_council(
    conn: &mut DbConnection,
    ods_code: &OdsCode,
) -> Result<Option<Council>, RegistryError> {
    local_authorities::table
        .find(ods_code.as_str())
        .select(LocalAuthorityRow::as_select())
        .first(conn)
        .optional()?
        .map(Council::try_from)
        .transpose()
}

/// Refuses writes from a council with no contact details (health would have no number to ring).
pub(crate) fn require_contacts(
    conn: &mut DbConnection,
    ods_code: &OdsCode,
) -> Result<(), RegistryError> {
    let exists: i64 = local_authorities::table
        .find(ods_code.as_str())
        .count()
        .get_result(conn)?;
    if exists == 0 {
        return Err(RegistryError::ContactsRequired);
    }
    Ok(())
}

fn get_row(
    conn: &mut DbConnection,
    ods_code: &OdsCode,
    nhs_number: &NhsNumber,
) -> Result<Option<ChildRecordRow>, RegistryError> {
    Ok(child_records::table
        .filter(child_records::local_authority.eq(ods_code.as_str()))
        .filter(child_records::nhs_number.eq(nhs_number.to_string()))
        .select(ChildRecordRow::as_select())
        .first(conn)
        .optional()?)
}

/// The council's record for an NHS number.
pub(crate) fn get_record(
    conn: &mut DbConnection,
    ods_code: &OdsCode,
    nhs_number: &NhsNumber,
) -> Result<Option<StoredRecord>, RegistryError> {
    get_row(conn, ods_code, nhs_number)?
        .map(StoredRecord::try_from)
        .transpose()
}

/// Outcome of storing one record.
#[derive(Debug)]
pub(crate) struct Stored {
    /// The record as stored.
    pub record: StoredRecord,
    /// True when newly created.
    pub created: bool,
}

/// Stores one record in its own transaction, honouring `expected_version` (0: must not exist).
/// A put identical to what is stored changes nothing (the version does not move), so resending
/// is harmless.
pub(crate) fn put_record(
    conn: &mut DbConnection,
    ods_code: &OdsCode,
    record: &ChildRecord,
    expected_version: Option<i64>,
    now: i64,
) -> Result<Stored, RegistryError> {
    // Without an expected version, a put that raced another writer of the same record simply
    // runs again on what is now stored; with one, the conflict is the caller's to see (ABORTED).
    let version_race = |e: &RegistryError| {
        expected_version.is_none() && matches!(e, RegistryError::VersionConflict { .. })
    };
    super::retry_races(version_race, || {
        conn.transaction(|conn| {
            require_contacts(conn, ods_code)?;
            let nhs = record.nhs_number.to_string();
            if let Some(status) = inactive_numbers(conn, std::slice::from_ref(&nhs))?
                .values()
                .next()
            {
                let held = holdings::ever_held(conn, ods_code, std::slice::from_ref(&nhs))?;
                return Err(Inactive::from(status).told_to(held.contains(&nhs)).into());
            }
            let existing = get_row(conn, ods_code, &record.nhs_number)?;
            let actual = existing.as_ref().map_or(0, |r| r.version);
            if let Some(expected) = expected_version
                && expected != actual
            {
                return Err(RegistryError::VersionConflict { expected, actual });
            }
            match existing {
                None => {
                    let row = NewChildRecord::new(ods_code, record, now);
                    diesel::insert_into(child_records::table)
                        .values(&row)
                        .execute(conn)?;
                    holdings::open(conn, &[NewHoldingPeriod::from(&row)])?;
                }
                Some(row) => update_if_changed(conn, row, record, now)?,
            }
            let stored = get_record(conn, ods_code, &record.nhs_number)?.ok_or_else(|| {
                RegistryError::Internal("record vanished inside its transaction".into())
            })?;
            Ok(Stored {
                created: actual == 0,
                record: stored,
            })
        })
    })
}

/// Updates a stored record to `record`'s content (leaving it alone when unchanged), inside the
/// caller's transaction.
fn update_if_changed(
    conn: &mut DbConnection,
    row: ChildRecordRow,
    record: &ChildRecord,
    now: i64,
) -> Result<(), RegistryError> {
    let content = RecordContent::from(record);
    if row.content == content {
        return Ok(());
    }
    // The version guard makes a concurrent writer's change a conflict, not a lost update.
    let updated = diesel::update(
        child_records::table
            .filter(child_records::id.eq(row.id))
            .filter(child_records::version.eq(row.version)),
    )
    .set((
        &content,
        child_records::version.eq(row.version + 1),
        child_records::update_time.eq(now),
    ))
    .execute(conn)?;
    if updated == 0 {
        return Err(RegistryError::VersionConflict {
            expected: row.version,
            actual: row.version + 1,
        });
    }
    Ok(())
}

/// The "active" rule of `PlanPeriod::is_active`, in SQL, for one day: some plan block is present,
/// not ended before `day` and not withdrawn on or before it. `day` is an integer computed here,
/// never caller text.
fn active_plan_sql(day: i32) -> String {
    ["cpp", "lac", "ucpp"]
        .iter()
        .map(|b| {
            format!(
                "({b}_start IS NOT NULL AND ({b}_end IS NULL OR {b}_end >= {day}) \
                 AND ({b}_delete IS NULL OR {b}_delete > {day}))"
            )
        })
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// The council's records after `after`, in NHS-number order, each with its NHS number as a
/// number (the listing's cursor). A record that does not decode is reported and comes back as
/// `None`, so the listing moves past it.
pub(crate) fn list_records(
    conn: &mut DbConnection,
    ods_code: &OdsCode,
    after: Option<&NhsNumber>,
    filter: StateFilter,
    today: NaiveDate,
    limit: i64,
) -> Result<Vec<(i64, Option<StoredRecord>)>, RegistryError> {
    use diesel::dsl::sql;
    use diesel::sql_types::Bool;

    let mut query = child_records::table
        .filter(child_records::local_authority.eq(ods_code.as_str()))
        .select(ChildRecordRow::as_select())
        .order(child_records::nhs_number.asc())
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(child_records::nhs_number.gt(after.to_string()));
    }
    let active = active_plan_sql(to_days(today));
    query = match filter {
        StateFilter::All => query,
        StateFilter::Active => query.filter(sql::<Bool>(&format!("({active})"))),
        StateFilter::Ended => query.filter(sql::<Bool>(&format!("NOT ({active})"))),
    };
    Ok(query
        .load(conn)?
        .into_iter()
        .filter_map(|row: ChildRecordRow| {
            // A number that is not ten digits cannot be a cursor either: the row is corrupt.
            let position = row.nhs_number.parse::<i64>().ok();
            let record = StoredRecord::try_from(row).ok();
            position.map(|position| (position, record))
        })
        .collect())
}

/// Removes a record at `now`, in one transaction, closing the council's holding period;
/// `expected_version` guards against removing a newer state.
pub(crate) fn delete_record(
    conn: &mut DbConnection,
    ods_code: &OdsCode,
    nhs_number: &NhsNumber,
    expected_version: Option<i64>,
    now: i64,
) -> Result<(), RegistryError> {
    conn.transaction(|conn| {
        let existing = get_row(conn, ods_code, nhs_number)?.ok_or(RegistryError::RecordNotFound)?;
        if let Some(expected) = expected_version
            && expected != existing.version
        {
            return Err(RegistryError::VersionConflict {
                expected,
                actual: existing.version,
            });
        }
        diesel::delete(child_records::table.filter(child_records::id.eq(existing.id)))
            .execute(conn)?;
        holdings::close(conn, ods_code, &existing.nhs_number, now)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)] // tests: a failed expectation is a failed test
    use super::*;
    use crate::db::{Database, DatabaseUrl, PoolOptions};
    use crate::domain::record::PlanPeriod;
    use std::time::Duration;

    /// The SQL of `active_plan_sql` and `PlanPeriod::is_active` are one rule: every combination
    /// of end and delete dates around "today", stored and listed, agrees with the Rust rule.
    #[tokio::test]
    async fn the_sql_active_filter_is_the_domain_rule() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Database::open(
            DatabaseUrl::Sqlite(dir.path().join("rule.sqlite3")),
            PoolOptions {
                max_connections: 1,
                acquire_timeout: Duration::from_secs(5),
            },
        )
        .expect("open");
        db.migrate().await.expect("migrate");
        let today = NaiveDate::from_ymd_opt(2026, 6, 15).expect("date");
        let around = [None, Some(-1), Some(0), Some(1)];
        let day = |offset: Option<i64>| offset.map(|o| today + chrono::TimeDelta::days(o));
        let mut periods = Vec::new();
        for end in around {
            for delete in around {
                periods.push(PlanPeriod {
                    start: today - chrono::TimeDelta::days(30),
                    end: day(end),
                    delete: day(delete),
                });
            }
        }
        let expected: Vec<bool> = periods.iter().map(|p| p.is_active(today)).collect();
        let listed = db
            .run(move |conn| {
                let ods = OdsCode::parse("RULE1").expect("ods");
                let contacts = Contacts {
                    name: "Rule".into(),
                    emergency_duty_phone: "020 7946 0000".into(),
                    office_hours_phone: None,
                };
                upsert_contacts(conn, &ods, &contacts, 0)?;
                let numbers = cpis_core::nhs_number::test_range();
                for (period, nhs_number) in periods.iter().zip(numbers) {
                    let record = ChildRecord {
                        nhs_number,
                        local_case_id: None,
                        given_name: "A".into(),
                        family_name: "B".into(),
                        date_of_birth: today - chrono::TimeDelta::days(3000),
                        child_protection_plan: Some(*period),
                        looked_after_child: None,
                        unborn_child_protection_plan: None,
                    };
                    put_record(conn, &ods, &record, None, 0)?;
                }
                let active = list_records(conn, &ods, None, StateFilter::Active, today, 100)?;
                let ended = list_records(conn, &ods, None, StateFilter::Ended, today, 100)?;
                Ok((active, ended))
            })
            .await
            .expect("store and list");
        let (active, ended) = listed;
        let numbers: Vec<NhsNumber> = cpis_core::nhs_number::test_range().take(16).collect();
        for (index, nhs) in numbers.iter().enumerate() {
            let listed = |list: &[(i64, Option<StoredRecord>)]| {
                list.iter()
                    .any(|(_, r)| r.as_ref().is_some_and(|r| r.record.nhs_number == *nhs))
            };
            let (in_active, in_ended) = (listed(&active), listed(&ended));
            assert_eq!(in_active, expected[index], "period {index}");
            assert_eq!(in_ended, !expected[index], "period {index}");
        }
    }
}
