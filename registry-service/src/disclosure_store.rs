//! Disclose-and-record in one database transaction: read the visible records for an NHS
//! number, append the access event, queue one notification per council for an unscheduled
//! access, and read the recent accesses. If anything fails, or the caller's deadline passes
//! before the commit, nothing is disclosed and nothing is recorded.

use std::collections::HashMap;
use std::time::Instant;

use chrono::NaiveDate;
use cpis_proto::cpis::common::v1::{
    AccessEvent, AccessMode, Accessor, CouncilAlert, LocalAuthority, Organisation, RecentAccess,
    accessor::Kind,
};
use cpis_proto::cpis::registry::v1::{AccessNotification, notification};
use diesel::prelude::*;
use prost::Message as _;

use crate::db::{
    DbConnection,
    models::{AccessEventRow, ChildRecordRow, LocalAuthorityRow, NewAccessEvent},
    schema::{access_events, child_records, local_authorities},
};
use crate::error::RegistryError;
use crate::record::micros_to_timestamp;
use crate::visibility::visible_plans;

/// Most recent accesses shown with a disclosure.
pub const RECENT_ACCESSES: usize = 25;
/// Repeat views by the same accessor within this window are listed once.
const COLLAPSE_MICROS: i64 = 24 * 3600 * 1_000_000;
/// How many recent events are read to build the collapsed list.
const RECENT_SCAN: i64 = 1000;

/// One disclosure to record.
#[derive(Debug)]
pub struct DisclosureRequest {
    /// The NHS number (validated).
    pub nhs_number: String,
    /// The authenticated accessor.
    pub accessor: Accessor,
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
}

/// What was disclosed.
#[derive(Debug, Default)]
pub struct Disclosure {
    /// One alert per council with a visible record.
    pub alerts: Vec<CouncilAlert>,
    /// Recent accesses (empty when there are no alerts).
    pub recent: Vec<RecentAccess>,
    /// The access recorded.
    pub access_id: String,
    /// Notifications queued (one per council for an unscheduled access).
    pub notifications: Vec<(String, i64)>,
}

/// "person:<uid>" or "system:<system id>:<responsible uid>": who, for collapsing repeat views.
fn accessor_key(accessor: &Accessor) -> String {
    match &accessor.kind {
        Some(Kind::Person(p)) => format!("person:{}", p.user_id),
        Some(Kind::System(s)) => format!(
            "system:{}:{}",
            s.system_id,
            s.responsible_person
                .as_ref()
                .map(|p| p.user_id.as_str())
                .unwrap_or_default()
        ),
        None => "unknown".into(),
    }
}

fn new_access_id(now: i64) -> String {
    use rand_core::RngCore as _;
    let mut rng = rand_core::OsRng;
    format!("acc-{now:x}-{:016x}{:016x}", rng.next_u64(), rng.next_u64())
}

fn recent_access(event: &AccessEvent) -> RecentAccess {
    let accessor = event.accessor.clone().unwrap_or_default();
    let (name, role) = match &accessor.kind {
        Some(Kind::Person(p)) => (p.name.clone(), p.job_role_name.clone()),
        Some(Kind::System(s)) => s
            .responsible_person
            .as_ref()
            .map(|p| (p.name.clone(), p.job_role_name.clone()))
            .unwrap_or_default(),
        None => (String::new(), String::new()),
    };
    RecentAccess {
        access_time: event.access_time,
        organisation: accessor.organisation.clone().map(|o| Organisation {
            ods_code: o.ods_code,
            name: o.name,
        }),
        care_setting: accessor.care_setting,
        accessor_name: name,
        job_role_name: role,
        access_mode: event.access_mode,
    }
}

/// The newest `RECENT_ACCESSES` accesses, repeat views by one accessor within 24 hours once.
fn collapse(rows: &[AccessEventRow]) -> Vec<RecentAccess> {
    let mut newest_kept: HashMap<&str, i64> = HashMap::new();
    let mut out = Vec::new();
    for row in rows {
        if out.len() == RECENT_ACCESSES {
            break;
        }
        if let Some(kept) = newest_kept.get(row.accessor_key.as_str())
            && kept - row.access_time < COLLAPSE_MICROS
        {
            continue;
        }
        newest_kept.insert(&row.accessor_key, row.access_time);
        if let Ok(event) = AccessEvent::decode(row.event.as_slice()) {
            out.push(recent_access(&event));
        }
    }
    out
}

/// Runs one disclosure in one transaction.
pub fn disclose(
    conn: &mut DbConnection,
    request: DisclosureRequest,
) -> Result<Disclosure, RegistryError> {
    conn.transaction(|conn| {
        let rows: Vec<ChildRecordRow> = child_records::table
            .filter(child_records::nhs_number.eq(&request.nhs_number))
            .order(child_records::local_authority.asc())
            .select(ChildRecordRow::as_select())
            .load(conn)?;
        let visible: Vec<(ChildRecordRow, _)> = rows
            .into_iter()
            .map(|row| {
                let plans = visible_plans(&row, request.today);
                (row, plans)
            })
            .filter(|(_, plans)| !plans.is_empty())
            .collect();
        let codes: Vec<&str> = visible
            .iter()
            .map(|(row, _)| row.local_authority.as_str())
            .collect();
        let councils: HashMap<String, LocalAuthorityRow> = local_authorities::table
            .filter(local_authorities::ods_code.eq_any(&codes))
            .select(LocalAuthorityRow::as_select())
            .load(conn)?
            .into_iter()
            .map(|la| (la.ods_code.clone(), la))
            .collect();

        let access_id = new_access_id(request.now);
        let event = AccessEvent {
            access_id: access_id.clone(),
            access_time: Some(micros_to_timestamp(request.now)),
            nhs_number: request.nhs_number.clone(),
            accessor: Some(request.accessor.clone()),
            access_mode: request.mode as i32,
            request_id: request.request_id.clone(),
        };
        diesel::insert_into(access_events::table)
            .values(NewAccessEvent {
                access_id: access_id.clone(),
                nhs_number: request.nhs_number.clone(),
                access_time: request.now,
                access_mode: request.mode as i32,
                accessor_key: accessor_key(&request.accessor),
                organisation_ods_code: request
                    .accessor
                    .organisation
                    .as_ref()
                    .map(|o| o.ods_code.clone())
                    .unwrap_or_default(),
                care_setting: request.accessor.care_setting,
                event: event.encode_to_vec(),
            })
            .execute(conn)?;

        let mut alerts = Vec::new();
        let mut holders = Vec::new();
        for (row, plans) in visible {
            let Some(council) = councils.get(&row.local_authority) else {
                // A record always has its council (foreign key); skip rather than disclose a
                // record without a number to ring.
                continue;
            };
            holders.push((
                council.ods_code.clone(),
                row.local_case_id.clone().unwrap_or_default(),
            ));
            alerts.push(CouncilAlert {
                local_authority: Some(LocalAuthority {
                    ods_code: council.ods_code.clone(),
                    name: council.name.clone(),
                    emergency_duty_phone: council.emergency_duty_phone.clone(),
                    office_hours_phone: council.office_hours_phone.clone().unwrap_or_default(),
                    update_time: None,
                }),
                plans,
            });
        }

        let recent = if alerts.is_empty() {
            Vec::new()
        } else {
            let rows: Vec<AccessEventRow> = access_events::table
                .filter(access_events::nhs_number.eq(&request.nhs_number))
                .order((access_events::access_time.desc(), access_events::id.desc()))
                .limit(RECENT_SCAN)
                .select(AccessEventRow::as_select())
                .load(conn)?;
            collapse(&rows)
        };

        // Notifications last: taking a council's next sequence locks its row until commit, so
        // the lock is held for as short a time as possible.
        let mut queued = Vec::new();
        if request.mode == AccessMode::Unscheduled {
            for (ods_code, local_case_id) in holders {
                let kind = notification::Kind::Access(AccessNotification {
                    access_event: Some(event.clone()),
                    local_case_id,
                });
                let sequence = crate::outbox::enqueue(conn, &ods_code, request.now, kind)?;
                queued.push((ods_code, sequence));
            }
        }

        if request
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            // Too late for the caller to see the answer: roll back so nothing is recorded
            // that was not disclosed.
            return Err(RegistryError::DeadlineExceeded);
        }
        Ok(Disclosure {
            alerts,
            recent,
            access_id,
            notifications: queued,
        })
    })
}

/// A council's access history for one NHS number, newest first, after `before` (an event id).
pub fn list_access_events(
    conn: &mut DbConnection,
    nhs_number: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AccessEventRow>, RegistryError> {
    let mut query = access_events::table
        .filter(access_events::nhs_number.eq(nhs_number))
        .order(access_events::id.desc())
        .limit(limit)
        .select(AccessEventRow::as_select())
        .into_boxed();
    if let Some(before) = before {
        query = query.filter(access_events::id.lt(before));
    }
    Ok(query.load(conn)?)
}

/// The database floor the benchmark compares a disclosure with: the engine's own point read of
/// one NHS number's records and one access-event insert, in one transaction, through the same
/// pool. No visibility rules, notifications or recent-access query.
pub fn floor_read_and_insert(
    conn: &mut DbConnection,
    nhs_number: &str,
) -> Result<usize, RegistryError> {
    conn.transaction(|conn| {
        let rows: Vec<ChildRecordRow> = child_records::table
            .filter(child_records::nhs_number.eq(nhs_number))
            .select(ChildRecordRow::as_select())
            .load(conn)?;
        diesel::insert_into(access_events::table)
            .values(NewAccessEvent {
                access_id: new_access_id(0),
                nhs_number: nhs_number.to_owned(),
                access_time: 0,
                access_mode: AccessMode::ScheduledSilentRead as i32,
                accessor_key: "floor".into(),
                organisation_ods_code: "FLOOR".into(),
                care_setting: 0,
                event: Vec::new(),
            })
            .execute(conn)?;
        Ok(rows.len())
    })
}
