//! SQL for bulk uploads' bookkeeping: the claim an upload holds on its batch id while it runs,
//! the rejections written as it streams, and the stored outcome of a completed batch that answers
//! retries.

use cpis_core::ods::OdsCode;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::{
    DbConnection,
    models::{BatchRejectionRow, UploadBatchRow, UploadClaimRow},
    retry_races,
    schema::{batch_rejections, upload_batches, upload_claims},
};
use crate::error::RegistryError;

/// What an upload found when it asked for its batch id.
#[derive(Debug)]
pub(crate) enum Claim {
    /// The batch completed before: answer from its stored outcome.
    Completed(UploadBatchRow),
    /// This upload holds the id now; rejections of an earlier attempt that never completed
    /// were cleared.
    Claimed,
    /// Another upload of the id is running.
    Held,
}

/// Claims `batch_id` for the upload `holder` until `until`, taking over a claim that lapsed
/// before `now`. One transaction: a batch completes, or is claimed, or is found held.
pub(crate) fn claim(
    conn: &mut DbConnection,
    ods_code: &OdsCode,
    batch_id: &str,
    holder: i64,
    now: i64,
    until: i64,
) -> Result<Claim, RegistryError> {
    retry_races(
        |_| false,
        || {
            conn.transaction(|conn| {
                if let Some(done) = get_batch(conn, ods_code, batch_id)? {
                    return Ok(Claim::Completed(done));
                }
                let mine = upload_claims::table
                    .filter(upload_claims::local_authority.eq(ods_code.as_str()))
                    .filter(upload_claims::batch_id.eq(batch_id));
                let taken_over = diesel::update(mine.filter(upload_claims::claimed_until.lt(now)))
                    .set((
                        upload_claims::holder.eq(holder),
                        upload_claims::claimed_until.eq(until),
                    ))
                    .execute(conn)?;
                if taken_over == 0 {
                    let row = UploadClaimRow {
                        local_authority: ods_code.to_string(),
                        batch_id: batch_id.to_owned(),
                        holder,
                        claimed_until: until,
                    };
                    // A savepoint: on PostgreSQL a unique violation would otherwise abort the
                    // whole transaction.
                    let inserted = conn.transaction(|conn| {
                        diesel::insert_into(upload_claims::table)
                            .values(&row)
                            .execute(conn)
                    });
                    match inserted {
                        Ok(_) => {}
                        Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                            return Ok(Claim::Held);
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                diesel::delete(
                    batch_rejections::table
                        .filter(batch_rejections::local_authority.eq(ods_code.as_str()))
                        .filter(batch_rejections::batch_id.eq(batch_id)),
                )
                .execute(conn)?;
                Ok(Claim::Claimed)
            })
        },
    )
}

/// Extends `holder`'s claim to `until`; `false` if the claim is no longer its own (it lapsed
/// and another upload took it over).
pub(crate) fn renew(
    conn: &mut DbConnection,
    ods_code: &OdsCode,
    batch_id: &str,
    holder: i64,
    until: i64,
) -> Result<bool, RegistryError> {
    let renewed = diesel::update(
        upload_claims::table
            .filter(upload_claims::local_authority.eq(ods_code.as_str()))
            .filter(upload_claims::batch_id.eq(batch_id))
            .filter(upload_claims::holder.eq(holder)),
    )
    .set(upload_claims::claimed_until.eq(until))
    .execute(conn)?;
    Ok(renewed == 1)
}

/// Whether an upload of `batch_id` still holds a live claim at `now`.
pub(crate) fn is_claimed(
    conn: &mut DbConnection,
    ods_code: &OdsCode,
    batch_id: &str,
    now: i64,
) -> Result<bool, RegistryError> {
    let live: i64 = upload_claims::table
        .filter(upload_claims::local_authority.eq(ods_code.as_str()))
        .filter(upload_claims::batch_id.eq(batch_id))
        .filter(upload_claims::claimed_until.ge(now))
        .count()
        .get_result(conn)?;
    Ok(live > 0)
}

/// Gives up `holder`'s claim (an upload that failed part-way: a retry may claim at once).
pub(crate) fn release(
    conn: &mut DbConnection,
    ods_code: &OdsCode,
    batch_id: &str,
    holder: i64,
) -> Result<(), RegistryError> {
    diesel::delete(
        upload_claims::table
            .filter(upload_claims::local_authority.eq(ods_code.as_str()))
            .filter(upload_claims::batch_id.eq(batch_id))
            .filter(upload_claims::holder.eq(holder)),
    )
    .execute(conn)?;
    Ok(())
}

/// Writes rejections of the batch being uploaded (in the caller's transaction or its own).
pub(crate) fn add_rejections(
    conn: &mut DbConnection,
    rows: &[BatchRejectionRow],
) -> Result<(), RegistryError> {
    // Bounded statements: SQLite allows at most 32,766 bound values.
    for part in rows.chunks(1000) {
        super::dialect::insert_batch_rejections(conn, part)?;
    }
    Ok(())
}

/// Up to `limit` rejections of a batch after position `after`, in position order, each with its
/// position (`None` where the stored row does not decode).
pub(crate) fn rejections<T: prost::Message + Default>(
    conn: &mut DbConnection,
    ods_code: &OdsCode,
    batch_id: &str,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<(i64, Option<T>)>, RegistryError> {
    let mut query = batch_rejections::table
        .filter(batch_rejections::local_authority.eq(ods_code.as_str()))
        .filter(batch_rejections::batch_id.eq(batch_id))
        .order(batch_rejections::position.asc())
        .limit(limit)
        .select(BatchRejectionRow::as_select())
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(batch_rejections::position.gt(after));
    }
    Ok(query
        .load(conn)?
        .into_iter()
        .map(|row| (row.position, T::decode(row.rejection.as_slice()).ok()))
        .collect())
}

/// A completed batch's stored outcome.
pub(crate) fn get_batch(
    conn: &mut DbConnection,
    ods_code: &OdsCode,
    batch_id: &str,
) -> Result<Option<UploadBatchRow>, RegistryError> {
    Ok(upload_batches::table
        .find((ods_code.as_str(), batch_id))
        .select(UploadBatchRow::as_select())
        .first(conn)
        .optional()?)
}

/// Records a completed batch and gives up `holder`'s claim on its id, in one transaction, and
/// returns the stored outcome: if another upload of the id completed first (possible only after
/// this one's claim lapsed), its outcome is kept and returned.
pub(crate) fn complete(
    conn: &mut DbConnection,
    row: &UploadBatchRow,
    holder: i64,
) -> Result<UploadBatchRow, RegistryError> {
    conn.transaction(|conn| {
        let inserted = conn.transaction(|conn| {
            diesel::insert_into(upload_batches::table)
                .values(row)
                .execute(conn)
        });
        let stored = match inserted {
            Ok(_) => row.clone(),
            Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                upload_batches::table
                    .find((&row.local_authority, &row.batch_id))
                    .select(UploadBatchRow::as_select())
                    .first(conn)?
            }
            Err(e) => return Err(e.into()),
        };
        diesel::delete(
            upload_claims::table
                .filter(upload_claims::local_authority.eq(&row.local_authority))
                .filter(upload_claims::batch_id.eq(&row.batch_id))
                .filter(upload_claims::holder.eq(holder)),
        )
        .execute(conn)?;
        Ok(stored)
    })
}
