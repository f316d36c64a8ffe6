//! SQL for the council notification outbox: notifications are queued in the same transaction as
//! the event that causes them, numbered per council, read back in order, and acknowledged by
//! moving the council's cursor forward. `Outbox` is the in-transaction half of
//! `notify::Notifier`, which wakes subscribers once the transaction has committed.

use cpis_core::ods::OdsCode;
use cpis_proto::cpis::registry::v1::{Notification, notification};
use diesel::prelude::*;
use prost::Message as _;

use super::{
    DbConnection, dialect,
    models::NotificationRow,
    schema::{local_authorities, notifications},
};
use crate::domain::dates::timestamp;
use crate::error::RegistryError;

/// The notifications one transaction queues, and for whom.
#[derive(Debug)]
pub(crate) struct Outbox {
    now: i64,
    queued: Vec<(OdsCode, i64)>,
}

impl Outbox {
    /// An empty outbox for a transaction at `now` (microseconds since the epoch).
    pub fn new(now: i64) -> Self {
        Self {
            now,
            queued: Vec::new(),
        }
    }

    /// Queues a notification for `ods_code` inside the caller's transaction and returns its
    /// sequence. Taking the council's next sequence locks its row until commit, so sequences
    /// follow commit order: a subscriber never sees a gap that fills in later. Call it as late
    /// in the transaction as possible to keep that lock short.
    pub fn enqueue(
        &mut self,
        conn: &mut DbConnection,
        ods_code: &OdsCode,
        kind: notification::Kind,
    ) -> Result<i64, RegistryError> {
        // No attributes: not even the council, since which councils hold a plan for the child
        // is what the lookup disclosed, and traces are not the audit store.
        let _span = tracing::info_span!("outbox_enqueue").entered();
        diesel::update(local_authorities::table.find(ods_code.as_str()))
            .set(
                local_authorities::last_notification_sequence
                    .eq(local_authorities::last_notification_sequence + 1),
            )
            .execute(conn)?;
        let sequence: i64 = local_authorities::table
            .find(ods_code.as_str())
            .select(local_authorities::last_notification_sequence)
            .first(conn)?;
        let notification = Notification {
            sequence: u64::try_from(sequence).unwrap_or_default(),
            create_time: Some(timestamp(self.now)),
            kind: Some(kind),
        };
        diesel::insert_into(notifications::table)
            .values(NotificationRow {
                local_authority: ods_code.to_string(),
                sequence,
                create_time: self.now,
                notification: notification.encode_to_vec(),
            })
            .execute(conn)?;
        dialect::notify_on_commit(conn, ods_code.as_str())?;
        self.queued.push((ods_code.clone(), sequence));
        Ok(sequence)
    }

    /// Queues many notifications at once inside the caller's transaction (a group-committed
    /// batch of disclosures): each `(council, create time, kind)` gets the next sequence of its
    /// council, in the order given. Each council's range is taken with one UPDATE … RETURNING,
    /// councils in code order (the one lock order, so two batches cannot deadlock on each
    /// other), then on PostgreSQL one statement inserts them all and NOTIFYs their councils (on
    /// SQLite, one prepared statement a row). Returns the sequences in the order of `items`.
    pub fn enqueue_all(
        &mut self,
        conn: &mut DbConnection,
        items: Vec<(OdsCode, i64, notification::Kind)>,
    ) -> Result<Vec<i64>, RegistryError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let _span = tracing::info_span!("outbox_enqueue").entered();
        let mut wanted: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
        for (ods_code, _, _) in &items {
            *wanted.entry(ods_code.to_string()).or_default() += 1;
        }
        // The last sequence of each council's range: for several councils on PostgreSQL in two
        // statements, else one a council.
        let lasts = match (wanted.len() > 1)
            .then(|| dialect::take_sequence_ranges(conn, &wanted))
            .transpose()?
            .flatten()
        {
            Some(lasts) => lasts,
            None => {
                let mut lasts = std::collections::HashMap::with_capacity(wanted.len());
                for (ods_code, count) in &wanted {
                    let last = dialect::take_sequences(conn, ods_code, *count)?;
                    lasts.insert(ods_code.clone(), last);
                }
                lasts
            }
        };
        // The first sequence of each council's range.
        let mut next = std::collections::HashMap::with_capacity(wanted.len());
        for (ods_code, count) in &wanted {
            let last = lasts.get(ods_code).ok_or_else(|| {
                RegistryError::Internal("a notified council has no row".to_owned())
            })?;
            next.insert(ods_code.clone(), last - count + 1);
        }
        let mut rows = Vec::with_capacity(items.len());
        let mut sequences = Vec::with_capacity(items.len());
        for (ods_code, create_time, kind) in items {
            // Every council has its range (`take_sequences` fails on a council without a row).
            let sequence = next.get_mut(ods_code.as_str()).ok_or_else(|| {
                RegistryError::Internal("a notified council has no row".to_owned())
            })?;
            let notification = Notification {
                sequence: u64::try_from(*sequence).unwrap_or_default(),
                create_time: Some(timestamp(create_time)),
                kind: Some(kind),
            };
            rows.push(NotificationRow {
                local_authority: ods_code.to_string(),
                sequence: *sequence,
                create_time,
                notification: notification.encode_to_vec(),
            });
            sequences.push(*sequence);
            self.queued.push((ods_code, *sequence));
            *sequence += 1;
        }
        for part in rows.chunks(dialect::INSERT_ROWS) {
            dialect::queue_notifications(conn, part)?;
        }
        Ok(sequences)
    }

    /// How many notifications are queued so far (a mark for `forget_after`).
    pub fn mark(&self) -> usize {
        self.queued.len()
    }

    /// Forgets what was queued after `mark`: the transaction that queued it rolled back.
    pub fn forget_after(&mut self, mark: usize) {
        self.queued.truncate(mark);
    }

    /// The notifications queued: council and sequence.
    pub fn into_queued(self) -> Vec<(OdsCode, i64)> {
        self.queued
    }
}

/// The council's latest issued sequence and acknowledged cursor.
pub(crate) fn cursors(
    conn: &mut DbConnection,
    ods_code: &OdsCode,
) -> Result<(i64, i64), RegistryError> {
    Ok(local_authorities::table
        .find(ods_code.as_str())
        .select((
            local_authorities::last_notification_sequence,
            local_authorities::acknowledged_sequence,
        ))
        .first(conn)
        .optional()?
        .unwrap_or((0, 0)))
}

/// Notifications of `ods_code` with a sequence above `after`, oldest first, each with its
/// sequence. A notification that does not decode is reported (`RegistryError::corrupt`) and comes
/// back as `None`, so readers still move past it: one bad row cannot stop a council's stream.
pub(crate) fn list(
    conn: &mut DbConnection,
    ods_code: &OdsCode,
    after: i64,
    limit: i64,
) -> Result<Vec<(i64, Option<Notification>)>, RegistryError> {
    let rows: Vec<NotificationRow> = notifications::table
        .filter(notifications::local_authority.eq(ods_code.as_str()))
        .filter(notifications::sequence.gt(after))
        .order(notifications::sequence.asc())
        .limit(limit)
        .select(NotificationRow::as_select())
        .load(conn)?;
    Ok(rows
        .iter()
        .map(|row| {
            let decoded = super::models::decode(&row.notification, "notifications", row.sequence);
            (row.sequence, decoded.ok())
        })
        .collect())
}

/// Moves the council's acknowledged cursor to `sequence` (never backwards), in one transaction,
/// and returns the cursor.
pub(crate) fn acknowledge(
    conn: &mut DbConnection,
    ods_code: &OdsCode,
    sequence: i64,
) -> Result<i64, RegistryError> {
    conn.transaction(|conn| {
        let (last, acknowledged) = cursors(conn, ods_code)?;
        if sequence > last {
            return Err(RegistryError::SequenceNotIssued);
        }
        if sequence > acknowledged {
            diesel::update(local_authorities::table.find(ods_code.as_str()))
                .set(local_authorities::acknowledged_sequence.eq(sequence))
                .execute(conn)?;
            return Ok(sequence);
        }
        Ok(acknowledged)
    })
}

/// One council's unacknowledged notifications: how many were issued past its cursor, and when
/// the oldest of them was created (`None` when none is left in the outbox).
#[derive(Debug, QueryableByName)]
pub(crate) struct Backlog {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub ods_code: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub backlog: i64,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    pub oldest: Option<i64>,
}

/// Every council's backlog in one query (for the metrics; one row per council, read every few
/// seconds, never per call). The oldest unacknowledged notification is found by the outbox's
/// primary key (council, sequence).
pub(crate) fn backlogs(conn: &mut DbConnection) -> Result<Vec<Backlog>, RegistryError> {
    // The same SQL on both engines; `sql_query` runs on a concrete connection.
    const BACKLOGS: &str = "SELECT la.ods_code AS ods_code, \
         la.last_notification_sequence - la.acknowledged_sequence AS backlog, \
         (SELECT MIN(n.create_time) FROM notifications n \
          WHERE n.local_authority = la.ods_code AND n.sequence > la.acknowledged_sequence) AS oldest \
         FROM local_authorities la";
    Ok(match conn {
        DbConnection::Pg(pg) => diesel::sql_query(BACKLOGS).load::<Backlog>(pg)?,
        DbConnection::Sqlite(sqlite) => diesel::sql_query(BACKLOGS).load::<Backlog>(sqlite)?,
    })
}
