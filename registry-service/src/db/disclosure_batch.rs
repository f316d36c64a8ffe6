//! Group commit: the disclose-and-record transaction of `db::disclosure` for a batch of lookups
//! at once, with one commit (one fsync) for all of them. The enumeration guard decides member by
//! member in arrival order, counting earlier members as committed; then set-based statements:
//! one read of every number's records, one of their councils, one insert of the access events
//! (`dialect::insert_access_events`), each council's notification sequences taken once
//! (`Outbox::enqueue_all`), one insert of the notifications (`dialect::queue_notifications`,
//! which on PostgreSQL also NOTIFYs their councils). On PostgreSQL each insert is one prepared
//! statement of the rows as arrays; on SQLite, which has no round trips to save, one prepared
//! statement a row. A member refused by the guard, or whose deadline has passed by the time its
//! access would be written, is answered alone; the others go on.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use cpis_core::ods::OdsCode;
use cpis_proto::cpis::common::v1::{AccessEvent, AccessMode};
use cpis_proto::cpis::registry::v1::{AccessNotification, notification};
use diesel::Connection as _;
use prost::Message as _;

use super::disclosure::{
    Disclosure, DisclosureRequest, Outcome, conn_engine, counting_statements, new_access_id,
    recent_accesses_all, records_on_all,
};
use super::{
    DbConnection, dialect,
    enumeration::{EarlierInBatch, GuardQuestion, check, lets_through},
    models::NewAccessEvent,
    outbox::Outbox,
};
use crate::domain::contacts::Council;
use crate::domain::dates::timestamp;
use crate::domain::visibility::{VisiblePlan, evaluate};
use crate::error::RegistryError;

/// One member's answer: what its lookup ended with and how many notifications it queued.
pub(crate) type Answer = Result<(Outcome, usize), RegistryError>;

/// Runs `requests` as one transaction; their notifications go through `outbox`. Answers come
/// back in the order of `requests`. An `Err` is the whole batch's (nothing of it committed, or
/// `OutcomeUnknown` when its commit failed). A transaction the database aborts in a race runs
/// again whole. Traced as span `disclosure_transaction` with the batch's size
/// (`db.batch_size`) and the statements it took (`db.statement_count`, every attempt's).
pub(crate) fn disclose_all(
    conn: &mut DbConnection,
    requests: &[DisclosureRequest],
    outbox: &mut Outbox,
) -> Result<Vec<Answer>, RegistryError> {
    let span = tracing::info_span!(
        "disclosure_transaction",
        db.system = conn_engine(conn),
        db.batch_size = requests.len(),
        db.statement_count = tracing::field::Empty,
    );
    let _entered = span.enter();
    let mark = outbox.mark();
    let (answers, statements) = counting_statements(conn, |conn| {
        super::retry_races(
            |_| false,
            || {
                outbox.forget_after(mark);
                disclose_all_once(conn, requests, outbox)
            },
        )
    });
    span.record("db.statement_count", statements);
    answers
}

/// What the guard let through: a member's index and its visible records, once read.
struct Admitted {
    index: usize,
    /// Per council holding a visible record: its code, the record's case id, the plans shown.
    visible: Vec<(OdsCode, Option<String>, Vec<VisiblePlan>)>,
}

fn disclose_all_once(
    conn: &mut DbConnection,
    requests: &[DisclosureRequest],
    outbox: &mut Outbox,
) -> Result<Vec<Answer>, RegistryError> {
    // Set once the work is done and only COMMIT remains: a failure after that point may have
    // committed, so it is reported as an unknown outcome, never as "not recorded".
    let mut committing = false;
    let outcome = conn.transaction(|conn| {
        let mut answers: Vec<Option<Answer>> = requests.iter().map(|_| None).collect();
        let admitted = guard(conn, requests, &mut answers)?;
        let (admitted, councils) = read_visible(conn, requests, admitted)?;

        // The honest deadline: a member whose answer could no longer reach its caller is
        // dropped here, before anything of it is written, and told so; the writes and the
        // commit that follow are what the caller's commit margin is for.
        let now = Instant::now();
        let (admitted, late): (Vec<_>, Vec<_>) = admitted.into_iter().partition(|a| {
            requests
                .get(a.index)
                .is_none_or(|r| r.deadline.is_none_or(|deadline| now < deadline))
        });
        for member in late {
            set(
                &mut answers,
                member.index,
                Err(RegistryError::DeadlineExceeded),
            );
        }

        let mut events = Vec::with_capacity(admitted.len());
        let mut rows = Vec::with_capacity(admitted.len());
        for member in &admitted {
            let Some(request) = requests.get(member.index) else {
                continue;
            };
            let access_id = new_access_id(request.now);
            let event = AccessEvent {
                access_id: access_id.clone(),
                access_time: Some(timestamp(request.now)),
                nhs_number: request.nhs_number.to_string(),
                accessor: Some(request.accessor.as_wire().clone()),
                access_mode: request.mode as i32,
                request_id: request.request_id.clone(),
            };
            rows.push(NewAccessEvent {
                access_id,
                nhs_number: event.nhs_number.clone(),
                access_time: request.now,
                access_mode: request.mode as i32,
                accessor_key: request.accessor.key(),
                organisation_ods_code: request.accessor.ods_code().to_string(),
                care_setting: request.accessor.care_setting() as i32,
                event: event.encode_to_vec(),
            });
            events.push(event);
        }
        for part in rows.chunks(dialect::INSERT_ROWS) {
            dialect::insert_access_events(conn, part)?;
        }

        // Recent accesses, read after this batch's events are in, for the numbers with
        // something to disclose: each number's once.
        let shown: Vec<String> = admitted
            .iter()
            .zip(&events)
            .filter(|(member, _)| {
                member
                    .visible
                    .iter()
                    .any(|(ods, _, _)| councils.contains_key(ods.as_str()))
            })
            .map(|(_, event)| event.nhs_number.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let shown: Vec<&str> = shown.iter().map(String::as_str).collect();
        let recent_by_number = recent_accesses_all(conn, &shown)?;
        let mut disclosed = Vec::with_capacity(admitted.len());
        let mut notifications = Vec::new();
        for (member, event) in admitted.into_iter().zip(events) {
            let Some(request) = requests.get(member.index) else {
                continue;
            };
            let mut alerts = Vec::new();
            let mut holders = Vec::new();
            for (ods_code, case_id, plans) in member.visible {
                // A record always has its council (foreign key); skip rather than disclose a
                // record without a number to ring.
                let Some(council) = councils.get(ods_code.as_str()) else {
                    continue;
                };
                holders.push((ods_code, case_id));
                alerts.push((council.clone(), plans));
            }
            let recent = if alerts.is_empty() {
                Vec::new()
            } else {
                recent_by_number
                    .get(&event.nhs_number)
                    .cloned()
                    .unwrap_or_default()
            };
            let mut queued = 0;
            if request.mode == AccessMode::Unscheduled {
                for (ods_code, local_case_id) in holders {
                    let kind = notification::Kind::Access(AccessNotification {
                        access_event: Some(event.clone()),
                        local_case_id: local_case_id.unwrap_or_default(),
                    });
                    notifications.push((ods_code, request.now, kind));
                    queued += 1;
                }
            }
            disclosed.push((
                member.index,
                Disclosure {
                    alerts,
                    recent,
                    access_id: event.access_id,
                },
                queued,
            ));
        }
        // Notifications last: taking a council's sequences locks its row until commit, so the
        // locks are held for as short a time as possible.
        outbox.enqueue_all(conn, notifications)?;
        for (index, disclosure, queued) in disclosed {
            set(
                &mut answers,
                index,
                Ok((Outcome::Disclosed(disclosure), queued)),
            );
        }
        committing = true;
        Ok(answers
            .into_iter()
            .map(|answer| {
                answer.unwrap_or_else(|| {
                    Err(RegistryError::Internal(
                        "a batched disclosure was left unanswered".to_owned(),
                    ))
                })
            })
            .collect())
    });
    match outcome {
        Err(error) if committing => {
            tracing::error!(%error, "a disclosure batch's commit failed; it may have been recorded");
            Err(RegistryError::OutcomeUnknown)
        }
        other => other,
    }
}

fn set(answers: &mut [Option<Answer>], index: usize, answer: Answer) {
    if let Some(slot) = answers.get_mut(index) {
        *slot = Some(answer);
    }
}

/// The enumeration guard, member by member in arrival order, before anything is read or
/// written: refused members are answered (their throttles and security events are written in
/// this transaction); the indexes of the others come back. A member whose deadline has passed
/// already is answered so without being counted.
fn guard(
    conn: &mut DbConnection,
    requests: &[DisclosureRequest],
    answers: &mut [Option<Answer>],
) -> Result<Vec<usize>, RegistryError> {
    let mut admitted = Vec::with_capacity(requests.len());
    let mut by_accessor: HashMap<String, Vec<String>> = HashMap::new();
    let mut by_organisation: HashMap<String, Vec<String>> = HashMap::new();
    let now = Instant::now();
    let in_time: Vec<usize> = requests
        .iter()
        .enumerate()
        .filter(|(_, r)| r.deadline.is_none_or(|deadline| now < deadline))
        .map(|(index, _)| index)
        .collect();
    // Every member's counts first (on PostgreSQL in one statement for the batch; on SQLite one
    // prepared-once statement each, even for a batch of one: `dialect::counts_first_for_one`),
    // read as if each member before it is let through; they hold while that is so (nearly
    // always). From the first member they do not let through (throttled, or a threshold
    // crossed: rare), each member is checked alone. Nothing to count when no member's guard has
    // a threshold on (all switched off for the accessor's kind): the counts would scan the
    // accessor's whole window for nothing.
    let counted = |&index: &usize| {
        requests
            .get(index)
            .is_some_and(|r| !r.limits.rules_for(&r.accessor).is_empty())
    };
    let worth_counting = in_time.len() > 1 || dialect::counts_first_for_one(conn);
    let mut fast = if worth_counting && in_time.iter().any(counted) {
        let mut seen_by_accessor: HashMap<String, Vec<String>> = HashMap::new();
        let mut seen_by_organisation: HashMap<String, Vec<String>> = HashMap::new();
        let questions: Vec<GuardQuestion> = in_time
            .iter()
            .filter_map(|&index| requests.get(index))
            .map(|request| {
                let key = request.accessor.key();
                let ods = request.accessor.ods_code().to_string();
                let question = GuardQuestion::new(
                    &request.limits,
                    &request.accessor,
                    &request.nhs_number,
                    request.now,
                    EarlierInBatch {
                        accessor: seen_by_accessor.get(&key).map_or(&[], Vec::as_slice),
                        organisation: seen_by_organisation.get(&ods).map_or(&[], Vec::as_slice),
                    },
                );
                let nhs = request.nhs_number.to_string();
                seen_by_accessor.entry(key).or_default().push(nhs.clone());
                seen_by_organisation.entry(ods).or_default().push(nhs);
                question
            })
            .collect();
        Some(dialect::guard_counts(conn, &questions)?.into_iter())
    } else {
        None
    };
    for (index, request) in requests.iter().enumerate() {
        if !in_time.contains(&index) {
            set(answers, index, Err(RegistryError::DeadlineExceeded));
            continue;
        }
        let key = request.accessor.key();
        let ods = request.accessor.ods_code().to_string();
        let earlier = EarlierInBatch {
            accessor: by_accessor.get(&key).map_or(&[], Vec::as_slice),
            organisation: by_organisation.get(&ods).map_or(&[], Vec::as_slice),
        };
        let counted = fast.as_mut().and_then(Iterator::next);
        let let_through = counted.is_some_and(|counts| {
            lets_through(
                &request.limits,
                &request.accessor,
                &request.nhs_number,
                &counts,
                earlier,
            )
        });
        if !let_through {
            fast = None;
        }
        if !let_through
            && let Some(throttled) = check(
                conn,
                &request.limits,
                &request.accessor,
                &request.nhs_number,
                request.now,
                earlier,
            )?
        {
            set(answers, index, Ok((Outcome::Throttled(throttled), 0)));
            continue;
        }
        let nhs = request.nhs_number.to_string();
        by_accessor.entry(key).or_default().push(nhs.clone());
        by_organisation.entry(ods).or_default().push(nhs);
        admitted.push(index);
    }
    Ok(admitted)
}

/// One read of the records of every admitted member's number and their councils, evaluated for
/// each member's day.
fn read_visible(
    conn: &mut DbConnection,
    requests: &[DisclosureRequest],
    admitted: Vec<usize>,
) -> Result<(Vec<Admitted>, HashMap<String, Council>), RegistryError> {
    let numbers: Vec<String> = admitted
        .iter()
        .filter_map(|&i| requests.get(i))
        .map(|r| r.nhs_number.to_string())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let (records, councils) = records_on_all(conn, &numbers)?;
    let admitted = admitted
        .into_iter()
        .filter_map(|index| {
            let request = requests.get(index)?;
            let stored = records
                .get(&request.nhs_number.to_string())
                .map_or(&[][..], Vec::as_slice);
            let visible = stored
                .iter()
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
                    (!plans.is_empty()).then(|| {
                        (stored.local_authority.clone(), case_id.clone(), plans)
                    })
                })
                .collect();
            Some(Admitted { index, visible })
        })
        .collect();
    Ok((admitted, councils))
}
