//! A batch's outcome: counted and stored under its id once both halves of the pipeline finish
//! (so a retry with the same id and content is answered from the store instead of applied
//! twice), replayed to such a retry, and read back by `GetBatch` and `ListBatchRejections`.

use cpis_core::ods::OdsCode;
use cpis_proto::cpis::registry::v1::{
    BatchHeader, BatchResult, GetBatchRequest, GetBatchResponse, ListBatchRejectionsRequest,
    ListBatchRejectionsResponse, RecordRejection, UploadBatchRequest, UploadBatchResponse,
};
use prost::Message as _;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::pipeline::{commit_chunks, receive};
use super::{ANSWER_REJECTIONS, Batch, batch_outcome};
use crate::api::Registry;
use crate::api::paging::{Query, page_size, split_page};
use crate::db::batches;
use crate::db::models::{UploadBatchRow, decode};
use crate::domain::dates::timestamp;
use crate::error::RegistryError;

/// The answer to a retry of a completed batch: its stored outcome if the content is the same.
pub(super) fn replay(
    previous: &UploadBatchRow,
    digest: &[u8],
) -> Result<UploadBatchResponse, RegistryError> {
    if previous.content_digest != digest {
        return Err(RegistryError::BatchIdReused);
    }
    let result: BatchResult = decode(&previous.result, "upload_batches", "result")?;
    tracing::info!(la = %previous.local_authority, batch = %previous.batch_id, "batch replayed");
    Ok(UploadBatchResponse {
        result: Some(result),
        replayed: true,
    })
}

/// The upload proper, once this call holds the batch id.
pub(super) async fn run_claimed(
    registry: &Registry,
    batch: &Batch,
    header: &BatchHeader,
    stream: &mut Streaming<UploadBatchRequest>,
) -> Result<UploadBatchResponse, RegistryError> {
    // One chunk may wait while another commits: reading goes on meanwhile.
    let (chunks, pending) = mpsc::channel(1);
    let (received, committed) = tokio::join!(
        receive(registry, stream, chunks),
        commit_chunks(registry, batch, pending)
    );
    // The committing side's failure explains the reading side's.
    let committed = committed?;
    let received = received?;

    let rejected = received.rejected + committed.refused;
    let accepted = received.valid - committed.refused;
    let first = {
        let batch = batch.clone();
        let limit = i64::try_from(ANSWER_REJECTIONS).unwrap_or(i64::MAX);
        registry
            .db
            .run(move |conn| {
                batches::rejections::<RecordRejection>(
                    conn,
                    &batch.ods,
                    &batch.batch_id,
                    None,
                    limit,
                )
            })
            .await?
    };
    let rejections: Vec<RecordRejection> = first.into_iter().filter_map(|(_, r)| r).collect();
    let now = registry.clock.now_micros();
    let result = BatchResult {
        batch_id: batch.batch_id.clone(),
        sequence_number: header.sequence_number,
        outcome: batch_outcome(accepted, rejected) as i32,
        received_count: received.count,
        accepted_count: accepted,
        rejected_count: rejected,
        rejections_truncated: u64::try_from(rejections.len()).unwrap_or(u64::MAX) < rejected,
        rejections,
        expected_record_count_mismatch: header.expected_record_count != 0
            && header.expected_record_count != received.count,
        complete_time: Some(timestamp(now)),
    };
    let encoded = result.encode_to_vec();
    let row = UploadBatchRow {
        local_authority: batch.ods.to_string(),
        batch_id: batch.batch_id.clone(),
        content_digest: received.digest.clone(),
        result: encoded.clone(),
        complete_time: now,
    };
    let holder = batch.holder;
    let stored = registry
        .db
        .run(move |conn| batches::complete(conn, &row, holder))
        .await?;
    // Another upload of the id completed first (only possible once this one's claim lapsed):
    // the same records get its outcome (a replay); other records under that id are refused.
    if stored.content_digest != received.digest {
        return Err(RegistryError::BatchIdReused);
    }
    let (result, replayed) = if stored.result == encoded {
        (result, false)
    } else {
        (decode(&stored.result, "upload_batches", "result")?, true)
    };
    if !replayed {
        // Records of this upload, counted once (a replay answers an outcome already counted).
        use cpis_core::metrics::KeyValue;
        let metrics = cpis_core::metrics::metrics();
        let council = KeyValue::new("council", batch.ods.to_string());
        metrics.upload_records.add(
            result.accepted_count,
            &[council.clone(), KeyValue::new("outcome", "accepted")],
        );
        metrics.upload_records.add(
            result.rejected_count,
            &[council, KeyValue::new("outcome", "rejected")],
        );
    }
    tracing::info!(
        la = %batch.ods,
        batch = %batch.batch_id,
        received = received.count,
        accepted = result.accepted_count,
        rejected = result.rejected_count,
        "batch stored"
    );
    Ok(UploadBatchResponse {
        result: Some(result),
        replayed,
    })
}

/// A completed batch's stored outcome, read for `GetBatch` and `ListBatchRejections`.
async fn stored_outcome(
    registry: &Registry,
    ods: &OdsCode,
    batch_id: &str,
) -> Result<BatchResult, RegistryError> {
    let (ods, batch_id) = (ods.clone(), batch_id.to_owned());
    let row = registry
        .db
        .run(move |conn| batches::get_batch(conn, &ods, &batch_id))
        .await?
        .ok_or(RegistryError::BatchNotFound)?;
    decode(&row.result, "upload_batches", "result")
}

/// Runs one `GetBatch` call: the stored outcome with at most [`ANSWER_REJECTIONS`] rejections
/// (batches stored before rejections were bounded carry all of theirs; they are cut here).
pub(in crate::api) async fn get_batch(
    registry: &Registry,
    request: Request<GetBatchRequest>,
) -> Result<Response<GetBatchResponse>, Status> {
    let ods = crate::api::auth::council(&request)?;
    let mut result = stored_outcome(registry, &ods, &request.get_ref().batch_id).await?;
    if result.rejections.len() > ANSWER_REJECTIONS {
        result.rejections.truncate(ANSWER_REJECTIONS);
        result.rejections_truncated = true;
    }
    Ok(Response::new(GetBatchResponse {
        result: Some(result),
    }))
}

/// Runs one `ListBatchRejections` call.
pub(in crate::api) async fn list_rejections(
    registry: &Registry,
    request: Request<ListBatchRejectionsRequest>,
) -> Result<Response<ListBatchRejectionsResponse>, Status> {
    let ods = crate::api::auth::council(&request)?;
    let body = request.into_inner();
    let limit = page_size(body.page_size)?;
    let query = Query::BatchRejections {
        council: &ods,
        batch_id: &body.batch_id,
    };
    let after = registry.pages.open(query, &body.page_token).await?;
    // NOT_FOUND for a batch that never completed, even if an attempt left rejections behind.
    let outcome = stored_outcome(registry, &ods, &body.batch_id).await?;
    let rows = {
        let (ods, batch_id) = (ods.clone(), body.batch_id.clone());
        registry
            .db
            .run(move |conn| batches::rejections(conn, &ods, &batch_id, after, limit + 1))
            .await?
    };
    let rows = if rows.is_empty() && after.is_none() && !outcome.rejections_truncated {
        // A batch stored before rejections had their own table: its outcome holds them all.
        outcome
            .rejections
            .into_iter()
            .map(|r| (i64::try_from(r.position).unwrap_or(i64::MAX), Some(r)))
            .take(usize::try_from(limit + 1).unwrap_or(usize::MAX))
            .collect()
    } else {
        rows
    };
    let page = split_page(rows, limit);
    Ok(Response::new(ListBatchRejectionsResponse {
        next_page_token: registry.pages.next(query, &page).await?,
        rejections: page.items,
    }))
}
