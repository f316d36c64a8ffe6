//! The council notification outbox: notifications are queued in the same transaction as the
//! event that causes them (see `disclosure_store`), numbered per council, read back in order,
//! and acknowledged by moving the council's cursor forward.

use cpis_proto::cpis::registry::v1::{Notification, notification};
use diesel::prelude::*;
use prost::Message as _;

use crate::db::{
    DbConnection,
    models::NotificationRow,
    schema::{local_authorities, notifications},
};
use crate::error::RegistryError;

/// Queues a notification for council `ods_code` inside the caller's transaction and returns its
/// sequence. Taking the council's next sequence locks its row until commit, so sequences follow
/// commit order: a subscriber never sees a gap that fills in later. Call it as late in the
/// transaction as possible to keep that lock short.
pub fn enqueue(
    conn: &mut DbConnection,
    ods_code: &str,
    now: i64,
    kind: notification::Kind,
) -> Result<i64, RegistryError> {
    diesel::update(local_authorities::table.find(ods_code))
        .set(
            local_authorities::last_notification_sequence
                .eq(local_authorities::last_notification_sequence + 1),
        )
        .execute(conn)?;
    let sequence: i64 = local_authorities::table
        .find(ods_code)
        .select(local_authorities::last_notification_sequence)
        .first(conn)?;
    let notification = Notification {
        sequence: u64::try_from(sequence).unwrap_or_default(),
        create_time: Some(crate::record::micros_to_timestamp(now)),
        kind: Some(kind),
    };
    diesel::insert_into(notifications::table)
        .values(NotificationRow {
            local_authority: ods_code.to_owned(),
            sequence,
            create_time: now,
            notification: notification.encode_to_vec(),
        })
        .execute(conn)?;
    crate::wakeups::notify_in_transaction(conn, ods_code)?;
    Ok(sequence)
}

/// The council's latest issued sequence and acknowledged cursor.
pub fn cursors(conn: &mut DbConnection, ods_code: &str) -> Result<(i64, i64), RegistryError> {
    Ok(local_authorities::table
        .find(ods_code)
        .select((
            local_authorities::last_notification_sequence,
            local_authorities::acknowledged_sequence,
        ))
        .first(conn)
        .optional()?
        .unwrap_or((0, 0)))
}

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
