//! Wire messages to domain types and back, at the edge: a council's record is validated
//! against every rule of the contract into a `ChildRecord` (each problem a field violation with
//! a stable reason), and stored records, councils, visible plans and accesses become the
//! messages callers receive. Adding a field to the lookup answer means a domain field
//! (`domain::visibility::VisiblePlan`) and its line in `disclosed_plan` here.

use chrono::NaiveDate;
use cpis_core::{
    nhs_number::NhsNumber,
    status::FieldViolation,
    text::{has_visible, is_bidi_control},
};
use cpis_proto::cpis::common::v1::{
    self as wire, AccessEvent, DisclosedPlan, ErrorReason, LocalAuthority, LookedAfterLegalBasis,
    Organisation, RecentAccess, accessor::Kind,
};
use cpis_proto::google::r#type::Date;

use crate::domain::contacts::Council;
use crate::domain::dates::{
    EARLIEST_PLAUSIBLE, HORIZON_MONTHS, on_the_wire, plus_months, timestamp, ymd,
};
use crate::domain::record::{
    ChildRecord, LookedAfter, MAX_CASE_ID, MAX_NAME, PlanPeriod, StoredRecord, UnbornPlan,
};
use crate::domain::visibility::VisiblePlan;

/// Collects violations with a common field-path prefix ("record." for a put, "" in a batch).
struct Violations<'a> {
    prefix: &'a str,
    list: Vec<FieldViolation>,
}

impl Violations<'_> {
    fn add(&mut self, field: &str, reason: ErrorReason, description: impl Into<String>) {
        self.list.push(FieldViolation::new(
            format!("{}{field}", self.prefix),
            reason,
            description,
        ));
    }
}

/// Text fields: bounded, no control characters, no bidi controls (they reorder what a clinician
/// or council reads), and something visible (not only zero-width characters).
fn check_text(v: &mut Violations<'_>, field: &str, value: &str, required: bool, max: usize) {
    if value.trim().is_empty() {
        if required {
            v.add(field, ErrorReason::FieldRequired, "is required");
        }
        return;
    }
    if value.chars().count() > max {
        v.add(
            field,
            ErrorReason::FieldTooLong,
            format!("must be at most {max} characters"),
        );
    } else if value.chars().any(char::is_control) {
        v.add(
            field,
            ErrorReason::FieldFormat,
            "must not contain control characters",
        );
    } else if value.chars().any(is_bidi_control) {
        v.add(
            field,
            ErrorReason::FieldFormat,
            "must not contain bidirectional control characters (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C)",
        );
    } else if !has_visible(value) {
        v.add(
            field,
            ErrorReason::FieldFormat,
            "must contain a visible character (not only zero-width or blank characters)",
        );
    }
}

/// Converts a google.type.Date with year, month and day all set, within google.type.Date's own
/// range (year 1..=9999): chrono accepts years up to 262143, which the wire cannot carry back.
pub(crate) fn to_naive(date: &Date) -> Option<NaiveDate> {
    let month = u32::try_from(date.month).ok()?;
    let day = u32::try_from(date.day).ok()?;
    NaiveDate::from_ymd_opt(date.year, month, day).filter(|d| on_the_wire(*d))
}

/// The wire form of a date.
pub(crate) fn to_wire_date(date: NaiveDate) -> Date {
    let (year, month, day) = ymd(date);
    // month is 1..=12 and day 1..=31: both fit an i32.
    Date {
        year,
        month: i32::try_from(month).unwrap_or_default(),
        day: i32::try_from(day).unwrap_or_default(),
    }
}

fn required_date(
    v: &mut Violations<'_>,
    field: &str,
    date: Option<&Date>,
    too_early: ErrorReason,
) -> Option<NaiveDate> {
    match date {
        None => {
            v.add(field, ErrorReason::FieldRequired, "is required");
            None
        }
        Some(d) => optional_date(v, field, Some(d), too_early),
    }
}

/// A date in the contract's calendar: a real date from 1900-01-01 (`too_early` before it) to
/// 9999-12-31. `None` when absent or refused, so no later rule reasons about a refused date.
fn optional_date(
    v: &mut Violations<'_>,
    field: &str,
    date: Option<&Date>,
    too_early: ErrorReason,
) -> Option<NaiveDate> {
    let d = date?;
    let Some(parsed) = to_naive(d) else {
        v.add(
            field,
            ErrorReason::FieldFormat,
            "must be a real calendar date with year (1-9999), month and day set",
        );
        return None;
    };
    if parsed < EARLIEST_PLAUSIBLE {
        v.add(field, too_early, "must not be before 1900-01-01");
        return None;
    }
    Some(parsed)
}

/// Refuses `date` (DATE_IN_FUTURE) when it is more than `months` after `today`.
fn not_beyond(
    v: &mut Violations<'_>,
    field: &str,
    date: Option<NaiveDate>,
    today: NaiveDate,
    months: u32,
    description: &str,
) {
    if let Some(date) = date
        && plus_months(today, months).is_none_or(|limit| date > limit)
    {
        v.add(field, ErrorReason::DateInFuture, description);
    }
}

fn period(
    v: &mut Violations<'_>,
    block: &str,
    wire: Option<&wire::PlanPeriod>,
    today: NaiveDate,
) -> Option<PlanPeriod> {
    let Some(p) = wire else {
        v.add(
            &format!("{block}.period"),
            ErrorReason::FieldRequired,
            "is required",
        );
        return None;
    };
    let early = ErrorReason::FieldFormat;
    let start_field = format!("{block}.period.start_date");
    let start = required_date(v, &start_field, p.start_date.as_ref(), early);
    let end_field = format!("{block}.period.end_date");
    let end = optional_date(v, &end_field, p.end_date.as_ref(), early);
    let delete_field = format!("{block}.period.delete_date");
    let delete = optional_date(v, &delete_field, p.delete_date.as_ref(), early);
    let horizon = "must not be more than 25 years in the future";
    not_beyond(v, &end_field, end, today, HORIZON_MONTHS, horizon);
    not_beyond(v, &delete_field, delete, today, HORIZON_MONTHS, horizon);
    let start = start?;
    not_beyond(
        v,
        &start_field,
        Some(start),
        today,
        12,
        "must not be more than 1 year in the future",
    );
    if let Some(end) = end
        && end < start
    {
        v.add(
            &format!("{block}.period.end_date"),
            ErrorReason::DateOrder,
            "must not be before start_date",
        );
    }
    Some(PlanPeriod { start, end, delete })
}

/// Validates a wire record against every rule of the contract. `prefix` is prepended to field
/// paths ("record." for PutChildRecord, "" for a record in a batch). `today` is the registry's
/// current date.
pub(crate) fn validate_record(
    record: &wire::ChildRecord,
    prefix: &str,
    today: NaiveDate,
) -> Result<ChildRecord, Vec<FieldViolation>> {
    let mut v = Violations {
        prefix,
        list: Vec::new(),
    };

    let nhs_number =
        match NhsNumber::parse_field(&record.nhs_number, &format!("{prefix}nhs_number")) {
            Ok(n) => Some(n),
            Err(violation) => {
                v.list.push(violation);
                None
            }
        };
    check_text(
        &mut v,
        "local_case_id",
        &record.local_case_id,
        false,
        MAX_CASE_ID,
    );
    check_text(&mut v, "given_name", &record.given_name, true, MAX_NAME);
    check_text(&mut v, "family_name", &record.family_name, true, MAX_NAME);

    let dob = required_date(
        &mut v,
        "date_of_birth",
        record.date_of_birth.as_ref(),
        ErrorReason::DateOfBirthImplausible,
    );
    if let Some(dob) = dob
        && dob > today
    {
        v.add(
            "date_of_birth",
            ErrorReason::DateInFuture,
            "must not be in the future",
        );
    }

    let cpp = record
        .child_protection_plan
        .as_ref()
        .and_then(|b| period(&mut v, "child_protection_plan", b.period.as_ref(), today));
    let lac = record.looked_after_child.as_ref().and_then(|b| {
        let p = period(&mut v, "looked_after_child", b.period.as_ref(), today);
        let basis = match LookedAfterLegalBasis::try_from(b.legal_basis) {
            Ok(LookedAfterLegalBasis::Unspecified) => {
                v.add(
                    "looked_after_child.legal_basis",
                    ErrorReason::FieldRequired,
                    "is required (s31, s38 or s20)",
                );
                None
            }
            Ok(basis) => Some(basis),
            Err(_) => {
                v.add(
                    "looked_after_child.legal_basis",
                    ErrorReason::FieldFormat,
                    "is not a known legal basis",
                );
                None
            }
        };
        Some(LookedAfter {
            period: p?,
            legal_basis: basis?,
        })
    });
    let ucpp = record.unborn_child_protection_plan.as_ref().and_then(|b| {
        let p = period(
            &mut v,
            "unborn_child_protection_plan",
            b.period.as_ref(),
            today,
        );
        let edd = required_date(
            &mut v,
            "unborn_child_protection_plan.expected_delivery_date",
            b.expected_delivery_date.as_ref(),
            ErrorReason::FieldFormat,
        );
        if let (Some(p), Some(edd)) = (p, edd)
            && (edd < p.start || plus_months(p.start, 10).is_none_or(|limit| edd > limit))
        {
            v.add(
                "unborn_child_protection_plan.expected_delivery_date",
                ErrorReason::DateOrder,
                "must be on or after the plan's start and within 10 months of it",
            );
        }
        Some(UnbornPlan {
            period: p?,
            expected_delivery: edd?,
        })
    });

    if record.child_protection_plan.is_none()
        && record.looked_after_child.is_none()
        && record.unborn_child_protection_plan.is_none()
    {
        v.list.push(FieldViolation::new(
            if prefix.is_empty() { "record".to_owned() } else { prefix.trim_end_matches('.').to_owned() },
            ErrorReason::PlanRequired,
            "at least one of child_protection_plan, looked_after_child or unborn_child_protection_plan is required",
        ));
    }

    // A child's plans: the person must be born by the plan's start and under 18 at it.
    if let Some(dob) = dob {
        let child_starts = [
            (
                "child_protection_plan.period.start_date",
                cpp.map(|p| p.start),
            ),
            (
                "looked_after_child.period.start_date",
                lac.map(|l| l.period.start),
            ),
        ];
        for (field, start) in child_starts {
            let Some(start) = start else { continue };
            if start < dob {
                v.add(
                    field,
                    ErrorReason::DateOrder,
                    "must not be before date_of_birth",
                );
            } else if plus_months(dob, 18 * 12).is_some_and(|adult| adult <= start) {
                v.add(
                    "date_of_birth",
                    ErrorReason::DateOfBirthImplausible,
                    "the child must be under 18 when the plan starts",
                );
            }
        }
    }

    match (nhs_number, dob) {
        (Some(nhs_number), Some(date_of_birth)) if v.list.is_empty() => Ok(ChildRecord {
            nhs_number,
            local_case_id: Some(record.local_case_id.trim().to_owned()).filter(|s| !s.is_empty()),
            given_name: record.given_name.trim().to_owned(),
            family_name: record.family_name.trim().to_owned(),
            date_of_birth,
            child_protection_plan: cpp,
            looked_after_child: lac,
            unborn_child_protection_plan: ucpp,
        }),
        _ => Err(v.list),
    }
}

fn wire_period(period: &PlanPeriod) -> wire::PlanPeriod {
    wire::PlanPeriod {
        start_date: Some(to_wire_date(period.start)),
        end_date: period.end.map(to_wire_date),
        delete_date: period.delete.map(to_wire_date),
    }
}

/// A stored record as its council sees it (delete dates included).
pub(crate) fn record_to_wire(stored: &StoredRecord) -> wire::ChildRecord {
    let record = &stored.record;
    wire::ChildRecord {
        nhs_number: record.nhs_number.to_string(),
        local_case_id: record.local_case_id.clone().unwrap_or_default(),
        given_name: record.given_name.clone(),
        family_name: record.family_name.clone(),
        date_of_birth: Some(to_wire_date(record.date_of_birth)),
        child_protection_plan: record
            .child_protection_plan
            .map(|p| wire::ChildProtectionPlan {
                period: Some(wire_period(&p)),
            }),
        looked_after_child: record.looked_after_child.map(|l| wire::LookedAfterChild {
            period: Some(wire_period(&l.period)),
            legal_basis: l.legal_basis as i32,
        }),
        unborn_child_protection_plan: record.unborn_child_protection_plan.map(|u| {
            wire::UnbornChildProtectionPlan {
                period: Some(wire_period(&u.period)),
                expected_delivery_date: Some(to_wire_date(u.expected_delivery)),
            }
        }),
        local_authority_ods_code: stored.local_authority.to_string(),
        version: stored.version,
        create_time: Some(timestamp(stored.create_time)),
        update_time: Some(timestamp(stored.update_time)),
    }
}

/// A council's contact details on the wire; `update_time` only for the council itself.
pub(crate) fn council_to_wire(council: &Council, with_update_time: bool) -> LocalAuthority {
    LocalAuthority {
        ods_code: council.ods_code.to_string(),
        name: council.contacts.name.clone(),
        emergency_duty_phone: council.contacts.emergency_duty_phone.clone(),
        office_hours_phone: council
            .contacts
            .office_hours_phone
            .clone()
            .unwrap_or_default(),
        update_time: with_update_time.then(|| timestamp(council.update_time)),
    }
}

/// A plan as health sees it.
pub(crate) fn disclosed_plan(plan: &VisiblePlan) -> DisclosedPlan {
    DisclosedPlan {
        plan_type: plan.plan_type as i32,
        start_date: Some(to_wire_date(plan.start)),
        end_date: plan.end.map(to_wire_date),
        legal_basis: plan
            .legal_basis
            .map_or(0, |b: LookedAfterLegalBasis| b as i32),
        expected_delivery_date: plan.expected_delivery.map(to_wire_date),
    }
}

/// A recorded access as health sees it: when, where, who and their role.
pub(crate) fn recent_access(event: &AccessEvent) -> RecentAccess {
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
        organisation: accessor.organisation.map(|o| Organisation {
            ods_code: o.ods_code,
            name: o.name,
        }),
        care_setting: accessor.care_setting,
        accessor_name: name,
        job_role_name: role,
        access_mode: event.access_mode,
    }
}

#[cfg(test)]
pub(crate) mod properties {
    //! Whatever a caller sends, validation never panics: it accepts a record whose every date
    //! is within the contract's bounds, or names real fields.
    use proptest::prelude::*;

    use super::*;
    use crate::domain::dates::LAST_WIRE_DATE;

    /// Any google.type.Date: anything at all, near the plausible range, or at the edges.
    pub(crate) fn any_wire_date() -> impl Strategy<Value = Date> {
        let edge = prop::sample::select(vec![
            i32::MIN,
            -1,
            0,
            1,
            1899,
            1900,
            9999,
            10_000,
            262_142,
            262_143,
            262_144,
            i32::MAX,
        ]);
        prop_oneof![
            (any::<i32>(), any::<i32>(), any::<i32>()),
            (1890..2060i32, -1..14i32, -1..33i32),
            (edge, 0..14i32, 0..33i32),
        ]
        .prop_map(|(year, month, day)| Date { year, month, day })
    }

    fn any_period() -> impl Strategy<Value = Option<wire::PlanPeriod>> {
        let date = || prop::option::weighted(0.8, any_wire_date());
        prop::option::weighted(
            0.9,
            (date(), date(), date()).prop_map(|(start_date, end_date, delete_date)| {
                wire::PlanPeriod {
                    start_date,
                    end_date,
                    delete_date,
                }
            }),
        )
    }

    fn any_record() -> impl Strategy<Value = wire::ChildRecord> {
        let nhs = prop::sample::select(vec!["9990000018", "9991234560", "", "99900000189"]);
        let text = "(?s).{0,110}";
        let cpp =
            prop::option::of(any_period().prop_map(|period| wire::ChildProtectionPlan { period }));
        let lac = prop::option::of((any_period(), -1..6i32).prop_map(|(period, legal_basis)| {
            wire::LookedAfterChild {
                period,
                legal_basis,
            }
        }));
        let ucpp = prop::option::of(
            (any_period(), prop::option::weighted(0.9, any_wire_date())).prop_map(
                |(period, expected_delivery_date)| wire::UnbornChildProtectionPlan {
                    period,
                    expected_delivery_date,
                },
            ),
        );
        (
            nhs,
            text,
            text,
            prop::option::weighted(0.9, any_wire_date()),
            cpp,
            lac,
            ucpp,
        )
            .prop_map(
                |(nhs, given, family, dob, cpp, lac, ucpp)| wire::ChildRecord {
                    nhs_number: nhs.to_owned(),
                    given_name: given,
                    family_name: family,
                    date_of_birth: dob,
                    child_protection_plan: cpp,
                    looked_after_child: lac,
                    unborn_child_protection_plan: ucpp,
                    ..Default::default()
                },
            )
    }

    /// Every field path validation may name (under "record.").
    fn known_fields() -> Vec<String> {
        let mut fields: Vec<String> = [
            "nhs_number",
            "local_case_id",
            "given_name",
            "family_name",
            "date_of_birth",
            "looked_after_child.legal_basis",
            "unborn_child_protection_plan.expected_delivery_date",
        ]
        .iter()
        .map(|f| format!("record.{f}"))
        .collect();
        for block in [
            "child_protection_plan",
            "looked_after_child",
            "unborn_child_protection_plan",
        ] {
            for tail in [
                "period",
                "period.start_date",
                "period.end_date",
                "period.delete_date",
            ] {
                fields.push(format!("record.{block}.{tail}"));
            }
        }
        fields.push("record".to_owned());
        fields
    }

    fn check_accepted(record: &ChildRecord, today: NaiveDate) {
        let within = |d: NaiveDate| (EARLIEST_PLAUSIBLE..=LAST_WIRE_DATE).contains(&d);
        let horizon = plus_months(today, HORIZON_MONTHS).unwrap_or(LAST_WIRE_DATE);
        let start_limit = plus_months(today, 12).unwrap_or(LAST_WIRE_DATE);
        assert!(within(record.date_of_birth) && record.date_of_birth <= today);
        let periods = [
            record.child_protection_plan,
            record.looked_after_child.map(|l| l.period),
            record.unborn_child_protection_plan.map(|u| u.period),
        ];
        for p in periods.into_iter().flatten() {
            assert!(within(p.start) && p.start <= start_limit);
            for d in [p.end, p.delete].into_iter().flatten() {
                assert!(within(d) && d <= horizon);
            }
            assert!(p.end.is_none_or(|end| end >= p.start));
        }
        if let Some(u) = record.unborn_child_protection_plan {
            assert!(u.expected_delivery >= u.period.start);
            assert!(plus_months(u.period.start, 10).is_some_and(|l| u.expected_delivery <= l));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn validation_accepts_bounded_records_or_names_real_fields(
            record in any_record(),
            today_days in 0..60_000i32,
        ) {
            let today = crate::domain::dates::from_days(today_days).unwrap_or_default();
            let known = known_fields();
            match validate_record(&record, "record.", today) {
                Ok(valid) => check_accepted(&valid, today),
                Err(violations) => {
                    prop_assert!(!violations.is_empty());
                    for v in violations {
                        prop_assert!(known.contains(&v.field), "unknown field {}", v.field);
                        prop_assert!(v.reason != ErrorReason::Unspecified);
                    }
                }
            }
        }
    }
}
