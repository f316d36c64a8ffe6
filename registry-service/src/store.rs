//! Database operations on councils, records and batches. Each function runs inside the caller's
//! connection (and, where it says so, its own transaction) and speaks domain and row types only.

use chrono::NaiveDate;
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;

use std::collections::HashMap;

use cpis_proto::cpis::common::v1::InactiveReason;
use cpis_proto::cpis::registry::v1::RecordRejection;

use crate::db::{
    DbConnection,
    models::{
        ChildRecordRow, LocalAuthorityRow, NewChildRecord, NewLocalAuthority, NhsNumberStatusRow,
        UploadBatchRow,
    },
    schema::{child_records, local_authorities, nhs_number_status, upload_batches},
};
use crate::error::RegistryError;
use crate::record::{ChildRecord, to_days};
use cpis_proto::cpis::common::v1::ErrorReason;

/// Which records a listing returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateFilter {
    /// Every record.
    All,
    /// At least one plan neither ended nor withdrawn.
    Active,
    /// Every plan ended or withdrawn.
    Ended,
}

/// Inserts or replaces a council's contact details.
pub fn upsert_contacts(
    conn: &mut DbConnection,
    contacts: &NewLocalAuthority,
) -> Result<LocalAuthorityRow, RegistryError> {
    conn.transaction(|conn| {
        let updated = diesel::update(local_authorities::table.find(&contacts.ods_code))
            .set(contacts)
            .execute(conn)?;
        if updated == 0 {
            diesel::insert_into(local_authorities::table)
                .values(contacts)
                .execute(conn)?;
        }
        local_authorities::table
            .find(&contacts.ods_code)
            .select(LocalAuthorityRow::as_select())
            .first(conn)
            .map_err(RegistryError::from)
    })
}

/// A council's contact details, if set.
pub fn get_contacts(
    conn: &mut DbConnection,
    ods_code: &str,
) -> Result<Option<LocalAuthorityRow>, RegistryError> {
    Ok(local_authorities::table
        .find(ods_code)
        .select(LocalAuthorityRow::as_select())
        .first(conn)
        .optional()?)
}

fn require_contacts(conn: &mut DbConnection, ods_code: &str) -> Result<(), RegistryError> {
    if get_contacts(conn, ods_code)?.is_none() {
        return Err(RegistryError::FailedPrecondition {
            reason: ErrorReason::ContactDetailsMissing,
            message: "set the council's contact details (SetContactDetails) before storing records"
                .into(),
        });
    }
    Ok(())
}

/// The council's record for an NHS number.
pub fn get_record(
    conn: &mut DbConnection,
    ods_code: &str,
    nhs_number: &str,
) -> Result<Option<ChildRecordRow>, RegistryError> {
    Ok(child_records::table
        .filter(child_records::local_authority.eq(ods_code))
        .filter(child_records::nhs_number.eq(nhs_number))
        .select(ChildRecordRow::as_select())
        .first(conn)
        .optional()?)
}

/// Outcome of storing one record.
#[derive(Debug)]
pub struct Stored {
    /// The record as stored.
    pub row: ChildRecordRow,
    /// True when newly created.
    pub created: bool,
}

/// Stores one record in its own transaction, honouring `expected_version` (0: must not exist).
/// A put identical to what is stored changes nothing (the version does not move), so resending
/// is harmless.
pub fn put_record(
    conn: &mut DbConnection,
    ods_code: &str,
    record: &ChildRecord,
    expected_version: Option<i64>,
    now: i64,
) -> Result<Stored, RegistryError> {
    conn.transaction(|conn| {
        require_contacts(conn, ods_code)?;
        let nhs = record.nhs_number.to_string();
        require_active(conn, &nhs)?;
        let existing = get_record(conn, ods_code, &nhs)?;
        let actual = existing.as_ref().map_or(0, |r| r.version);
        if let Some(expected) = expected_version
            && expected != actual
        {
            return Err(RegistryError::VersionConflict { expected, actual });
        }
        upsert_one(conn, ods_code, record, existing, now)?;
        let row = get_record(conn, ods_code, &nhs)?.ok_or_else(|| {
            RegistryError::Internal("record vanished inside its transaction".into())
        })?;
        Ok(Stored {
            created: actual == 0,
            row,
        })
    })
}

/// Inserts, updates or (when unchanged) leaves one record, inside the caller's transaction.
fn upsert_one(
    conn: &mut DbConnection,
    ods_code: &str,
    record: &ChildRecord,
    existing: Option<ChildRecordRow>,
    now: i64,
) -> Result<(), RegistryError> {
    let content = record.content();
    match existing {
        None => {
            diesel::insert_into(child_records::table)
                .values(NewChildRecord {
                    local_authority: ods_code.to_owned(),
                    nhs_number: record.nhs_number.to_string(),
                    content,
                    version: 1,
                    create_time: now,
                    update_time: now,
                })
                .execute(conn)?;
        }
        Some(row) if row.content() == content => {}
        Some(row) => {
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
        }
    }
    Ok(())
}

/// A validated record of a batch, with where it came from.
#[derive(Debug)]
pub struct BatchRecord {
    /// 1-based position in the batch.
    pub position: u64,
    /// The council's case id, as sent.
    pub local_case_id: String,
    /// The record.
    pub record: ChildRecord,
}

/// Why a number cannot take records: it is inactive (or superseded, with its replacement).
pub fn inactive_reason(row: &NhsNumberStatusRow) -> (ErrorReason, &'static str) {
    match InactiveReason::try_from(row.reason) {
        Ok(InactiveReason::Superseded) => (
            ErrorReason::SupersededNhsNumber,
            "the NHS number has been superseded; send the record on its replacement number",
        ),
        _ => (
            ErrorReason::NhsNumberInactive,
            "the NHS number is no longer active",
        ),
    }
}

/// Status rows for `numbers` that the demographics feed marked inactive.
fn inactive_numbers(
    conn: &mut DbConnection,
    numbers: &[String],
) -> Result<HashMap<String, NhsNumberStatusRow>, RegistryError> {
    Ok(nhs_number_status::table
        .filter(nhs_number_status::nhs_number.eq_any(numbers))
        .select(NhsNumberStatusRow::as_select())
        .load(conn)?
        .into_iter()
        .map(|row| (row.nhs_number.clone(), row))
        .collect())
}

/// Refuses a single write to an inactive number.
fn require_active(conn: &mut DbConnection, nhs_number: &str) -> Result<(), RegistryError> {
    let inactive = inactive_numbers(conn, &[nhs_number.to_owned()])?;
    if let Some(row) = inactive.get(nhs_number) {
        let (reason, message) = inactive_reason(row);
        return Err(RegistryError::FailedPrecondition {
            reason,
            message: match &row.replacement_nhs_number {
                Some(replacement) => format!("{message} ({replacement})"),
                None => message.to_owned(),
            },
        });
    }
    Ok(())
}

/// Stores a chunk of validated records (distinct NHS numbers) in one transaction, in NHS-number
/// order (sorted keys make SQLite's B-tree inserts several times faster). Records on numbers
/// the demographics feed marked inactive are not stored; their rejections are returned.
pub fn apply_chunk(
    conn: &mut DbConnection,
    ods_code: &str,
    chunk: &mut [BatchRecord],
    now: i64,
) -> Result<Vec<RecordRejection>, RegistryError> {
    chunk.sort_by_key(|r| r.record.nhs_number);
    conn.transaction(|conn| {
        if let DbConnection::Pg(pg) = conn {
            // A prepared statement's generic plan, chosen while the table was small, keeps a
            // sequential scan for `nhs_number = ANY($n)` as the table grows (measured: 30x
            // slower by 40,000 rows). Plan this transaction's statements for their real values.
            pg.batch_execute("SET LOCAL plan_cache_mode = force_custom_plan")?;
        }
        require_contacts(conn, ods_code)?;
        let numbers: Vec<String> = chunk
            .iter()
            .map(|r| r.record.nhs_number.to_string())
            .collect();
        let inactive = inactive_numbers(conn, &numbers)?;
        let mut existing: HashMap<String, ChildRecordRow> = child_records::table
            .filter(child_records::local_authority.eq(ods_code))
            .filter(child_records::nhs_number.eq_any(&numbers))
            .select(ChildRecordRow::as_select())
            .load(conn)?
            .into_iter()
            .map(|row| (row.nhs_number.clone(), row))
            .collect();
        let mut inserts = Vec::new();
        let mut rejections = Vec::new();
        for (item, nhs) in chunk.iter().zip(numbers) {
            if let Some(status) = inactive.get(&nhs) {
                let (reason, message) = inactive_reason(status);
                rejections.push(RecordRejection {
                    position: item.position,
                    local_case_id: item.local_case_id.clone(),
                    reason: reason as i32,
                    field: "nhs_number".into(),
                    message: message.into(),
                    replacement_nhs_number: status
                        .replacement_nhs_number
                        .clone()
                        .unwrap_or_default(),
                });
                continue;
            }
            match existing.remove(&nhs) {
                None => inserts.push(NewChildRecord {
                    local_authority: ods_code.to_owned(),
                    nhs_number: nhs,
                    content: item.record.content(),
                    version: 1,
                    create_time: now,
                    update_time: now,
                }),
                Some(row) => upsert_one(conn, ods_code, &item.record, Some(row), now)?,
            }
        }
        // Multi-row inserts, kept well under SQLite's bound-parameter limit (32,766).
        for rows in inserts.chunks(500) {
            insert_records(conn, rows)?;
        }
        Ok(rejections)
    })
}

/// A multi-row INSERT. diesel's MultiBackend cannot express batch inserts, so dispatch to the
/// concrete connection (inside the same transaction).
pub fn insert_records(
    conn: &mut DbConnection,
    rows: &[NewChildRecord],
) -> Result<usize, RegistryError> {
    let inserted = match conn {
        DbConnection::Pg(c) => diesel::insert_into(child_records::table)
            .values(rows)
            .execute(c)?,
        DbConnection::Sqlite(c) => diesel::insert_into(child_records::table)
            .values(rows)
            .execute(c)?,
    };
    Ok(inserted)
}

/// Lists the council's records after `after` (an NHS number), in NHS-number order.
pub fn list_records(
    conn: &mut DbConnection,
    ods_code: &str,
    after: Option<&str>,
    filter: StateFilter,
    today: NaiveDate,
    limit: i64,
) -> Result<Vec<ChildRecordRow>, RegistryError> {
    use diesel::dsl::sql;
    use diesel::sql_types::Bool;

    let mut query = child_records::table
        .filter(child_records::local_authority.eq(ods_code))
        .select(ChildRecordRow::as_select())
        .order(child_records::nhs_number.asc())
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(child_records::nhs_number.gt(after.to_owned()));
    }
    // A plan is active when it has a start, no end or an end not yet passed, and no delete date
    // or one still ahead. `today` is an integer computed here, never caller text.
    let day = to_days(today);
    let active = format!(
        "((cpp_start IS NOT NULL AND (cpp_end IS NULL OR cpp_end >= {day}) AND (cpp_delete IS NULL OR cpp_delete > {day})) \
         OR (lac_start IS NOT NULL AND (lac_end IS NULL OR lac_end >= {day}) AND (lac_delete IS NULL OR lac_delete > {day})) \
         OR (ucpp_start IS NOT NULL AND (ucpp_end IS NULL OR ucpp_end >= {day}) AND (ucpp_delete IS NULL OR ucpp_delete > {day})))"
    );
    query = match filter {
        StateFilter::All => query,
        StateFilter::Active => query.filter(sql::<Bool>(&active)),
        StateFilter::Ended => query.filter(sql::<Bool>(&format!("NOT {active}"))),
    };
    Ok(query.load(conn)?)
}

/// Removes a record; `expected_version` guards against removing a newer state.
pub fn delete_record(
    conn: &mut DbConnection,
    ods_code: &str,
    nhs_number: &str,
    expected_version: Option<i64>,
) -> Result<(), RegistryError> {
    conn.transaction(|conn| {
        let existing =
            get_record(conn, ods_code, nhs_number)?.ok_or_else(|| RegistryError::NotFound {
                reason: ErrorReason::RecordNotFound,
                message: "the council holds no record for this NHS number".into(),
            })?;
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
        Ok(())
    })
}

/// A completed batch's stored outcome.
pub fn get_batch(
    conn: &mut DbConnection,
    ods_code: &str,
    batch_id: &str,
) -> Result<Option<UploadBatchRow>, RegistryError> {
    Ok(upload_batches::table
        .find((ods_code, batch_id))
        .select(UploadBatchRow::as_select())
        .first(conn)
        .optional()?)
}

/// Records a completed batch. If a concurrent upload of the same id finished first, keeps the
/// first outcome (the caller then reads it back).
pub fn store_batch(conn: &mut DbConnection, row: &UploadBatchRow) -> Result<(), RegistryError> {
    match diesel::insert_into(upload_batches::table)
        .values(row)
        .execute(conn)
    {
        Ok(_) => Ok(()),
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
