//! A council's record, validated at the edge against every rule of the contract into a domain
//! `ChildRecord`: each problem a field violation with a stable reason and the field's path.
//! Single writes and uploads share this one validator.

use chrono::NaiveDate;
use cpis_core::{
    nhs_number::NhsNumber,
    status::FieldViolation,
    text::{has_visible, is_bidi_control},
};
use cpis_proto::cpis::common::v1::{self as wire, ErrorReason, LookedAfterLegalBasis};
use cpis_proto::google::r#type::Date;

use super::convert::to_naive;
use crate::domain::dates::{EARLIEST_PLAUSIBLE, HORIZON_MONTHS, plus_months};
use crate::domain::record::{
    ChildRecord, LookedAfter, MAX_CASE_ID, MAX_NAME, PlanPeriod, UnbornPlan,
};

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

#[cfg(test)]
pub(crate) mod properties;
