//! Validated domain types for what councils send — `ChildRecord`, `PlanPeriod`, contact
//! details — converted from the wire with every rule of the contract, and to and from database
//! rows. Wire types stop at the handler; these are what the rest of the registry uses.

use chrono::{Datelike as _, Months, NaiveDate};
use cpis_core::{
    nhs_number::{NhsNumber, NhsNumberError},
    status::FieldViolation,
};
use cpis_proto::cpis::common::v1::{self as wire, ErrorReason, LookedAfterLegalBasis};
use cpis_proto::google::r#type::Date;

use crate::db::models::{ChildRecordRow, RecordContent};

/// Longest given or family name.
pub const MAX_NAME: usize = 100;
/// Longest council case id.
pub const MAX_CASE_ID: usize = 64;
/// Longest council or organisation name.
pub const MAX_ORG_NAME: usize = 200;

/// A plan's dates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanPeriod {
    /// Start date.
    pub start: NaiveDate,
    /// End date, if any.
    pub end: Option<NaiveDate>,
    /// Delete (withdrawn in error) date, if any.
    pub delete: Option<NaiveDate>,
}

impl PlanPeriod {
    /// True while the plan has not ended and is not withdrawn, as of `today`.
    pub fn is_active(&self, today: NaiveDate) -> bool {
        self.end.is_none_or(|end| end >= today) && self.delete.is_none_or(|delete| delete > today)
    }
}

/// A validated council record for one NHS number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildRecord {
    /// The NHS number the record is held on.
    pub nhs_number: NhsNumber,
    /// The council's case id.
    pub local_case_id: Option<String>,
    /// Given name(s).
    pub given_name: String,
    /// Family name.
    pub family_name: String,
    /// Date of birth (the mother's for a UCPP-only record).
    pub date_of_birth: NaiveDate,
    /// CPP block.
    pub child_protection_plan: Option<PlanPeriod>,
    /// LAC block and its legal basis.
    pub looked_after_child: Option<(PlanPeriod, LookedAfterLegalBasis)>,
    /// UCPP block and its expected delivery date.
    pub unborn_child_protection_plan: Option<(PlanPeriod, NaiveDate)>,
}

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

/// Validates an NHS number field, naming `field` in the violation.
pub fn parse_nhs_number(value: &str, field: &str) -> Result<NhsNumber, FieldViolation> {
    NhsNumber::parse(value).map_err(|e| {
        let description = match e {
            NhsNumberError::Format => "must be exactly 10 digits with no spaces",
            NhsNumberError::CheckDigit => "Modulus 11 check digit is not valid",
            NhsNumberError::Implausible => "is not a plausible NHS number",
        };
        FieldViolation::new(field, ErrorReason::NhsNumberInvalid, description)
    })
}

/// Validates an ODS code: 3 to 10 upper-case letters and digits.
pub fn is_ods_code(value: &str) -> bool {
    (3..=10).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// Validates a UK phone number as the contract describes it: digits with optional spaces and
/// hyphens, an optional leading '+', 10 to 15 digits.
pub fn is_phone(value: &str) -> bool {
    let body = value.strip_prefix('+').unwrap_or(value);
    let digits = body.bytes().filter(u8::is_ascii_digit).count();
    (10..=15).contains(&digits)
        && body
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b' ' || b == b'-')
        && value.len() <= 24
}

/// Text fields: bounded, no control characters.
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
    }
}

/// Converts a google.type.Date with year, month and day all set.
pub fn to_naive(date: &Date) -> Option<NaiveDate> {
    let month = u32::try_from(date.month).ok()?;
    let day = u32::try_from(date.day).ok()?;
    if date.year < 1 {
        return None;
    }
    NaiveDate::from_ymd_opt(date.year, month, day)
}

/// The wire form of a date.
pub fn to_wire_date(date: NaiveDate) -> Date {
    Date {
        year: date.year(),
        // month() is 1..=12 and day() 1..=31: both fit an i32.
        month: i32::try_from(date.month()).unwrap_or_default(),
        day: i32::try_from(date.day()).unwrap_or_default(),
    }
}

fn required_date(v: &mut Violations<'_>, field: &str, date: Option<&Date>) -> Option<NaiveDate> {
    match date {
        None => {
            v.add(field, ErrorReason::FieldRequired, "is required");
            None
        }
        Some(d) => optional_date(v, field, Some(d)),
    }
}

fn optional_date(v: &mut Violations<'_>, field: &str, date: Option<&Date>) -> Option<NaiveDate> {
    let d = date?;
    let parsed = to_naive(d);
    if parsed.is_none() {
        v.add(
            field,
            ErrorReason::FieldFormat,
            "must be a real calendar date with year, month and day set",
        );
    }
    parsed
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
    let start = required_date(
        v,
        &format!("{block}.period.start_date"),
        p.start_date.as_ref(),
    );
    let end = optional_date(v, &format!("{block}.period.end_date"), p.end_date.as_ref());
    let delete = optional_date(
        v,
        &format!("{block}.period.delete_date"),
        p.delete_date.as_ref(),
    );
    let start = start?;
    if start > today + Months::new(12) {
        v.add(
            &format!("{block}.period.start_date"),
            ErrorReason::DateInFuture,
            "must not be more than 1 year in the future",
        );
    }
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
pub fn validate_record(
    record: &wire::ChildRecord,
    prefix: &str,
    today: NaiveDate,
) -> Result<ChildRecord, Vec<FieldViolation>> {
    let mut v = Violations {
        prefix,
        list: Vec::new(),
    };

    let nhs_number = match parse_nhs_number(&record.nhs_number, &format!("{prefix}nhs_number")) {
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

    let dob = required_date(&mut v, "date_of_birth", record.date_of_birth.as_ref());
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
        Some((p?, basis?))
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
        );
        if let (Some(p), Some(edd)) = (p, edd)
            && (edd < p.start || edd > p.start + Months::new(10))
        {
            v.add(
                "unborn_child_protection_plan.expected_delivery_date",
                ErrorReason::DateOrder,
                "must be on or after the plan's start and within 10 months of it",
            );
        }
        Some((p?, edd?))
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
                lac.map(|(p, _)| p.start),
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
            } else if dob + Months::new(18 * 12) <= start {
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

const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// Days since 1970-01-01, as stored.
pub fn to_days(date: NaiveDate) -> i32 {
    date.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE
}

/// The date `days` after 1970-01-01; `None` if out of range (a corrupt row).
pub fn from_days(days: i32) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(days.checked_add(UNIX_EPOCH_DAYS_FROM_CE)?)
}

impl ChildRecord {
    /// The stored content.
    pub fn content(&self) -> RecordContent {
        let days = |d: Option<NaiveDate>| d.map(to_days);
        RecordContent {
            local_case_id: self.local_case_id.clone(),
            given_name: self.given_name.clone(),
            family_name: self.family_name.clone(),
            date_of_birth: to_days(self.date_of_birth),
            cpp_start: self.child_protection_plan.map(|p| to_days(p.start)),
            cpp_end: days(self.child_protection_plan.and_then(|p| p.end)),
            cpp_delete: days(self.child_protection_plan.and_then(|p| p.delete)),
            lac_start: self.looked_after_child.map(|(p, _)| to_days(p.start)),
            lac_end: days(self.looked_after_child.and_then(|(p, _)| p.end)),
            lac_delete: days(self.looked_after_child.and_then(|(p, _)| p.delete)),
            lac_legal_basis: self.looked_after_child.map(|(_, b)| b as i32),
            ucpp_start: self
                .unborn_child_protection_plan
                .map(|(p, _)| to_days(p.start)),
            ucpp_end: days(self.unborn_child_protection_plan.and_then(|(p, _)| p.end)),
            ucpp_delete: days(
                self.unborn_child_protection_plan
                    .and_then(|(p, _)| p.delete),
            ),
            ucpp_expected_delivery: self
                .unborn_child_protection_plan
                .map(|(_, edd)| to_days(edd)),
        }
    }
}

fn wire_period(start: i32, end: Option<i32>, delete: Option<i32>) -> wire::PlanPeriod {
    let date = |d: i32| from_days(d).map(to_wire_date);
    wire::PlanPeriod {
        start_date: date(start),
        end_date: end.and_then(date),
        delete_date: delete.and_then(date),
    }
}

/// A stored row as the council sees it (delete dates included).
pub fn row_to_wire(row: &ChildRecordRow) -> wire::ChildRecord {
    wire::ChildRecord {
        nhs_number: row.nhs_number.clone(),
        local_case_id: row.local_case_id.clone().unwrap_or_default(),
        given_name: row.given_name.clone(),
        family_name: row.family_name.clone(),
        date_of_birth: from_days(row.date_of_birth).map(to_wire_date),
        child_protection_plan: row.cpp_start.map(|s| wire::ChildProtectionPlan {
            period: Some(wire_period(s, row.cpp_end, row.cpp_delete)),
        }),
        looked_after_child: row.lac_start.map(|s| wire::LookedAfterChild {
            period: Some(wire_period(s, row.lac_end, row.lac_delete)),
            legal_basis: row.lac_legal_basis.unwrap_or_default(),
        }),
        unborn_child_protection_plan: row.ucpp_start.map(|s| wire::UnbornChildProtectionPlan {
            period: Some(wire_period(s, row.ucpp_end, row.ucpp_delete)),
            expected_delivery_date: row
                .ucpp_expected_delivery
                .and_then(from_days)
                .map(to_wire_date),
        }),
        local_authority_ods_code: row.local_authority.clone(),
        version: row.version,
        create_time: Some(micros_to_timestamp(row.create_time)),
        update_time: Some(micros_to_timestamp(row.update_time)),
    }
}

/// Microseconds since the Unix epoch, as stored.
pub fn micros_to_timestamp(t: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.div_euclid(1_000_000),
        nanos: i32::try_from(t.rem_euclid(1_000_000) * 1000).unwrap_or_default(),
    }
}
