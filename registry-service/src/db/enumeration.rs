//! SQL for the enumeration guard, run first in every disclosure's transaction: is the caller (or
//! its organisation) throttled, and would this lookup take a count of distinct NHS numbers in a
//! sliding window past its threshold? The counts are over `enumeration_last_seen`, each
//! subject's latest access of each number, which a trigger keeps from `access_events` (every
//! replica of every lookup service writes through it), so they hold for the whole deployment;
//! each count is a range scan of one index (subject, last seen, NHS number) that reads no more
//! rows than the window's distinct numbers, however often they were looked up. Crossing a
//! threshold claims the subject's row in `lookup_throttles` (only one racing transaction can)
//! and writes one security event.
//! Also the operators' listing of security events, and the pruning of rows no window counts.

use cpis_core::{accessor::ValidAccessor, nhs_number::NhsNumber};
use cpis_proto::cpis::registry::v1::{SecurityEvent, SecurityEventKind};
use diesel::dsl::{count_star, max};
use diesel::prelude::*;
use prost::Message as _;

use super::{
    DbConnection,
    dialect::LastSeenKey,
    models::{SecurityEventRow, ThrottleRow, decode},
    schema::{enumeration_last_seen, lookup_throttles, security_events},
};
use crate::domain::dates::timestamp;
use crate::domain::enumeration::{
    Counted, DAY, EnumerationLimits, HOUR, LAST_SEEN_KEPT, Rule, organisation_subject,
    throttled_until,
};
use crate::error::RegistryError;

/// Why a disclosure was refused: the caller or its organisation is throttled.
#[derive(Debug)]
pub(crate) struct Throttled {
    /// Until when (microseconds since the epoch): the latest of the throttles that apply.
    pub until: i64,
    /// Whether the organisation (rather than the user or system alone) is throttled.
    pub organisation: bool,
    /// The security events this call raised (crossings); empty when the caller was already
    /// throttled.
    pub raised: Vec<SecurityEvent>,
}

/// The NHS numbers that lookups earlier in the same group-committed transaction were let
/// through with (their access events are written later, in one statement): by the same accessor,
/// and by the same organisation. A check counts them as if each had been committed before it,
/// so a batch decides exactly as the same lookups one after another would.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct EarlierInBatch<'a> {
    /// Numbers earlier members with the same accessor key looked up.
    pub accessor: &'a [String],
    /// Numbers earlier members of the same organisation looked up.
    pub organisation: &'a [String],
}

/// `earlier`'s numbers other than `nhs`, each once, and the list a count must leave out of the
/// stored events (those numbers and `nhs`): the stored distinct numbers outside that list plus
/// these are exactly the distinct numbers of the stored and earlier lookups, `nhs` left out.
fn split_earlier(earlier: &[String], nhs: &str) -> (Vec<String>, Vec<String>) {
    let mut others: Vec<String> = earlier.iter().filter(|n| *n != nhs).cloned().collect();
    others.sort_unstable();
    others.dedup();
    let mut excluded = others.clone();
    excluded.push(nhs.to_owned());
    (others, excluded)
}

/// What the guard reads for one lookup: the latest throttle in force on its subjects, and the
/// distinct numbers already looked up in each window (earlier members of its batch and its own
/// number left out).
#[derive(Clone, Copy, Debug, Default, QueryableByName)]
pub(crate) struct GuardCounts {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    pub in_force: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    pub accessor_hour: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    pub accessor_day: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    pub organisation_hour: Option<i64>,
}

/// One lookup as the set-based guard query (`dialect::guard_counts`) asks about it.
#[derive(Clone, Debug)]
pub(crate) struct GuardQuestion {
    pub accessor_key: String,
    pub ods_code: String,
    /// The throttle keys of its enabled rules: the accessor's, the organisation's.
    pub accessor_throttle: Option<String>,
    pub organisation_throttle: Option<String>,
    pub now: i64,
    /// Numbers the counts leave out (its own and earlier members'), comma-separated.
    pub accessor_excluded: String,
    pub organisation_excluded: String,
}

impl GuardQuestion {
    /// The question for a lookup of `nhs_number` by `accessor` after `earlier`.
    pub fn new(
        limits: &EnumerationLimits,
        accessor: &ValidAccessor,
        nhs_number: &NhsNumber,
        now: i64,
        earlier: EarlierInBatch<'_>,
    ) -> Self {
        let rules = limits.rules_for(accessor);
        let nhs = nhs_number.to_string();
        let key_of = |organisation: bool| {
            rules
                .iter()
                .find(|r| matches!(r.counted, Counted::Organisation(_)) == organisation)
                .map(Rule::throttle_key)
        };
        Self {
            accessor_key: accessor.key(),
            ods_code: accessor.ods_code().to_string(),
            accessor_throttle: key_of(false),
            organisation_throttle: key_of(true),
            now,
            accessor_excluded: split_earlier(earlier.accessor, &nhs).1.join(","),
            organisation_excluded: split_earlier(earlier.organisation, &nhs).1.join(","),
        }
    }
}

/// True when `counts` (read with `earlier` and the lookup's own number left out) let the lookup
/// through with nothing to write: no throttle in force and no threshold crossed. When false,
/// `check` decides (and writes what a crossing writes).
pub(crate) fn lets_through(
    limits: &EnumerationLimits,
    accessor: &ValidAccessor,
    nhs_number: &NhsNumber,
    counts: &GuardCounts,
    earlier: EarlierInBatch<'_>,
) -> bool {
    let rules = limits.rules_for(accessor);
    if rules.is_empty() {
        return true;
    }
    if counts.in_force.is_some() {
        return false;
    }
    let nhs = nhs_number.to_string();
    let accessor_earlier = split_earlier(earlier.accessor, &nhs).0.len();
    let organisation_earlier = split_earlier(earlier.organisation, &nhs).0.len();
    rules.iter().all(|rule| {
        let (stored, earlier) = match (&rule.counted, rule.window) {
            (Counted::Organisation(_), _) => (counts.organisation_hour, organisation_earlier),
            (Counted::Accessor(_), DAY) => (counts.accessor_day, accessor_earlier),
            (Counted::Accessor(_), _) => (counts.accessor_hour, accessor_earlier),
        };
        let others = stored
            .unwrap_or(0)
            .saturating_add(i64::try_from(earlier).unwrap_or(i64::MAX));
        others < i64::from(rule.threshold)
    })
}

/// Inside the disclosure transaction, before anything is read or recorded: `Some` when this
/// lookup of `nhs_number` by `accessor` at `now` must be refused, counting `earlier` lookups of
/// the same transaction too. A lookup that crosses a threshold writes the throttle and its
/// security event (the caller commits them, and records no access); one that finds a throttle
/// in force writes nothing.
pub(crate) fn check(
    conn: &mut DbConnection,
    limits: &EnumerationLimits,
    accessor: &ValidAccessor,
    nhs_number: &NhsNumber,
    now: i64,
    earlier: EarlierInBatch<'_>,
) -> Result<Option<Throttled>, RegistryError> {
    let rules = limits.rules_for(accessor);
    if rules.is_empty() {
        return Ok(None);
    }
    // One statement, one round trip on the hot path: the latest throttle in force on any of the
    // caller's subjects (primary-key probes), and the distinct numbers already looked up in
    // each window, this one left out (a child looked up again is not a new one, and never
    // crosses a threshold). Each count is a range scan of one covering index.
    let keys: Vec<String> = rules.iter().map(Rule::throttle_key).collect();
    let nhs = nhs_number.to_string();
    let key = accessor.key();
    let ods = accessor.ods_code().to_string();
    let (accessor_earlier, accessor_excluded) = split_earlier(earlier.accessor, &nhs);
    let (organisation_earlier, organisation_excluded) = split_earlier(earlier.organisation, &nhs);
    let by_accessor = |window: i64| {
        enumeration_last_seen::table
            .filter(enumeration_last_seen::subject.eq(key.clone()))
            .filter(enumeration_last_seen::last_seen.gt(now.saturating_sub(window)))
            .filter(enumeration_last_seen::nhs_number.ne_all(accessor_excluded.clone()))
            .select(count_star())
            .single_value()
    };
    let by_organisation = enumeration_last_seen::table
        .filter(enumeration_last_seen::subject.eq(organisation_subject(&ods)))
        .filter(enumeration_last_seen::last_seen.gt(now.saturating_sub(HOUR)))
        .filter(enumeration_last_seen::nhs_number.ne_all(organisation_excluded.clone()))
        .select(count_star())
        .single_value();
    let in_force = lookup_throttles::table
        .filter(lookup_throttles::subject.eq_any(keys.clone()))
        .filter(lookup_throttles::throttled_until.gt(now))
        .select(max(lookup_throttles::throttled_until))
        .single_value();
    let (in_force, accessor_hour, accessor_day, organisation_hour): (
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
    ) = diesel::select((
        in_force,
        by_accessor(HOUR),
        by_accessor(DAY),
        by_organisation,
    ))
    .get_result(conn)?;
    if let Some(until) = in_force {
        // Throttled already: nothing to write. Whether it is the organisation's (rare path).
        let organisation: i64 = lookup_throttles::table
            .filter(lookup_throttles::subject.eq(organisation_subject(&ods)))
            .filter(lookup_throttles::throttled_until.gt(now))
            .count()
            .get_result(conn)?;
        return Ok(Some(Throttled {
            until,
            organisation: organisation > 0,
            raised: Vec::new(),
        }));
    }

    let mut throttled: Option<Throttled> = None;
    for rule in &rules {
        let (stored, earlier, excluded) = match (&rule.counted, rule.window) {
            (Counted::Organisation(_), _) => (
                organisation_hour,
                &organisation_earlier,
                &organisation_excluded,
            ),
            (Counted::Accessor(_), DAY) => (accessor_day, &accessor_earlier, &accessor_excluded),
            (Counted::Accessor(_), _) => (accessor_hour, &accessor_earlier, &accessor_excluded),
        };
        let earlier_count = i64::try_from(earlier.len()).unwrap_or(i64::MAX);
        let others = stored.unwrap_or(0).saturating_add(earlier_count);
        if others < i64::from(rule.threshold) {
            continue;
        }
        let until = crossing_until(conn, rule, excluded, earlier.len(), now)?;
        let raised = claim(conn, rule, accessor, until, now)?;
        let refusal = throttled.get_or_insert(Throttled {
            until,
            organisation: false,
            raised: Vec::new(),
        });
        refusal.until = refusal.until.max(until);
        refusal.organisation |= matches!(rule.counted, Counted::Organisation(_));
        refusal.raised.push(raised);
    }
    Ok(throttled)
}

/// Until when a subject crossing `rule` now is refused: when enough of its numbers have left the
/// window. Read only on a crossing (rare), so reading each number's last time is affordable.
/// The stored numbers outside `excluded`, and `earlier` more looked up in this transaction
/// (at about `now`).
fn crossing_until(
    conn: &mut DbConnection,
    rule: &Rule,
    excluded: &[String],
    earlier: usize,
    now: i64,
) -> Result<i64, RegistryError> {
    let since = now.saturating_sub(rule.window);
    let mut last_seen: Vec<i64> = enumeration_last_seen::table
        .filter(enumeration_last_seen::subject.eq(rule.throttle_key()))
        .filter(enumeration_last_seen::last_seen.gt(since))
        .filter(enumeration_last_seen::nhs_number.ne_all(excluded))
        .select(enumeration_last_seen::last_seen)
        .load(conn)?;
    last_seen.extend(std::iter::repeat_n(now, earlier));
    // At least a moment from now, so a refusal always says to wait.
    Ok(throttled_until(last_seen, rule.threshold, rule.window)
        .unwrap_or(now)
        .max(now.saturating_add(1)))
}

/// Claims the subject's throttle until `until` and raises its security event. A claim only
/// succeeds over no row or a lapsed one; when another transaction holds (or has just taken) it,
/// PostgreSQL makes this UPDATE wait for it and then find nothing to update, and this INSERT
/// fail as a unique violation, which runs the disclosure again (`retry_races`) to find the
/// throttle in force: one crossing, one event, however many replicas race.
fn claim(
    conn: &mut DbConnection,
    rule: &Rule,
    accessor: &ValidAccessor,
    until: i64,
    now: i64,
) -> Result<SecurityEvent, RegistryError> {
    let key = rule.throttle_key();
    let renewed = diesel::update(
        lookup_throttles::table
            .filter(lookup_throttles::subject.eq(&key))
            .filter(lookup_throttles::throttled_until.le(now)),
    )
    .set(lookup_throttles::throttled_until.eq(until))
    .execute(conn)?;
    if renewed == 0 {
        diesel::insert_into(lookup_throttles::table)
            .values(ThrottleRow {
                subject: key,
                throttled_until: until,
            })
            .execute(conn)?;
    }
    let event = SecurityEvent {
        event_id: new_event_id(now),
        event_time: Some(timestamp(now)),
        kind: SecurityEventKind::LookupsThrottled as i32,
        subject: rule.subject as i32,
        accessor: Some(accessor.as_wire().clone()),
        threshold: rule.threshold,
        window: Some(prost_types::Duration {
            seconds: rule.window / 1_000_000,
            nanos: 0,
        }),
        throttled_until: Some(timestamp(until)),
    };
    diesel::insert_into(security_events::table)
        .values((
            security_events::event_time.eq(now),
            security_events::event.eq(event.encode_to_vec()),
        ))
        .execute(conn)?;
    Ok(event)
}

fn new_event_id(now: i64) -> String {
    use rand_core::RngCore as _;
    let mut rng = rand_core::OsRng;
    format!("sev-{now:x}-{:016x}", rng.next_u64())
}

/// Security events, newest first, before `before` (an event's row id), each with its row id
/// (the page cursor); an event that does not decode is reported and comes back as `None`.
pub(crate) fn list_security_events(
    conn: &mut DbConnection,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<(i64, Option<SecurityEvent>)>, RegistryError> {
    let mut query = security_events::table
        .order(security_events::id.desc())
        .limit(limit)
        .select(SecurityEventRow::as_select())
        .into_boxed();
    if let Some(before) = before {
        query = query.filter(security_events::id.lt(before));
    }
    Ok(query
        .load(conn)?
        .into_iter()
        .map(|row| (row.id, decode(&row.event, "security_events", row.id).ok()))
        .collect())
}

/// Rows one chunk of a prune spans, in key order (it deletes those of them no window counts):
/// a chunk is one short statement, so a disclosure waits at most for one chunk (SQLite's single
/// writer) or not at all (PostgreSQL), however few old rows the table holds.
pub(crate) const PRUNE_SPAN: i64 = 1_000;

/// One chunk of the prune at `now` (see `dialect::delete_last_seen_before`): of the next
/// `PRUNE_SPAN` rows after `after`, deletes those of `enumeration_last_seen` that no window can
/// count any more (older than `LAST_SEEN_KEPT`). Returns how many, and the key the next chunk
/// starts after, or `None` when the pass has reached the end of the table.
pub(crate) fn prune_chunk(
    conn: &mut DbConnection,
    now: i64,
    after: &LastSeenKey,
) -> Result<(usize, Option<LastSeenKey>), RegistryError> {
    super::dialect::delete_last_seen_before(conn, (now, LAST_SEEN_KEPT), after, PRUNE_SPAN)
}
