//! Disclose-and-record in one database transaction: read the visible records for an NHS number,
//! append the access event, queue one notification per council for an unscheduled access, and
//! read the recent accesses. If anything fails, or the caller's deadline passes before the
//! commit, nothing is disclosed and nothing is recorded. Before any of it, the enumeration guard
//! (`db::enumeration`) may refuse the lookup; then only its throttle and security event are
//! committed. Also the access history councils read.

use std::collections::HashMap;
use std::time::Instant;

use chrono::NaiveDate;
use cpis_core::{accessor::ValidAccessor, nhs_number::NhsNumber, ods::OdsCode};
use cpis_proto::cpis::common::v1::{AccessEvent, AccessMode};
use cpis_proto::cpis::registry::v1::{AccessNotification, notification};
use diesel::dsl::exists;
use diesel::prelude::*;
use prost::Message as _;

use super::{
    DbConnection,
    enumeration::{Throttled, check},
    models::{AccessEventRow, ChildRecordRow, LocalAuthorityRow, NewAccessEvent, decode},
    outbox::Outbox,
    schema::{access_events, child_records, holding_periods, local_authorities},
};
use crate::domain::access::{RECENT_SCAN, collapse};
use crate::domain::contacts::Council;
use crate::domain::dates::timestamp;
use crate::domain::enumeration::EnumerationLimits;
use crate::domain::record::StoredRecord;
use crate::domain::visibility::{VisiblePlan, evaluate};
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

fn new_access_id(now: i64) -> String {
    use rand_core::RngCore as _;
    let mut rng = rand_core::OsRng;
    format!("acc-{now:x}-{:016x}{:016x}", rng.next_u64(), rng.next_u64())
}

/// The records held on `nhs_number`, in council order, with their row ids. A corrupt plan block
/// is reported and left out, and so is a record whose identity does not decode: one damaged row
/// must not blind a lookup of another plan.
fn records_on(
    conn: &mut DbConnection,
    nhs_number: &NhsNumber,
) -> Result<Vec<(StoredRecord, Option<String>, i64)>, RegistryError> {
    let rows: Vec<ChildRecordRow> = child_records::table
        .filter(child_records::nhs_number.eq(nhs_number.to_string()))
        .order(child_records::local_authority.asc())
        .select(ChildRecordRow::as_select())
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let (case_id, id) = (row.content.local_case_id.clone(), row.id);
            row.into_disclosable().map(|r| (r, case_id, id))
        })
        .collect())
}

/// Runs one disclosure in one transaction; its notifications go through `outbox`. A transaction
/// the database aborts in a race (a deadlock, a serialization failure) runs again, within the
/// caller's deadline. Traced as span `disclosure_transaction` with the number of statements it
/// took (`db.statement_count`, every attempt's).
pub(crate) fn disclose(
    conn: &mut DbConnection,
    request: &DisclosureRequest,
    outbox: &mut Outbox,
) -> Result<Outcome, RegistryError> {
    let span = tracing::info_span!(
        "disclosure_transaction",
        db.system = conn_engine(conn),
        db.statement_count = tracing::field::Empty,
    );
    let _entered = span.enter();
    let mark = outbox.mark();
    let (outcome, statements) = counting_statements(conn, |conn| {
        super::retry_races(
            |_| false,
            || {
                outbox.forget_after(mark);
                disclose_once(conn, request, outbox)
            },
        )
    });
    span.record("db.statement_count", statements);
    outcome
}

/// The engine's name as OpenTelemetry's `db.system` says it.
fn conn_engine(conn: &DbConnection) -> &'static str {
    match conn {
        DbConnection::Pg(_) => "postgresql",
        DbConnection::Sqlite(_) => "sqlite",
    }
}

/// Runs `work` on `conn`, counting the SQL statements it sends (for the trace; the connection's
/// instrumentation is otherwise unused, and is cleared again afterwards).
fn counting_statements<T>(
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

fn disclose_once(
    conn: &mut DbConnection,
    request: &DisclosureRequest,
    outbox: &mut Outbox,
) -> Result<Outcome, RegistryError> {
    // Set once the work is done and only COMMIT remains: a failure after that point may have
    // committed (PostgreSQL can make a commit durable and then lose the connection), so it is
    // reported as an unknown outcome, never as "not recorded".
    let mut committing = false;
    let outcome = conn.transaction(|conn| {
        // The guard first, before anything is read or written: a refused lookup discloses
        // nothing and records no access. It takes no lock unless a threshold is crossed (then
        // only the subject's throttle row, and no council row), so the one lock order below
        // holds.
        if let Some(throttled) = check(
            conn,
            &request.limits,
            &request.accessor,
            &request.nhs_number,
            request.now,
        )? {
            return Ok(Outcome::Throttled(throttled));
        }
        let visible: Vec<_> = records_on(conn, &request.nhs_number)?
            .into_iter()
            .filter_map(|(stored, case_id, id)| {
                let evaluation = evaluate(&stored.record, request.today);
                for plan in &evaluation.unevaluable {
                    // The row and the block only: never the child's data or the dates.
                    tracing::warn!(
                        table = "child_records",
                        key = id,
                        plan = plan.as_str_name(),
                        "plan cannot be evaluated (a date outside the contract's calendar); left out of the disclosure"
                    );
                }
                let plans = evaluation.plans;
                (!plans.is_empty()).then_some((stored.local_authority, case_id, plans))
            })
            .collect();
        let codes: Vec<&str> = visible.iter().map(|(ods, _, _)| ods.as_str()).collect();
        let mut councils: HashMap<String, Council> = local_authorities::table
            .filter(local_authorities::ods_code.eq_any(&codes))
            .select(LocalAuthorityRow::as_select())
            .load(conn)?
            .into_iter()
            .filter_map(|row| Council::try_from(row).ok())
            .map(|council| (council.ods_code.to_string(), council))
            .collect();

        let access_id = new_access_id(request.now);
        let event = AccessEvent {
            access_id: access_id.clone(),
            access_time: Some(timestamp(request.now)),
            nhs_number: request.nhs_number.to_string(),
            accessor: Some(request.accessor.as_wire().clone()),
            access_mode: request.mode as i32,
            request_id: request.request_id.clone(),
        };
        diesel::insert_into(access_events::table)
            .values(NewAccessEvent {
                access_id: access_id.clone(),
                nhs_number: event.nhs_number.clone(),
                access_time: request.now,
                access_mode: request.mode as i32,
                accessor_key: request.accessor.key(),
                organisation_ods_code: request.accessor.ods_code().to_string(),
                care_setting: request.accessor.care_setting() as i32,
                event: event.encode_to_vec(),
            })
            .execute(conn)?;

        let mut alerts = Vec::new();
        let mut holders: Vec<(OdsCode, Option<String>)> = Vec::new();
        for (ods_code, case_id, plans) in visible {
            // A record always has its council (foreign key); skip rather than disclose a record
            // without a number to ring.
            let Some(council) = councils.remove(ods_code.as_str()) else {
                continue;
            };
            holders.push((ods_code, case_id));
            alerts.push((council, plans));
        }

        let recent = if alerts.is_empty() {
            Vec::new()
        } else {
            // Scheduled silent reads are audited, never shown: the NHS CP-IS API says their
            // details SHALL NOT be added to the access history (a sexual-assault-referral-centre
            // read shown to the next clinician would itself be a disclosure).
            let rows: Vec<AccessEventRow> = access_events::table
                .filter(access_events::nhs_number.eq(&event.nhs_number))
                .filter(access_events::access_mode.eq(HISTORY_MODE))
                .order((access_events::access_time.desc(), access_events::id.desc()))
                .limit(RECENT_SCAN)
                .select(AccessEventRow::as_select())
                .load(conn)?;
            collapse(
                rows.iter()
                    .map(|r| (r.accessor_key.as_str(), r.access_time)),
            )
            .into_iter()
            .filter_map(|i| rows.get(i))
            .filter_map(|row| decode(&row.event, "access_events", row.id).ok())
            .collect()
        };

        // Notifications last: taking a council's next sequence locks its row until commit, so
        // the lock is held for as short a time as possible.
        if request.mode == AccessMode::Unscheduled {
            for (ods_code, local_case_id) in holders {
                let kind = notification::Kind::Access(AccessNotification {
                    access_event: Some(event.clone()),
                    local_case_id: local_case_id.unwrap_or_default(),
                });
                outbox.enqueue(conn, &ods_code, kind)?;
            }
        }

        if request
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            // Too late for the caller to see the answer: roll back so nothing is recorded that
            // was not disclosed.
            return Err(RegistryError::DeadlineExceeded);
        }
        committing = true;
        Ok(Outcome::Disclosed(Disclosure {
            alerts,
            recent,
            access_id,
        }))
    });
    match outcome {
        Err(error) if committing => {
            tracing::error!(%error, "a disclosure's commit failed; it may have been recorded");
            Err(RegistryError::OutcomeUnknown)
        }
        other => other,
    }
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
