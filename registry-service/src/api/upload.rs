//! `UploadBatch`, the bulk-upload protocol: a header, then records streamed in; each record is
//! validated and accepted or rejected with a reason, accepted records are committed a chunk at a
//! time (accepted records stay accepted when others fail), and the batch's outcome is stored
//! under its id so a retry with the same id and content is answered from the store instead of
//! applied twice.

use std::collections::{HashMap, HashSet};

use cpis_core::{ods::OdsCode, status::FieldViolation};
use cpis_proto::cpis::common::v1::ErrorReason;
use cpis_proto::cpis::registry::v1::{
    BatchHeader, BatchOutcome, BatchResult, RecordRejection, UploadBatchRequest,
    UploadBatchResponse, upload_batch_request::Item,
};
use prost::Message as _;
use sha2::{Digest as _, Sha256};
use tonic::{Request, Response, Status, Streaming};

use super::Registry;
use super::auth::{Scope, authorize};
use super::convert::validate_record;
use crate::db::models::{UploadBatchRow, decode};
use crate::db::records::{self, BatchRecord};
use crate::domain::dates::timestamp;
use crate::error::RegistryError;

/// Most records in one batch.
const MAX_BATCH_RECORDS: u64 = 1_000_000;
/// Longest batch id.
const MAX_BATCH_ID: usize = 128;

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
    }
}

/// One upload in progress: what has been read, accepted and rejected so far.
struct Upload<'a> {
    registry: &'a Registry,
    ods: OdsCode,
    chunk: Vec<BatchRecord>,
    /// The council's case id of every accepted record not yet committed, by position.
    case_ids: HashMap<u64, String>,
    rejections: Vec<RecordRejection>,
    accepted: u64,
}

impl Upload<'_> {
    /// Commits the pending chunk in one transaction; records refused there (numbers the
    /// demographics feed marked inactive) join the rejections.
    async fn flush(&mut self) -> Result<(), RegistryError> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let capacity = self.registry.upload_chunk;
        let mut chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(capacity));
        let mut case_ids = std::mem::take(&mut self.case_ids);
        let (ods, now) = (self.ods.clone(), self.registry.clock.now_micros());
        let refused = self
            .registry
            .db
            .run(move |conn| records::apply_chunk(conn, &ods, &mut chunk, now))
            .await?;
        for (position, inactive) in refused {
            self.accepted -= 1;
            let case_id = case_ids.remove(&position).unwrap_or_default();
            let mut refused = rejection(
                position,
                &case_id,
                FieldViolation::new(
                    "nhs_number",
                    RegistryError::reason_inactive(inactive.reason),
                    inactive.message(),
                ),
            );
            refused.replacement_nhs_number = inactive.replacement.clone().unwrap_or_default();
            self.rejections.push(refused);
        }
        Ok(())
    }
}

/// Runs one `UploadBatch` call.
#[tracing::instrument(skip_all, fields(rpc = "UploadBatch"))]
pub(super) async fn upload_batch(
    registry: &Registry,
    request: Request<Streaming<UploadBatchRequest>>,
) -> Result<Response<UploadBatchResponse>, Status> {
    let extensions = request.extensions().clone();
    let mut stream = request.into_inner();
    let header: BatchHeader = match stream.message().await? {
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
    let (previous, has_contacts) = {
        let (ods, batch_id) = (ods.clone(), batch_id.clone());
        registry
            .db
            .run(move |conn| {
                Ok((
                    records::get_batch(conn, &ods, &batch_id)?,
                    records::get_council(conn, &ods)?.is_some(),
                ))
            })
            .await?
    };
    if previous.is_none() && !has_contacts {
        return Err(RegistryError::ContactsRequired.into());
    }

    let today = registry.clock.today();
    let mut digest = Sha256::new();
    let mut seen = HashSet::new();
    let mut upload = Upload {
        registry,
        ods: ods.clone(),
        chunk: Vec::with_capacity(registry.upload_chunk),
        case_ids: HashMap::new(),
        rejections: Vec::new(),
        accepted: 0,
    };
    let mut received = 0u64;
    while let Some(message) = stream.message().await? {
        let wire = match message.item {
            Some(Item::Record(record)) => record,
            Some(Item::Header(_)) => {
                return Err(malformed("only the first message may be a header").into());
            }
            None => return Err(malformed("a message carries neither header nor record").into()),
        };
        received += 1;
        if received > MAX_BATCH_RECORDS {
            return Err(
                malformed(format!("a batch holds at most {MAX_BATCH_RECORDS} records")).into(),
            );
        }
        // Content digest: a retry with the same id must carry the same records.
        digest.update(wire.encoded_len().to_le_bytes());
        digest.update(wire.encode_to_vec());
        if previous.is_some() {
            continue; // replaying: read the stream only to compare content
        }
        match validate_record(&wire, "", today) {
            Ok(record) if !seen.insert(record.nhs_number) => upload.rejections.push(rejection(
                received,
                &wire.local_case_id,
                FieldViolation::new(
                    "nhs_number",
                    ErrorReason::DuplicateInBatch,
                    "the NHS number already appeared earlier in this batch",
                ),
            )),
            Ok(record) => {
                upload.chunk.push(BatchRecord {
                    position: received,
                    record,
                });
                upload.case_ids.insert(received, wire.local_case_id.clone());
                upload.accepted += 1;
            }
            Err(violations) => {
                let first = violations.into_iter().next().unwrap_or_else(|| {
                    FieldViolation::new("", ErrorReason::Unspecified, "rejected")
                });
                upload
                    .rejections
                    .push(rejection(received, &wire.local_case_id, first));
            }
        }
        if upload.chunk.len() >= registry.upload_chunk {
            upload.flush().await?;
        }
    }
    let content_digest = digest.finalize().to_vec();

    if let Some(previous) = previous {
        if previous.content_digest != content_digest {
            return Err(RegistryError::BatchIdReused.into());
        }
        let result: BatchResult = decode(&previous.result, "upload_batches", "result")?;
        tracing::info!(la = %ods, batch = %batch_id, "batch replayed");
        return Ok(Response::new(UploadBatchResponse {
            result: Some(result),
            replayed: true,
        }));
    }
    upload.flush().await?;
    let Upload {
        mut rejections,
        accepted,
        ..
    } = upload;
    // Refusals found at commit time join the validation ones in position order.
    rejections.sort_by_key(|r| r.position);

    let now = registry.clock.now_micros();
    let rejected = u64::try_from(rejections.len()).unwrap_or(u64::MAX);
    let result = BatchResult {
        batch_id: batch_id.clone(),
        sequence_number: header.sequence_number,
        outcome: batch_outcome(accepted, rejected) as i32,
        received_count: received,
        accepted_count: accepted,
        rejected_count: rejected,
        rejections,
        expected_record_count_mismatch: header.expected_record_count != 0
            && header.expected_record_count != received,
        complete_time: Some(timestamp(now)),
    };
    let row = UploadBatchRow {
        local_authority: ods.to_string(),
        batch_id: batch_id.clone(),
        content_digest: content_digest.clone(),
        result: result.encode_to_vec(),
        complete_time: now,
    };
    let stored = registry
        .db
        .run(move |conn| records::store_batch(conn, &row))
        .await?;
    // A concurrent upload of the same id completed first: the same records get its outcome (a
    // replay); other records under that id are refused, as a retry of them would be.
    if stored.content_digest != content_digest {
        return Err(RegistryError::BatchIdReused.into());
    }
    let (result, replayed) = if stored.result == result.encode_to_vec() {
        (result, false)
    } else {
        (decode(&stored.result, "upload_batches", "result")?, true)
    };
    tracing::info!(
        la = %ods,
        batch = %batch_id,
        received,
        accepted = result.accepted_count,
        rejected = result.rejected_count,
        "batch stored"
    );
    Ok(Response::new(UploadBatchResponse {
        result: Some(result),
        replayed,
    }))
}
