//! `UploadBatch`, the bulk-upload protocol: a header, then records streamed in; each record is
//! validated and accepted or rejected with a reason, accepted records are committed a chunk at a
//! time (accepted records stay accepted when others fail), and the batch's outcome is stored
//! under its id so a retry with the same id and content is answered from the store instead of
//! applied twice.
//!
//! Three things keep it safe at any client speed and size:
//! - **A pipeline**: one side reads and validates the stream while the other commits the previous
//!   chunk, joined by a one-chunk channel. Reading never stops for a commit (HTTP/2 peers cut off
//!   a connection whose small frames pile up unread), and memory holds at most three chunks.
//! - **A claim on the batch id** in the database before anything is applied: a concurrent upload
//!   of the same id is refused (ABORTED, BATCH_IN_PROGRESS) with nothing of it applied.
//! - **Rejections written as they are found**: the answer carries the counts and the first
//!   [`ANSWER_REJECTIONS`]; `ListBatchRejections` pages through the rest.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use cpis_core::{ods::OdsCode, status::FieldViolation};
use cpis_proto::cpis::common::v1::ErrorReason;
use cpis_proto::cpis::registry::v1::{
    BatchHeader, BatchOutcome, BatchResult, GetBatchRequest, GetBatchResponse,
    ListBatchRejectionsRequest, ListBatchRejectionsResponse, RecordRejection, RecordViolation,
    UploadBatchRequest, UploadBatchResponse, upload_batch_request::Item,
};
use diesel::Connection as _;
use prost::Message as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

use super::Registry;
use super::auth::{Scope, authorize};
use super::paging::{Query, page_size, split_page};
use super::validate::validate_record;
use crate::db::batches::{self, Claim};
use crate::db::models::{BatchRejectionRow, UploadBatchRow, decode};
use crate::db::records::{self, BatchRecord};
use crate::domain::dates::timestamp;
use crate::error::RegistryError;

/// Most records in one batch.
const MAX_BATCH_RECORDS: u64 = 1_000_000;
/// Longest batch id.
const MAX_BATCH_ID: usize = 128;
/// Most rejections an answer (and GetBatch) carries; ListBatchRejections pages through all.
pub(crate) const ANSWER_REJECTIONS: usize = 1000;

/// How uploads are cut into transactions and how long a silent stream is waited for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct UploadOptions {
    /// Records (or rejections) per database transaction.
    pub chunk: usize,
    /// A stream that sends nothing for this long is ended.
    pub idle_timeout: Duration,
}

impl UploadOptions {
    /// How long a claim on a batch id lasts without renewal: long enough that a live upload
    /// always renews in time (it renews at least every third of it), short enough that a retry
    /// after a crash is not kept waiting long.
    fn lease(self) -> Duration {
        self.idle_timeout * 2
    }
}

fn batch_outcome(accepted: u64, rejected: u64) -> BatchOutcome {
    match (accepted, rejected) {
        (0, _) => BatchOutcome::NoneLoaded,
        (_, 0) => BatchOutcome::AllLoaded,
        _ => BatchOutcome::PartiallyLoaded,
    }
}

fn malformed(why: impl Into<String>) -> RegistryError {
    RegistryError::BatchMalformed(why.into())
}

fn rejection(position: u64, case_id: &str, violation: FieldViolation) -> RecordRejection {
    RecordRejection {
        position,
        local_case_id: case_id.to_owned(),
        reason: violation.reason as i32,
        field: violation.field,
        message: violation.description,
        replacement_nhs_number: String::new(),
        violations: Vec::new(),
    }
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// What the reading side hands the committing side: accepted records to apply and the
/// rejections found since the last chunk.
#[derive(Default)]
struct Chunk {
    records: Vec<BatchRecord>,
    /// The council's case id of each record, by position (for refusals found at commit).
    case_ids: HashMap<u64, String>,
    rejections: Vec<RecordRejection>,
}

impl Chunk {
    fn is_empty(&self) -> bool {
        self.records.is_empty() && self.rejections.is_empty()
    }
}

/// The one upload in progress: which council's batch, and this upload's claim on its id.
#[derive(Clone)]
struct Batch {
    ods: OdsCode,
    batch_id: String,
    holder: i64,
}

/// What the committing side did.
#[derive(Debug, Default)]
struct Committed {
    /// Records refused at commit (numbers the demographics feed marked inactive).
    refused: u64,
}

/// Applies chunks as they arrive, writes their rejections and renews the claim, one chunk at a
/// time, until the reading side closes the channel.
async fn commit_chunks(
    registry: &Registry,
    batch: &Batch,
    mut chunks: mpsc::Receiver<Chunk>,
) -> Result<Committed, RegistryError> {
    let mut committed = Committed::default();
    let lease = micros(registry.upload.lease());
    while let Some(chunk) = chunks.recv().await {
        let Chunk {
            mut records,
            mut case_ids,
            mut rejections,
        } = chunk;
        let (ods, now) = (batch.ods.clone(), registry.clock.now_micros());
        // One span per chunk's commit: counts only.
        let chunk_span = tracing::info_span!(
            "upload_chunk_commit",
            records = records.len(),
            rejections = rejections.len()
        );
        let refused = if records.is_empty() {
            Vec::new()
        } else {
            registry
                .db
                .run(move |conn| records::apply_chunk(conn, &ods, &mut records, now))
                .instrument(chunk_span.clone())
                .await?
        };
        for (position, inactive) in refused {
            committed.refused += 1;
            let case_id = case_ids.remove(&position).unwrap_or_default();
            let mut refusal = rejection(
                position,
                &case_id,
                FieldViolation::new(
                    "nhs_number",
                    RegistryError::reason_inactive(inactive.reason),
                    inactive.message(),
                ),
            );
            refusal.replacement_nhs_number = inactive.replacement.clone().unwrap_or_default();
            rejections.push(refusal);
        }
        let rows: Vec<BatchRejectionRow> = rejections
            .iter()
            .map(|r| BatchRejectionRow {
                local_authority: batch.ods.to_string(),
                batch_id: batch.batch_id.clone(),
                position: i64::try_from(r.position).unwrap_or(i64::MAX),
                rejection: r.encode_to_vec(),
            })
            .collect();
        let (ods, batch_id, holder) = (batch.ods.clone(), batch.batch_id.clone(), batch.holder);
        let until = registry.clock.now_micros().saturating_add(lease);
        let still_ours = registry
            .db
            .run(move |conn| {
                conn.transaction(|conn| {
                    batches::add_rejections(conn, &rows)?;
                    batches::renew(conn, &ods, &batch_id, holder, until)
                })
            })
            .instrument(chunk_span)
            .await?;
        if !still_ours {
            // This upload stalled past its lease and another took the id over: stop here.
            return Err(RegistryError::BatchInProgress);
        }
    }
    Ok(committed)
}

/// What the reading side saw.
struct Received {
    count: u64,
    /// Records that passed validation (some may still be refused at commit).
    valid: u64,
    rejected: u64,
    digest: Vec<u8>,
}

/// The next message, or `BatchStalled` when none comes within the idle limit.
async fn next_message(
    stream: &mut Streaming<UploadBatchRequest>,
    idle: Duration,
) -> Result<Option<UploadBatchRequest>, RegistryError> {
    match tokio::time::timeout(idle, stream.message()).await {
        Ok(message) => message.map_err(|status| RegistryError::Stream(Box::new(status))),
        Err(_) => Err(RegistryError::BatchStalled(idle)),
    }
}

/// The record of a message after the header, or why the batch is malformed.
fn record_of(
    message: UploadBatchRequest,
) -> Result<cpis_proto::cpis::common::v1::ChildRecord, RegistryError> {
    match message.item {
        Some(Item::Record(record)) => Ok(record),
        Some(Item::Header(_)) => Err(malformed("only the first message may be a header")),
        None => Err(malformed("a message carries neither header nor record")),
    }
}

/// Reads, digests and validates the stream, handing chunks to the committing side; renews the
/// claim (through an early chunk) when the stream is slow.
async fn receive(
    registry: &Registry,
    stream: &mut Streaming<UploadBatchRequest>,
    chunks: mpsc::Sender<Chunk>,
) -> Result<Received, RegistryError> {
    let options = registry.upload;
    let today = registry.clock.today();
    let renew_every = options.lease() / 3;
    let mut last_handed = tokio::time::Instant::now();
    let mut digest = Sha256::new();
    let mut seen = HashSet::new();
    let mut chunk = Chunk::default();
    let mut received = Received {
        count: 0,
        valid: 0,
        rejected: 0,
        digest: Vec::new(),
    };
    loop {
        let message = tokio::select! {
            message = next_message(stream, options.idle_timeout) => message?,
            // The committing side failed: its error is the answer; stop reading.
            () = chunks.closed() => return Err(RegistryError::Internal("upload committer stopped".into())),
        };
        let Some(message) = message else { break };
        let wire = record_of(message)?;
        received.count += 1;
        if received.count > MAX_BATCH_RECORDS {
            return Err(malformed(format!(
                "a batch holds at most {MAX_BATCH_RECORDS} records"
            )));
        }
        // Content digest: a retry with the same id must carry the same records.
        digest.update(wire.encoded_len().to_le_bytes());
        digest.update(wire.encode_to_vec());
        let position = received.count;
        match validate_record(&wire, "", today) {
            Ok(record) if !seen.insert(record.nhs_number) => {
                received.rejected += 1;
                chunk.rejections.push(rejection(
                    position,
                    &wire.local_case_id,
                    FieldViolation::new(
                        "nhs_number",
                        ErrorReason::DuplicateInBatch,
                        "the NHS number already appeared earlier in this batch",
                    ),
                ));
            }
            Ok(record) => {
                received.valid += 1;
                chunk.records.push(BatchRecord { position, record });
                chunk.case_ids.insert(position, wire.local_case_id);
            }
            Err(violations) => {
                received.rejected += 1;
                // Every rule the record breaks, so the council fixes the row once; the first
                // also fills the single-violation fields older clients read.
                let all: Vec<RecordViolation> = violations
                    .iter()
                    .map(|violation| RecordViolation {
                        field: violation.field.clone(),
                        reason: violation.reason as i32,
                        message: violation.description.clone(),
                    })
                    .collect();
                let first = violations.into_iter().next().unwrap_or_else(|| {
                    FieldViolation::new("", ErrorReason::Unspecified, "rejected")
                });
                let mut refusal = rejection(position, &wire.local_case_id, first);
                refusal.violations = all;
                chunk.rejections.push(refusal);
            }
        }
        let full = chunk.records.len() >= options.chunk || chunk.rejections.len() >= options.chunk;
        if full || last_handed.elapsed() >= renew_every {
            // Waits while the committing side is a chunk behind: memory stays bounded, and
            // HTTP/2 flow control slows the client instead of frames piling up unread.
            hand_over(&chunks, std::mem::take(&mut chunk)).await?;
            last_handed = tokio::time::Instant::now();
        }
    }
    if !chunk.is_empty() {
        hand_over(&chunks, chunk).await?;
    }
    received.digest = digest.finalize().to_vec();
    Ok(received)
}

async fn hand_over(chunks: &mpsc::Sender<Chunk>, chunk: Chunk) -> Result<(), RegistryError> {
    chunks
        .send(chunk)
        .await
        .map_err(|_| RegistryError::Internal("upload committer stopped".into()))
}

/// Reads the rest of a stream whose batch already completed, to compare its content.
async fn digest_rest(
    stream: &mut Streaming<UploadBatchRequest>,
    idle: Duration,
) -> Result<Vec<u8>, RegistryError> {
    let mut digest = Sha256::new();
    let mut count = 0u64;
    while let Some(message) = next_message(stream, idle).await? {
        let wire = record_of(message)?;
        count += 1;
        if count > MAX_BATCH_RECORDS {
            return Err(malformed(format!(
                "a batch holds at most {MAX_BATCH_RECORDS} records"
            )));
        }
        digest.update(wire.encoded_len().to_le_bytes());
        digest.update(wire.encode_to_vec());
    }
    Ok(digest.finalize().to_vec())
}

/// Runs one `UploadBatch` call.
#[tracing::instrument(skip_all, fields(rpc = "UploadBatch"))]
pub(super) async fn upload_batch(
    registry: &Registry,
    request: Request<Streaming<UploadBatchRequest>>,
) -> Result<Response<UploadBatchResponse>, Status> {
    let extensions = request.extensions().clone();
    let mut stream = request.into_inner();
    let idle = registry.upload.idle_timeout;
    let header: BatchHeader = match next_message(&mut stream, idle).await? {
        Some(UploadBatchRequest {
            item: Some(Item::Header(header)),
        }) => header,
        _ => return Err(malformed("the first message must be the batch header").into()),
    };
    let ods = authorize(
        &extensions,
        &header.local_authority_ods_code,
        Scope::Write,
        "UploadBatch",
    )?;
    let batch_id = header.batch_id.clone();
    if batch_id.is_empty()
        || batch_id.len() > MAX_BATCH_ID
        || !batch_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
    {
        return Err(malformed(format!(
            "batch_id must be 1 to {MAX_BATCH_ID} letters, digits, '.', '_', ':' or '-'"
        ))
        .into());
    }
    let batch = Batch {
        ods: ods.clone(),
        batch_id: batch_id.clone(),
        holder: {
            use rand_core::RngCore as _;
            // Random, so two uploads (on any replica) never share an identity.
            i64::from_le_bytes(rand_core::OsRng.next_u64().to_le_bytes())
        },
    };
    let claim = {
        let batch = batch.clone();
        let now = registry.clock.now_micros();
        let until = now.saturating_add(micros(registry.upload.lease()));
        registry
            .db
            .run(move |conn| {
                let claim =
                    batches::claim(conn, &batch.ods, &batch.batch_id, batch.holder, now, until)?;
                // Checked after the claim: a completed batch replays even if the council's
                // contacts were since removed.
                let has_contacts = records::get_council(conn, &batch.ods)?.is_some();
                Ok((claim, has_contacts))
            })
            .await?
    };
    match claim {
        (Claim::Completed(previous), _) => {
            let digest = digest_rest(&mut stream, idle).await?;
            return Ok(Response::new(replay(&previous, &digest)?));
        }
        (Claim::Held, _) => {
            // Another upload of this id is running: read this one without applying anything,
            // then answer as a retry would be once the other completes.
            let digest = digest_rest(&mut stream, idle).await?;
            let previous = await_completion(registry, &batch).await?;
            return Ok(Response::new(replay(&previous, &digest)?));
        }
        (Claim::Claimed, false) => {
            release(registry, &batch).await;
            return Err(RegistryError::ContactsRequired.into());
        }
        (Claim::Claimed, true) => {}
    }
    match run_claimed(registry, &batch, &header, &mut stream).await {
        Ok(answer) => Ok(Response::new(answer)),
        Err(e) => {
            release(registry, &batch).await;
            Err(e.into())
        }
    }
}

/// The answer to a retry of a completed batch: its stored outcome if the content is the same.
fn replay(previous: &UploadBatchRow, digest: &[u8]) -> Result<UploadBatchResponse, RegistryError> {
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

/// Waits for the upload holding `batch`'s id to complete (at most one lease); BATCH_IN_PROGRESS
/// if it fails or outlasts the wait.
async fn await_completion(
    registry: &Registry,
    batch: &Batch,
) -> Result<UploadBatchRow, RegistryError> {
    let give_up = tokio::time::Instant::now() + registry.upload.lease();
    loop {
        let (done, held) = {
            let batch = batch.clone();
            let now = registry.clock.now_micros();
            registry
                .db
                .run(move |conn| {
                    // The claim first, then the outcome: completion stores the outcome and drops
                    // the claim in one transaction, so a claim found gone means an outcome, if
                    // any, is already visible. (The other order saw "no outcome", then "no
                    // claim" when the holder completed in between, and called a completed
                    // batch failed.)
                    let held = batches::is_claimed(conn, &batch.ods, &batch.batch_id, now)?;
                    Ok((batches::get_batch(conn, &batch.ods, &batch.batch_id)?, held))
                })
                .await?
        };
        match (done, held) {
            (Some(done), _) => return Ok(done),
            (None, true) if tokio::time::Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // The other upload failed, or is still going after a whole lease.
            (None, _) => return Err(RegistryError::BatchInProgress),
        }
    }
}

/// Gives up a claim after a failure, so a retry need not wait for it to lapse. Best effort: if
/// the database is down, the claim lapses on its own.
async fn release(registry: &Registry, batch: &Batch) {
    let batch = batch.clone();
    let released = registry
        .db
        .run(move |conn| batches::release(conn, &batch.ods, &batch.batch_id, batch.holder))
        .await;
    if let Err(e) = released {
        tracing::warn!(error = %e, "could not release an upload's claim; it will lapse");
    }
}

/// The upload proper, once this call holds the batch id.
async fn run_claimed(
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
#[tracing::instrument(skip_all, fields(rpc = "GetBatch"))]
pub(super) async fn get_batch(
    registry: &Registry,
    request: Request<GetBatchRequest>,
) -> Result<Response<GetBatchResponse>, Status> {
    let ods = super::auth::council(&request)?;
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
#[tracing::instrument(skip_all, fields(rpc = "ListBatchRejections"))]
pub(super) async fn list_rejections(
    registry: &Registry,
    request: Request<ListBatchRejectionsRequest>,
) -> Result<Response<ListBatchRejectionsResponse>, Status> {
    let ods = super::auth::council(&request)?;
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
