//! The committing half of `UploadBatch`: the reading side reads, digests and validates the
//! stream into chunks; the committing side commits each chunk (records, rejections and the claim's
//! renewal) in one transaction while the next is read. A one-chunk channel joins them, so reading
//! never stops for a commit and memory holds at most three chunks.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use cpis_core::status::FieldViolation;
use cpis_proto::cpis::common::v1::ErrorReason;
use cpis_proto::cpis::registry::v1::{
    RecordRejection, RecordViolation, UploadBatchRequest, upload_batch_request::Item,
};
use prost::Message as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tonic::Streaming;
use tracing::Instrument as _;

use super::{Batch, MAX_BATCH_RECORDS, malformed, micros, rejection};
use crate::api::Registry;
use crate::api::validate::validate_record;
use crate::db::bulk::{self, BatchRecord, Renewal};
use crate::db::models::BatchRejectionRow;
use crate::domain::nhs_status::Inactive;
use crate::error::RegistryError;

/// What the reading side hands the committing side: accepted records to apply and the
/// rejections found since the last chunk.
#[derive(Default)]
pub(super) struct Chunk {
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

/// What the committing side did.
#[derive(Debug, Default)]
pub(super) struct Committed {
    /// Records refused at commit (numbers the demographics feed marked inactive).
    pub(super) refused: u64,
}

/// One rejection row of `batch`.
fn rejection_row(batch: &Batch, rejection: &RecordRejection) -> BatchRejectionRow {
    BatchRejectionRow {
        local_authority: batch.ods.to_string(),
        batch_id: batch.batch_id.clone(),
        position: i64::try_from(rejection.position).unwrap_or(i64::MAX),
        rejection: rejection.encode_to_vec(),
    }
}

/// The rejection of a record whose NHS number the demographics feed marked inactive.
fn refusal(position: u64, case_id: &str, inactive: &Inactive) -> RecordRejection {
    let mut refusal = rejection(
        position,
        case_id,
        FieldViolation::new(
            "nhs_number",
            RegistryError::reason_inactive(inactive.reason),
            inactive.message(),
        ),
    );
    refusal.replacement_nhs_number = inactive.replacement.clone().unwrap_or_default();
    refusal
}

/// Commits chunks as they arrive, one transaction each (the chunk's records, its rejections and
/// the claim's renewal: one commit, one fsync), until the reading side closes the channel.
pub(super) async fn commit_chunks(
    registry: &Registry,
    batch: &Batch,
    mut chunks: mpsc::Receiver<Chunk>,
) -> Result<Committed, RegistryError> {
    let mut committed = Committed::default();
    let lease = micros(registry.upload.lease());
    while let Some(chunk) = chunks.recv().await {
        let Chunk {
            mut records,
            case_ids,
            rejections,
        } = chunk;
        // One span per chunk's commit: counts only.
        let chunk_span = tracing::info_span!(
            "upload_chunk_commit",
            records = records.len(),
            rejections = rejections.len()
        );
        let rows: Vec<BatchRejectionRow> =
            rejections.iter().map(|r| rejection_row(batch, r)).collect();
        let now = registry.clock.now_micros();
        let renewal = Renewal {
            batch_id: batch.batch_id.clone(),
            holder: batch.holder,
            until: now.saturating_add(lease),
        };
        let batch = batch.clone();
        let refused = registry
            .db
            .run(move |conn| {
                let refused_row = |position: u64, inactive: &Inactive| {
                    let case_id = case_ids.get(&position).map_or("", String::as_str);
                    rejection_row(&batch, &refusal(position, case_id, inactive))
                };
                bulk::commit_chunk(
                    conn,
                    &batch.ods,
                    &mut records,
                    &rows,
                    &renewal,
                    now,
                    refused_row,
                )
            })
            .instrument(chunk_span)
            .await?;
        committed.refused += refused;
    }
    Ok(committed)
}

/// What the reading side saw.
pub(super) struct Received {
    pub(super) count: u64,
    /// Records that passed validation (some may still be refused at commit).
    pub(super) valid: u64,
    pub(super) rejected: u64,
    pub(super) digest: Vec<u8>,
}

/// The next message, or `BatchStalled` when none comes within the idle limit.
pub(super) async fn next_message(
    stream: &mut Streaming<UploadBatchRequest>,
    idle: Duration,
) -> Result<Option<UploadBatchRequest>, RegistryError> {
    match tokio::time::timeout(idle, stream.message()).await {
        Ok(message) => message.map_err(|status| RegistryError::Stream(Box::new(status))),
        Err(_) => Err(RegistryError::BatchStalled(idle)),
    }
}

/// The record of a message after the header, or why the batch is malformed.
pub(super) fn record_of(
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
pub(super) async fn receive(
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
pub(super) async fn digest_rest(
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
