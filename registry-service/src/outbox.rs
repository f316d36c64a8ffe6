//! The council notification outbox: notifications are queued in the same transaction as the
//! event that causes them (see `disclosure_store`), numbered per council, read back in order,
//! and acknowledged by moving the council's cursor forward.

use diesel::prelude::*;

use crate::db::{
    DbConnection,
    models::NotificationRow,
    schema::{local_authorities, notifications},
};
use crate::error::RegistryError;

/// Notifications of `ods_code` with a sequence above `after`, oldest first.
pub fn list(
    conn: &mut DbConnection,
    ods_code: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<NotificationRow>, RegistryError> {
    Ok(notifications::table
        .filter(notifications::local_authority.eq(ods_code))
        .filter(notifications::sequence.gt(after))
        .order(notifications::sequence.asc())
        .limit(limit)
        .select(NotificationRow::as_select())
        .load(conn)?)
}

/// Moves the council's acknowledged cursor to `sequence` (never backwards). `None` when the
/// sequence has not been issued yet.
pub fn acknowledge(
    conn: &mut DbConnection,
    ods_code: &str,
    sequence: i64,
) -> Result<Option<i64>, RegistryError> {
    conn.transaction(|conn| {
        let (last, acknowledged): (i64, i64) = local_authorities::table
            .find(ods_code)
            .select((
                local_authorities::last_notification_sequence,
                local_authorities::acknowledged_sequence,
            ))
            .first(conn)
            .optional()?
            .unwrap_or((0, 0));
        if sequence > last {
            return Ok(None);
        }
        if sequence > acknowledged {
            diesel::update(local_authorities::table.find(ods_code))
                .set(local_authorities::acknowledged_sequence.eq(sequence))
                .execute(conn)?;
            return Ok(Some(sequence));
        }
        Ok(Some(acknowledged))
    })
}
