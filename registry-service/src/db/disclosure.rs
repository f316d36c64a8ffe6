//! What a disclosure is and the reads it is made of: the visible records for NHS numbers, the
//! recent accesses; the transaction that discloses and records (many lookups at once, one
//! commit) is `db::disclosure_batch`. Also the access history councils read.

use std::collections::HashMap;
use std::time::Instant;

use chrono::NaiveDate;
use cpis_core::{accessor::ValidAccessor, nhs_number::NhsNumber, ods::OdsCode};
use cpis_proto::cpis::common::v1::{AccessEvent, AccessMode};
use diesel::dsl::exists;
use diesel::prelude::*;

use super::{
    DbConnection,
    enumeration::Throttled,
    models::{AccessEventRow, ChildRecordRow, LocalAuthorityRow, decode},
    schema::{access_events, child_records, holding_periods, local_authorities},
};
use crate::domain::access::{RECENT_SCAN, collapse};
use crate::domain::contacts::Council;
use crate::domain::enumeration::EnumerationLimits;
use crate::domain::record::StoredRecord;
use crate::domain::visibility::VisiblePlan;
use crate::error::RegistryError;

/// One disclosure to record.
#[derive(Debug)]
pub(crate) struct DisclosureRequest {
    /// The NHS number.
    pub nhs_number: NhsNumber,
    /// Who is looking, from where.
    pub accessor: ValidAccessor,
    /// Unscheduled or scheduled silent read.
    pub mode: AccessMode,
    /// The EPR's request id.
    pub request_id: String,
    /// Now, in microseconds since the epoch.
    pub now: i64,
    /// Today.
    pub today: NaiveDate,
    /// Roll back instead of committing after this instant.
    pub deadline: Option<Instant>,
    /// The enumeration guard's thresholds.
    pub limits: EnumerationLimits,
}

/// What a disclosure transaction ended with.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Disclosed and recorded.
    Disclosed(Disclosure),
    /// Refused by the enumeration guard: nothing disclosed, no access recorded.
    Throttled(Throttled),
}

/// What was disclosed.
#[derive(Debug, Default)]
pub(crate) struct Disclosure {
    /// Per council with a visible record: its contacts and the plans health may see.
    pub alerts: Vec<(Council, Vec<VisiblePlan>)>,
    /// Recent accesses, newest first, collapsed (empty when there are no alerts).
    pub recent: Vec<AccessEvent>,
    /// The access recorded.
    pub access_id: String,
}

/// A stored record, its local case id and row id, as a disclosure reads it.
pub(super) type HeldRecord = (StoredRecord, Option<String>, i64);

/// The records held on each number, and the councils holding them, by code.
pub(super) type Held = (HashMap<String, Vec<HeldRecord>>, HashMap<String, Council>);

/// The records held on each of `numbers`, by number, in council order, with their row ids, and
/// the councils holding them: one read (records joined to their councils) for a whole batch. A
/// corrupt plan block is reported and left out, and so is a record whose identity does not
/// decode: one damaged row must not blind a lookup of another plan.
pub(super) fn records_on_all(
    conn: &mut DbConnection,
    numbers: &[String],
) -> Result<Held, RegistryError> {
    let mut by_number: HashMap<String, Vec<_>> = HashMap::new();
    let mut councils = HashMap::new();
    if numbers.is_empty() {
        return Ok((by_number, councils));
    }
    let held = || {
        child_records::table
            .inner_join(local_authorities::table)
            .select((ChildRecordRow::as_select(), LocalAuthorityRow::as_select()))
    };
    let rows: Vec<(ChildRecordRow, LocalAuthorityRow)> = if let [number] = numbers {
        // One number (the unloaded path): a plain equality, one cached statement.
        held()
            .filter(child_records::nhs_number.eq(number))
            .order(child_records::local_authority.asc())
            .load(conn)?
    } else {
        // A prepared statement's generic plan can turn `= ANY($1)` into a table scan.
        super::dialect::plan_for_actual_values(conn)?;
        held()
            .filter(child_records::nhs_number.eq_any(numbers))
            .order((
                child_records::nhs_number.asc(),
                child_records::local_authority.asc(),
            ))
            .load(conn)?
    };
    for (row, council) in rows {
        if !councils.contains_key(&council.ods_code)
            && let Ok(council) = Council::try_from(council)
        {
            councils.insert(council.ods_code.to_string(), council);
        }
        let (number, case_id, id) = (
            row.nhs_number.clone(),
            row.content.local_case_id.clone(),
            row.id,
        );
        if let Some(record) = row.into_disclosable() {
            by_number
                .entry(number)
                .or_default()
                .push((record, case_id, id));
        }
    }
    Ok((by_number, councils))
}

pub(super) fn new_access_id(now: i64) -> String {
    use rand_core::RngCore as _;
    let mut rng = rand_core::OsRng;
    format!("acc-{now:x}-{:016x}{:016x}", rng.next_u64(), rng.next_u64())
}

/// The engine's name as OpenTelemetry's `db.system` says it.
pub(super) fn conn_engine(conn: &DbConnection) -> &'static str {
    match conn {
        DbConnection::Pg(_) => "postgresql",
        DbConnection::Sqlite(_) => "sqlite",
    }
}

/// Runs `work` on `conn`, counting the SQL statements it sends (for the trace; the connection's
/// instrumentation is otherwise unused, and is cleared again afterwards).
pub(super) fn counting_statements<T>(
    conn: &mut DbConnection,
    work: impl FnOnce(&mut DbConnection) -> T,
) -> (T, u64) {
    use diesel::connection::{Instrumentation, InstrumentationEvent};
    use std::sync::atomic::{AtomicU64, Ordering};
    let count = std::sync::Arc::new(AtomicU64::new(0));
    let counter = count.clone();
    conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
        if matches!(event, InstrumentationEvent::StartQuery { .. }) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let value = work(conn);
    conn.set_instrumentation(None::<Box<dyn Instrumentation>>);
    (value, count.load(Ordering::Relaxed))
}

/// The recent accesses of each of `numbers` shown with a disclosure: newest first, collapsed.
/// Scheduled silent reads are audited, never shown: the NHS CP-IS API says their details SHALL
/// NOT be added to the access history (a sexual-assault-referral-centre read shown to the next
/// clinician would itself be a disclosure). On PostgreSQL one statement for all the numbers
/// (`dialect::recent_access_rows`); on SQLite, embedded, one cached statement a number.
pub(super) fn recent_accesses_all(
    conn: &mut DbConnection,
    numbers: &[&str],
) -> Result<HashMap<String, Vec<AccessEvent>>, RegistryError> {
    let mut by_number = HashMap::with_capacity(numbers.len());
    if numbers.len() > 1
        && let Some(rows) =
            super::dialect::recent_access_rows(conn, numbers, HISTORY_MODE, RECENT_SCAN)?
    {
        let mut grouped: HashMap<String, Vec<AccessEventRow>> = HashMap::new();
        for (number, row) in rows {
            grouped.entry(number).or_default().push(row);
        }
        for number in numbers {
            let rows = grouped.remove(*number).unwrap_or_default();
            by_number.insert((*number).to_owned(), collapsed(&rows));
        }
        return Ok(by_number);
    }
    for number in numbers {
        by_number.insert((*number).to_owned(), recent_accesses(conn, number)?);
    }
    Ok(by_number)
}

/// `recent_accesses_all` for one number.
fn recent_accesses(
    conn: &mut DbConnection,
    nhs_number: &str,
) -> Result<Vec<AccessEvent>, RegistryError> {
    let rows: Vec<AccessEventRow> = access_events::table
        .filter(access_events::nhs_number.eq(nhs_number))
        .filter(access_events::access_mode.eq(HISTORY_MODE))
        .order((access_events::access_time.desc(), access_events::id.desc()))
        .limit(RECENT_SCAN)
        .select(AccessEventRow::as_select())
        .load(conn)?;
    Ok(collapsed(&rows))
}

/// `rows` (newest first) collapsed and decoded.
fn collapsed(rows: &[AccessEventRow]) -> Vec<AccessEvent> {
    collapse(
        rows.iter()
            .map(|r| (r.accessor_key.as_str(), r.access_time)),
    )
    .into_iter()
    .filter_map(|i| rows.get(i))
    .filter_map(|row| decode(&row.event, "access_events", row.id).ok())
    .collect()
}

/// The one access mode that is part of an access history: unscheduled. Scheduled silent reads
/// (B0170) stay in `access_events` for audit only.
const HISTORY_MODE: i32 = AccessMode::Unscheduled as i32;

/// Council `ods_code`'s view of the access history of `nhs_number`, newest first, before
/// `before` (an event id), with each event's id (the page cursor; an event that does not decode
/// is reported and comes back as `None`). A council sees the unscheduled accesses made while it
/// held a record for the number (its holding periods, ended ones included), never those from
/// before it held one: creating a record on another council's child must not reveal who saw the
/// child. A council that never held a record for the number is answered `RecordNotFound`.
pub(crate) fn list_access_events(
    conn: &mut DbConnection,
    ods_code: &OdsCode,
    nhs_number: &NhsNumber,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<(i64, Option<AccessEvent>)>, RegistryError> {
    let nhs = nhs_number.to_string();
    let periods = || {
        holding_periods::table
            .filter(holding_periods::nhs_number.eq(nhs.clone()))
            .filter(holding_periods::local_authority.eq(ods_code.to_string()))
    };
    let ever_held: bool = diesel::select(exists(periods())).get_result(conn)?;
    if !ever_held {
        return Err(RegistryError::RecordNotFound);
    }
    let inside_a_period = exists(
        periods()
            .filter(holding_periods::start_time.le(access_events::access_time))
            .filter(
                holding_periods::end_time
                    .is_null()
                    .or(access_events::access_time
                        .nullable()
                        .le(holding_periods::end_time)),
            ),
    );
    let mut query = access_events::table
        .filter(access_events::nhs_number.eq(nhs.clone()))
        .filter(access_events::access_mode.eq(HISTORY_MODE))
        .filter(inside_a_period)
        .order(access_events::id.desc())
        .limit(limit)
        .select(AccessEventRow::as_select())
        .into_boxed();
    if let Some(before) = before {
        query = query.filter(access_events::id.lt(before));
    }
    Ok(query
        .load(conn)?
        .into_iter()
        .map(|row| (row.id, decode(&row.event, "access_events", row.id).ok()))
        .collect())
}
