//! SQL for NHS-number status: which numbers are inactive, and applying the demographics feed's
//! changes (each stored once, each holding council notified once, in one transaction).

use std::collections::HashMap;

use cpis_core::ods::OdsCode;
use cpis_proto::cpis::registry::v1::{InactiveNhsNumberNotification, notification};
use diesel::prelude::*;

use super::{
    DbConnection,
    models::NhsNumberStatusRow,
    outbox::Outbox,
    schema::{child_records, nhs_number_status},
};
use crate::domain::dates::to_days;
use crate::domain::nhs_status::StatusChange;
use crate::error::RegistryError;

/// Status rows of those of `numbers` the demographics feed marked inactive, by number.
pub(crate) fn inactive_numbers(
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

/// Applies `changes` in one transaction and returns how many were applied (unchanged repeats
/// included). A change identical to the stored status notifies nobody, so re-importing a feed
/// is harmless. Councils' notification sequences are taken in ODS-code order, the order every
/// transaction that notifies takes them (a disclosure reads its records in that order), so an
/// import and a flood of lookups cannot deadlock; a transaction the database aborts anyway
/// (a deadlock, a serialization failure) runs again.
pub(crate) fn apply(
    conn: &mut DbConnection,
    changes: &[StatusChange],
    now: i64,
    outbox: &mut Outbox,
) -> Result<u64, RegistryError> {
    let mark = outbox.mark();
    super::retry_races(
        |_| false,
        || {
            outbox.forget_after(mark);
            apply_once(conn, changes, now, outbox)
        },
    )
}

fn apply_once(
    conn: &mut DbConnection,
    changes: &[StatusChange],
    now: i64,
    outbox: &mut Outbox,
) -> Result<u64, RegistryError> {
    conn.transaction(|conn| {
        let mut applied = 0;
        let mut notices = Vec::new();
        for change in changes {
            let nhs = change.nhs_number.to_string();
            let row = NhsNumberStatusRow {
                nhs_number: nhs.clone(),
                reason: change.reason as i32,
                replacement_nhs_number: change.replacement.map(|r| r.to_string()),
                effective_date: change.effective_date.map(to_days),
                update_time: now,
            };
            let existing: Option<NhsNumberStatusRow> = nhs_number_status::table
                .find(&nhs)
                .select(NhsNumberStatusRow::as_select())
                .first(conn)
                .optional()?;
            applied += 1;
            match existing {
                Some(old)
                    if old.reason == row.reason
                        && old.replacement_nhs_number == row.replacement_nhs_number =>
                {
                    continue;
                }
                Some(_) => {
                    diesel::update(nhs_number_status::table.find(&nhs))
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
                .filter(child_records::nhs_number.eq(&nhs))
                .select((child_records::local_authority, child_records::local_case_id))
                .load(conn)?;
            for (ods_code, case_id) in holders {
                // A holder whose council code is damaged cannot be notified (reported); the
                // others still are.
                let Ok(ods_code) = OdsCode::parse(&ods_code) else {
                    RegistryError::corrupt("child_records", "local_authority");
                    continue;
                };
                let notice = InactiveNhsNumberNotification {
                    nhs_number: nhs.clone(),
                    local_case_id: case_id.unwrap_or_default(),
                    reason: change.reason as i32,
                    replacement_nhs_number: row.replacement_nhs_number.clone().unwrap_or_default(),
                };
                notices.push((ods_code, notice));
            }
        }
        // Stable: one council's notices keep the feed's order.
        notices.sort_by(|(a, _), (b, _)| a.cmp(b));
        for (ods_code, notice) in notices {
            outbox.enqueue(
                conn,
                &ods_code,
                notification::Kind::InactiveNhsNumber(notice),
            )?;
        }
        Ok(applied)
    })
}
