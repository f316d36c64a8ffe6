//! `UploadBatch`, the bulk-upload protocol: a header, then records streamed in; each record is
//! validated and accepted or rejected with a reason, accepted records are committed a chunk at a
//! time (accepted records stay accepted when others fail), and the batch's outcome is stored
//! under its id so a retry with the same id and content is answered from the store instead of
//! applied twice.
//!
//! This file is the protocol: the header, the claim, replays and waits. Three things keep it safe
//! at any client speed and size:
//! - **A pipeline** (`pipeline`): one side reads and validates the stream while the other commits
//!   the previous chunk, joined by a one-chunk channel. Reading never stops for a commit (HTTP/2
//!   peers cut off a connection whose small frames pile up unread), and memory holds at most
//!   three chunks.
//! - **A claim on the batch id** in the database before anything is applied: a concurrent upload
//!   of the same id is refused (ABORTED, BATCH_IN_PROGRESS) with nothing of it applied.
//! - **Rejections written as they are found**: the answer carries the counts and the first
//!   [`ANSWER_REJECTIONS`]; `ListBatchRejections` pages through the rest (`outcome`).

mod outcome;
mod pipeline;

use std::time::Duration;

use cpis_core::{ods::OdsCode, status::FieldViolation};
use cpis_proto::cpis::registry::v1::{
    BatchHeader, BatchOutcome, RecordRejection, UploadBatchRequest, UploadBatchResponse,
    upload_batch_request::Item,
};
use tonic::{Request, Response, Status, Streaming};

pub(super) use outcome::{get_batch, list_rejections};
use outcome::{replay, run_claimed};
use pipeline::{digest_rest, next_message};

use super::Registry;
use super::auth::{Scope, authorize};
use crate::db::batches::{self, Claim};
use crate::db::models::UploadBatchRow;
use crate::db::records;
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

/// The one upload in progress: which council's batch, and this upload's claim on its id.
#[derive(Clone)]
struct Batch {
    ods: OdsCode,
    batch_id: String,
    holder: i64,
}

/// Runs one `UploadBatch` call.
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
