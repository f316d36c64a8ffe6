//! NHS-number status changes from the demographics feed (standing in for PDS): a number retired
//! on adoption, superseded or merged into another, or belonging to a person who has died. Each
//! change is stored, every council holding a record for the number is notified once, and later
//! writes to the number are refused.

use chrono::NaiveDate;
use cpis_core::status::FieldViolation;
use cpis_proto::cpis::common::v1::{ErrorReason, InactiveReason};
use cpis_proto::cpis::registry::v1::{
    EntryRejection, InactiveNhsNumberNotification, NhsNumberStatusChange, notification,
};
use diesel::prelude::*;

use crate::db::{
    DbConnection,
    models::NhsNumberStatusRow,
    schema::{child_records, nhs_number_status},
};
use crate::error::RegistryError;
use crate::record::{parse_nhs_number, to_days, to_naive};

/// A validated change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusChange {
    /// The number that became inactive.
    pub nhs_number: String,
    /// Why.
    pub reason: InactiveReason,
    /// The replacement (superseded only).
    pub replacement: Option<String>,
    /// When it took effect.
    pub effective_date: Option<NaiveDate>,
}

/// Validates a wire change.
pub fn validate(change: &NhsNumberStatusChange) -> Result<StatusChange, FieldViolation> {
    let nhs = parse_nhs_number(&change.nhs_number, "change.nhs_number")?;
    let reason = match InactiveReason::try_from(change.reason) {
        Ok(InactiveReason::Unspecified) | Err(_) => {
            return Err(FieldViolation::new(
                "change.reason",
                ErrorReason::FieldRequired,
                "adopted, superseded or deceased",
            ));
        }
        Ok(reason) => reason,
    };
    let replacement = if change.replacement_nhs_number.is_empty() {
        None
    } else {
        if reason != InactiveReason::Superseded {
            return Err(FieldViolation::new(
                "change.replacement_nhs_number",
                ErrorReason::FieldFormat,
                "only a superseded number has a replacement",
            ));
        }
        let replacement = parse_nhs_number(
            &change.replacement_nhs_number,
            "change.replacement_nhs_number",
        )?;
        if replacement == nhs {
            return Err(FieldViolation::new(
                "change.replacement_nhs_number",
                ErrorReason::FieldFormat,
                "must differ from the superseded number",
            ));
        }
        Some(replacement.to_string())
    };
    let effective_date = match &change.effective_date {
        None => None,
        Some(d) => Some(to_naive(d).ok_or_else(|| {
            FieldViolation::new(
                "change.effective_date",
                ErrorReason::FieldFormat,
                "must be a real calendar date",
            )
        })?),
    };
    Ok(StatusChange {
        nhs_number: nhs.to_string(),
        reason,
        replacement,
        effective_date,
    })
}

/// What an import did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Changes stored (including unchanged repeats).
    pub applied: u64,
    /// Notifications queued, per council.
    pub notified: Vec<(String, i64)>,
}

/// Applies changes in one transaction. A change identical to the stored status notifies nobody,
/// so re-importing a feed is harmless.
pub fn apply(
    conn: &mut DbConnection,
    changes: &[StatusChange],
    now: i64,
) -> Result<Applied, RegistryError> {
    conn.transaction(|conn| {
        let mut applied = Applied::default();
        for change in changes {
            let row = NhsNumberStatusRow {
                nhs_number: change.nhs_number.clone(),
                reason: change.reason as i32,
                replacement_nhs_number: change.replacement.clone(),
                effective_date: change.effective_date.map(to_days),
                update_time: now,
            };
            let existing: Option<NhsNumberStatusRow> = nhs_number_status::table
                .find(&change.nhs_number)
                .select(NhsNumberStatusRow::as_select())
                .first(conn)
                .optional()?;
            applied.applied += 1;
            match existing {
                Some(old)
                    if old.reason == row.reason
                        && old.replacement_nhs_number == row.replacement_nhs_number =>
                {
                    continue;
                }
                Some(_) => {
                    diesel::update(nhs_number_status::table.find(&change.nhs_number))
                        .set(&row)
                        .execute(conn)?;
                }
                None => {
                    diesel::insert_into(nhs_number_status::table)
                        .values(&row)
                        .execute(conn)?;
                }
            }
            let holders: Vec<(String, Option<String>)> = child_records::table
                .filter(child_records::nhs_number.eq(&change.nhs_number))
                .order(child_records::local_authority.asc())
                .select((child_records::local_authority, child_records::local_case_id))
                .load(conn)?;
            for (ods_code, case_id) in holders {
                let kind = notification::Kind::InactiveNhsNumber(InactiveNhsNumberNotification {
                    nhs_number: change.nhs_number.clone(),
                    local_case_id: case_id.unwrap_or_default(),
                    reason: change.reason as i32,
                    replacement_nhs_number: change.replacement.clone().unwrap_or_default(),
                });
                let sequence = crate::outbox::enqueue(conn, &ods_code, now, kind)?;
                applied.notified.push((ods_code, sequence));
            }
        }
        Ok(applied)
    })
}

/// Parses the operator's CSV file: header `nhs_number,reason,replacement_nhs_number,effective_date`;
/// reason is `adopted`, `superseded`, `merged` (recorded as superseded) or `deceased`; the date
/// is `YYYY-MM-DD` or empty. Returns the changes and a rejection per bad line (by line number).
pub fn parse_csv(text: &str) -> (Vec<(u64, NhsNumberStatusChange)>, Vec<EntryRejection>) {
    let mut changes = Vec::new();
    let mut rejections = Vec::new();
    let mut lines = text.lines().enumerate();
    let header_ok = lines.next().is_some_and(|(_, h)| {
        h.trim()
            .trim_start_matches('\u{feff}')
            .eq_ignore_ascii_case("nhs_number,reason,replacement_nhs_number,effective_date")
    });
    if !header_ok {
        rejections.push(EntryRejection {
            position: 1,
            reason: ErrorReason::BatchMalformed as i32,
            field: "header".into(),
            message:
                "the first line must be: nhs_number,reason,replacement_nhs_number,effective_date"
                    .into(),
        });
        return (changes, rejections);
    }
    for (index, line) in lines {
        let line_number = u64::try_from(index + 1).unwrap_or(u64::MAX);
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let reject = |field: &str, message: &str| EntryRejection {
            position: line_number,
            reason: ErrorReason::FieldFormat as i32,
            field: field.into(),
            message: message.into(),
        };
        if fields.len() != 4 {
            rejections.push(reject("line", "expected 4 comma-separated fields"));
            continue;
        }
        let reason = match fields[1].to_ascii_lowercase().as_str() {
            "adopted" => InactiveReason::Adopted,
            "superseded" | "merged" => InactiveReason::Superseded,
            "deceased" => InactiveReason::Deceased,
            _ => {
                rejections.push(reject(
                    "reason",
                    "must be adopted, superseded, merged or deceased",
                ));
                continue;
            }
        };
        let effective_date = if fields[3].is_empty() {
            None
        } else {
            match NaiveDate::parse_from_str(fields[3], "%Y-%m-%d") {
                Ok(d) => Some(crate::record::to_wire_date(d)),
                Err(_) => {
                    rejections.push(reject("effective_date", "must be YYYY-MM-DD"));
                    continue;
                }
            }
        };
        changes.push((
            line_number,
            NhsNumberStatusChange {
                nhs_number: fields[0].to_owned(),
                reason: reason as i32,
                replacement_nhs_number: fields[2].to_owned(),
                effective_date,
            },
        ));
    }
    (changes, rejections)
}
