//! SQL for holding periods: when each council held a record for each NHS number. They decide
//! which accesses belong to a council's access history and who may learn an inactive number's
//! replacement. Every function runs inside the caller's transaction.

use std::collections::HashSet;

use cpis_core::ods::OdsCode;
use diesel::prelude::*;

use super::{DbConnection, dialect, models::NewHoldingPeriod, schema::holding_periods};
use crate::error::RegistryError;

/// Opens a period for each newly created record in `rows`.
pub(crate) fn open(
    conn: &mut DbConnection,
    rows: &[NewHoldingPeriod],
) -> Result<(), RegistryError> {
    for rows in rows.chunks(dialect::INSERT_ROWS) {
        dialect::insert_holding_periods(conn, rows)?;
    }
    Ok(())
}

/// Closes council `ods_code`'s open period for `nhs_number` at `now`: its record was removed.
/// Every open one, should there be more than one (a record created by a binary from before
/// holding periods, then re-created), so none outlives the record.
pub(crate) fn close(
    conn: &mut DbConnection,
    ods_code: &OdsCode,
    nhs_number: &str,
    now: i64,
) -> Result<(), RegistryError> {
    diesel::update(
        holding_periods::table
            .filter(holding_periods::local_authority.eq(ods_code.as_str()))
            .filter(holding_periods::nhs_number.eq(nhs_number))
            .filter(holding_periods::end_time.is_null()),
    )
    .set(holding_periods::end_time.eq(now))
    .execute(conn)?;
    Ok(())
}

/// Those of `numbers` council `ods_code` holds or has held a record for.
pub(crate) fn ever_held(
    conn: &mut DbConnection,
    ods_code: &OdsCode,
    numbers: &[String],
) -> Result<HashSet<String>, RegistryError> {
    Ok(holding_periods::table
        .filter(holding_periods::nhs_number.eq_any(numbers))
        .filter(holding_periods::local_authority.eq(ods_code.as_str()))
        .select(holding_periods::nhs_number)
        .distinct()
        .load::<String>(conn)?
        .into_iter()
        .collect())
}
