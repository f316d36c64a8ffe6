//! SQL for a bulk upload's chunk: one transaction that renews the upload's claim on its batch id,
//! stores the chunk's records set-based (one read of what is stored, new records inserted with
//! their holding periods, changed ones updated, unchanged ones left alone, numbers the
//! demographics feed marked inactive refused) and writes the chunk's rejections: one commit per
//! chunk. How rows reach the engine is `dialect`'s: binary COPY on PostgreSQL, multi-row INSERTs
//! on SQLite.

use std::collections::{HashMap, HashSet};

use cpis_core::ods::OdsCode;
use diesel::Connection as _;

use super::{
    DbConnection, batches, dialect, holdings,
    models::{BatchRejectionRow, ChildRecordRow, NewChildRecord, RecordContent},
    nhs_status::inactive_numbers,
    records::require_contacts,
};
use crate::domain::nhs_status::Inactive;
use crate::domain::record::ChildRecord;
use crate::error::RegistryError;

/// A validated record of a bulk upload, with its 1-based position in the batch.
#[derive(Debug)]
pub(crate) struct BatchRecord {
    /// 1-based position in the batch.
    pub position: u64,
    /// The record.
    pub record: ChildRecord,
}

/// The claim an upload renews with each chunk it commits.
#[derive(Clone, Debug)]
pub(crate) struct Renewal {
    /// The batch id claimed.
    pub batch_id: String,
    /// The upload holding the claim.
    pub holder: i64,
    /// The claim's new end, in microseconds since the Unix epoch.
    pub until: i64,
}

/// A stored record whose content a chunk changes: updated only if still at `version`.
#[derive(Debug)]
pub(crate) struct ChangedRecord {
    pub id: i64,
    pub version: i64,
    pub content: RecordContent,
}

/// Commits one chunk of a batch in one transaction: renews `renewal` (BATCH_IN_PROGRESS, with
/// nothing applied, if another upload took the id over after this one's claim lapsed), stores
/// `chunk`'s records (distinct NHS numbers) in NHS-number order, and writes `rejections` and a
/// rejection (from `refused`) for each record on a number the demographics feed marked
/// inactive. Returns how many records were refused so.
///
/// A concurrent writer of the same records (another upload, a put) makes the chunk run again on
/// what is then stored: the outcome is the same as if it had come second.
pub(crate) fn commit_chunk(
    conn: &mut DbConnection,
    ods_code: &OdsCode,
    chunk: &mut [BatchRecord],
    rejections: &[BatchRejectionRow],
    renewal: &Renewal,
    now: i64,
    refused: impl Fn(u64, &Inactive) -> BatchRejectionRow,
) -> Result<u64, RegistryError> {
    // Sorted keys: B-tree inserts in order (several times faster on SQLite), and every writer
    // takes row locks in the one order.
    chunk.sort_by_key(|r| r.record.nhs_number);
    let concurrent_change = |e: &RegistryError| matches!(e, RegistryError::VersionConflict { .. });
    super::retry_races(concurrent_change, || {
        conn.transaction(|conn| {
            let ours = batches::renew(
                conn,
                ods_code,
                &renewal.batch_id,
                renewal.holder,
                renewal.until,
            )?;
            if !ours {
                return Err(RegistryError::BatchInProgress);
            }
            let inactive = if chunk.is_empty() {
                Vec::new()
            } else {
                store_records(conn, ods_code, chunk, now)?
            };
            let refusals: Vec<BatchRejectionRow> = inactive
                .iter()
                .map(|(position, why)| refused(*position, why))
                .collect();
            batches::add_rejections(conn, rejections)?;
            batches::add_rejections(conn, &refusals)?;
            Ok(u64::try_from(inactive.len()).unwrap_or(u64::MAX))
        })
    })
}

/// Stores `chunk` (sorted by NHS number) inside the caller's transaction; returns the positions
/// of records refused because their number is inactive, with the reason.
fn store_records(
    conn: &mut DbConnection,
    ods_code: &OdsCode,
    chunk: &[BatchRecord],
    now: i64,
) -> Result<Vec<(u64, Inactive)>, RegistryError> {
    require_contacts(conn, ods_code)?;
    let numbers: Vec<String> = chunk
        .iter()
        .map(|r| r.record.nhs_number.to_string())
        .collect();
    let inactive = inactive_numbers(conn, &numbers)?;
    let held = if inactive.is_empty() {
        HashSet::new()
    } else {
        let refused: Vec<String> = inactive.keys().cloned().collect();
        holdings::ever_held(conn, ods_code, &refused)?
    };
    let mut existing: HashMap<String, ChildRecordRow> =
        dialect::stored_records(conn, ods_code.as_str(), &numbers)?
            .into_iter()
            .map(|row| (row.nhs_number.clone(), row))
            .collect();
    let (mut inserts, mut changes, mut refused) = (Vec::new(), Vec::new(), Vec::new());
    for (item, nhs) in chunk.iter().zip(numbers) {
        if let Some(status) = inactive.get(&nhs) {
            let told = held.contains(&nhs);
            refused.push((item.position, Inactive::from(status).told_to(told)));
            continue;
        }
        match existing.remove(&nhs) {
            None => inserts.push(NewChildRecord::new(ods_code, &item.record, now)),
            Some(row) => {
                let content = RecordContent::from(&item.record);
                // A record sent unchanged keeps its version: resending is harmless.
                if row.content != content {
                    changes.push(ChangedRecord {
                        id: row.id,
                        version: row.version,
                        content,
                    });
                }
            }
        }
    }
    // The version guard makes a concurrent writer's change a conflict (the chunk runs again),
    // not a lost update.
    let updated = dialect::update_records(conn, &changes, now)?;
    if updated != changes.len() {
        let expected = changes.first().map_or(0, |c| c.version);
        return Err(RegistryError::VersionConflict {
            expected,
            actual: expected + 1,
        });
    }
    // A record another writer created since the read above is a unique violation: a lost race,
    // and the chunk runs again.
    dialect::insert_records(conn, &inserts)?;
    Ok(refused)
}
