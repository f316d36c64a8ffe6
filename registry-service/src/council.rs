//! The registry's council-facing service: contact details, one-record writes and reads,
//! listings and bulk uploads. Every call is authenticated and scoped to the caller's council.
//! Access history is served; notifications (issue 5) authenticate and scope the caller, then
//! answer UNIMPLEMENTED.

use std::collections::HashSet;

use cpis_core::status::FieldViolation;
use cpis_proto::cpis::common::v1::{AccessEvent, ErrorReason, LocalAuthority};
use cpis_proto::cpis::registry::v1::{
    AcknowledgeNotificationsRequest, AcknowledgeNotificationsResponse, BatchOutcome, BatchResult,
    DeleteChildRecordRequest, DeleteChildRecordResponse, GetBatchRequest, GetBatchResponse,
    GetChildRecordRequest, GetChildRecordResponse, GetContactDetailsRequest,
    GetContactDetailsResponse, ListAccessEventsRequest, ListAccessEventsResponse,
    ListChildRecordsRequest, ListChildRecordsResponse, ListNotificationsRequest,
    ListNotificationsResponse, Notification, PutChildRecordRequest, PutChildRecordResponse,
    RecordRejection, RecordStateFilter, SetContactDetailsRequest, SetContactDetailsResponse,
    SubscribeNotificationsRequest, SubscribeNotificationsResponse, UploadBatchRequest,
    UploadBatchResponse, council_service_server::CouncilService, upload_batch_request::Item,
};
use prost::Message as _;
use sha2::{Digest as _, Sha256};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{CouncilAuth, Scope};
use crate::clock::Clock;
use crate::db::{
    Database,
    models::{LocalAuthorityRow, NewLocalAuthority, UploadBatchRow},
};
use crate::error::RegistryError;
use crate::record::{
    MAX_ORG_NAME, is_phone, micros_to_timestamp, parse_nhs_number, row_to_wire, validate_record,
};
use crate::store::{self, StateFilter};
use crate::subscription::SubscriptionOptions;
use crate::wakeups::Wakeups;
use tokio::sync::watch;

/// Most records in one batch.
pub const MAX_BATCH_RECORDS: u64 = 1_000_000;
/// Longest batch id.
const MAX_BATCH_ID: usize = 128;
/// Default and maximum page sizes.
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;

/// Handler for `cpis.registry.v1.CouncilService`.
#[derive(Clone, Debug)]
pub struct CouncilApi {
    db: Database,
    auth: CouncilAuth,
    clock: Clock,
    upload_chunk: usize,
    wakeups: Wakeups,
    shutdown: watch::Receiver<bool>,
    subscription: SubscriptionOptions,
}

/// What the council API shares with the rest of the registry.
#[derive(Clone, Debug)]
pub struct CouncilDeps {
    /// The database.
    pub db: Database,
    /// Council authentication.
    pub auth: CouncilAuth,
    /// The clock.
    pub clock: Clock,
    /// Records per bulk-upload transaction.
    pub upload_chunk: usize,
    /// Live wake-ups for subscribers.
    pub wakeups: Wakeups,
    /// Turns true when the server starts draining; subscribers end with SHUTTING_DOWN.
    pub shutdown: watch::Receiver<bool>,
    /// Subscriber buffering, polling and heartbeats.
    pub subscription: SubscriptionOptions,
}

impl CouncilApi {
    /// Creates the handler.
    pub fn new(deps: CouncilDeps) -> Self {
        Self {
            db: deps.db,
            auth: deps.auth,
            clock: deps.clock,
            upload_chunk: deps.upload_chunk.max(1),
            wakeups: deps.wakeups,
            shutdown: deps.shutdown,
            subscription: deps.subscription,
        }
    }
}

fn contacts_to_wire(row: LocalAuthorityRow) -> LocalAuthority {
    LocalAuthority {
        ods_code: row.ods_code,
        name: row.name,
        emergency_duty_phone: row.emergency_duty_phone,
        office_hours_phone: row.office_hours_phone.unwrap_or_default(),
        update_time: Some(micros_to_timestamp(row.update_time)),
    }
}

fn validate_contacts(la: &LocalAuthority) -> Vec<FieldViolation> {
    let mut violations = Vec::new();
    let name = la.name.trim();
    if name.is_empty() {
        violations.push(FieldViolation::new(
            "local_authority.name",
            ErrorReason::FieldRequired,
            "is required",
        ));
    } else if name.chars().count() > MAX_ORG_NAME {
        violations.push(FieldViolation::new(
            "local_authority.name",
            ErrorReason::FieldTooLong,
            format!("must be at most {MAX_ORG_NAME} characters"),
        ));
    } else if name.chars().any(char::is_control) {
        violations.push(FieldViolation::new(
            "local_authority.name",
            ErrorReason::FieldFormat,
            "must not contain control characters",
        ));
    }
    let phone_rule = "must be 10 to 15 digits, optionally with spaces, hyphens and a leading +";
    if la.emergency_duty_phone.trim().is_empty() {
        violations.push(FieldViolation::new(
            "local_authority.emergency_duty_phone",
            ErrorReason::FieldRequired,
            "is required: health must always have a 24/7 number to ring",
        ));
    } else if !is_phone(la.emergency_duty_phone.trim()) {
        violations.push(FieldViolation::new(
            "local_authority.emergency_duty_phone",
            ErrorReason::FieldFormat,
            phone_rule,
        ));
    }
    if !la.office_hours_phone.trim().is_empty() && !is_phone(la.office_hours_phone.trim()) {
        violations.push(FieldViolation::new(
            "local_authority.office_hours_phone",
            ErrorReason::FieldFormat,
            phone_rule,
        ));
    }
    violations
}

fn page_size(requested: i32) -> Result<i64, RegistryError> {
    match i64::from(requested) {
        n if n < 0 => Err(RegistryError::Invalid(vec![FieldViolation::new(
            "page_size",
            ErrorReason::FieldFormat,
            "must not be negative",
        )])),
        0 => Ok(DEFAULT_PAGE),
        n => Ok(n.min(MAX_PAGE)),
    }
}

/// Page tokens: "r1:" + the last NHS number of the previous page + ":" + the filter, so a token
/// cannot be replayed against another query.
fn decode_page_token(token: &str, filter: i32) -> Result<Option<String>, RegistryError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        RegistryError::Invalid(vec![FieldViolation::new(
            "page_token",
            ErrorReason::PageTokenInvalid,
            "is not a token this query issued",
        )])
    };
    let rest = token.strip_prefix("r1:").ok_or_else(invalid)?;
    let (nhs, token_filter) = rest.split_once(':').ok_or_else(invalid)?;
    if token_filter != filter.to_string()
        || nhs.len() != 10
        || !nhs.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(invalid());
    }
    Ok(Some(nhs.to_owned()))
}

fn sequence_not_issued() -> RegistryError {
    RegistryError::OutOfRange {
        reason: ErrorReason::SequenceNotIssued,
        message: "that sequence number has not been issued yet".into(),
    }
}

fn batch_outcome(accepted: u64, rejected: u64) -> BatchOutcome {
    match (accepted, rejected) {
        (0, _) => BatchOutcome::NoneLoaded,
        (_, 0) => BatchOutcome::AllLoaded,
        _ => BatchOutcome::PartiallyLoaded,
    }
}

#[tonic::async_trait]
impl CouncilService for CouncilApi {
    #[tracing::instrument(skip_all, fields(rpc = "SetContactDetails"))]
    async fn set_contact_details(
        &self,
        request: Request<SetContactDetailsRequest>,
    ) -> Result<Response<SetContactDetailsResponse>, Status> {
        let la = request
            .get_ref()
            .local_authority
            .clone()
            .unwrap_or_default();
        let council = self.auth.authorize(
            request.metadata(),
            &la.ods_code,
            Scope::Write,
            "SetContactDetails",
        )?;
        let violations = validate_contacts(&la);
        if !violations.is_empty() {
            return Err(RegistryError::Invalid(violations).into());
        }
        let row = NewLocalAuthority {
            ods_code: council.ods_code.clone(),
            name: la.name.trim().to_owned(),
            emergency_duty_phone: la.emergency_duty_phone.trim().to_owned(),
            office_hours_phone: Some(la.office_hours_phone.trim().to_owned())
                .filter(|p| !p.is_empty()),
            update_time: self.clock.now_micros(),
        };
        let stored = self
            .db
            .run(move |conn| store::upsert_contacts(conn, &row))
            .await?;
        tracing::info!(la = %council.ods_code, "contact details set");
        Ok(Response::new(SetContactDetailsResponse {
            local_authority: Some(contacts_to_wire(stored)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetContactDetails"))]
    async fn get_contact_details(
        &self,
        request: Request<GetContactDetailsRequest>,
    ) -> Result<Response<GetContactDetailsResponse>, Status> {
        let council = self.auth.authorize(
            request.metadata(),
            &request.get_ref().local_authority_ods_code,
            Scope::Read,
            "GetContactDetails",
        )?;
        let ods = council.ods_code.clone();
        let row = self
            .db
            .run(move |conn| store::get_contacts(conn, &ods))
            .await?;
        let row = row.ok_or_else(|| RegistryError::NotFound {
            reason: ErrorReason::ContactDetailsMissing,
            message: "no contact details have been set for this council".into(),
        })?;
        Ok(Response::new(GetContactDetailsResponse {
            local_authority: Some(contacts_to_wire(row)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "PutChildRecord"))]
    async fn put_child_record(
        &self,
        request: Request<PutChildRecordRequest>,
    ) -> Result<Response<PutChildRecordResponse>, Status> {
        let council = self.auth.authorize(
            request.metadata(),
            &request.get_ref().local_authority_ods_code,
            Scope::Write,
            "PutChildRecord",
        )?;
        let body = request.into_inner();
        let Some(wire) = body.record else {
            return Err(RegistryError::Invalid(vec![FieldViolation::new(
                "record",
                ErrorReason::FieldRequired,
                "is required",
            )])
            .into());
        };
        if let Some(expected) = body.expected_version
            && expected < 0
        {
            return Err(RegistryError::Invalid(vec![FieldViolation::new(
                "expected_version",
                ErrorReason::FieldFormat,
                "must not be negative",
            )])
            .into());
        }
        let record = validate_record(&wire, "record.", self.clock.today())
            .map_err(RegistryError::Invalid)?;
        let now = self.clock.now_micros();
        let ods = council.ods_code.clone();
        let stored = self
            .db
            .run(move |conn| store::put_record(conn, &ods, &record, body.expected_version, now))
            .await?;
        tracing::info!(la = %council.ods_code, created = stored.created, version = stored.row.version, "record stored");
        Ok(Response::new(PutChildRecordResponse {
            record: Some(row_to_wire(&stored.row)),
            created: stored.created,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetChildRecord"))]
    async fn get_child_record(
        &self,
        request: Request<GetChildRecordRequest>,
    ) -> Result<Response<GetChildRecordResponse>, Status> {
        let council = self.auth.authorize(
            request.metadata(),
            &request.get_ref().local_authority_ods_code,
            Scope::Read,
            "GetChildRecord",
        )?;
        let nhs = parse_nhs_number(&request.get_ref().nhs_number, "nhs_number")
            .map_err(|v| RegistryError::Invalid(vec![v]))?
            .to_string();
        let ods = council.ods_code;
        let row = self
            .db
            .run(move |conn| store::get_record(conn, &ods, &nhs))
            .await?;
        let row = row.ok_or_else(|| RegistryError::NotFound {
            reason: ErrorReason::RecordNotFound,
            message: "the council holds no record for this NHS number".into(),
        })?;
        Ok(Response::new(GetChildRecordResponse {
            record: Some(row_to_wire(&row)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListChildRecords"))]
    async fn list_child_records(
        &self,
        request: Request<ListChildRecordsRequest>,
    ) -> Result<Response<ListChildRecordsResponse>, Status> {
        let council = self.auth.authorize(
            request.metadata(),
            &request.get_ref().local_authority_ods_code,
            Scope::Read,
            "ListChildRecords",
        )?;
        let body = request.into_inner();
        let filter = match RecordStateFilter::try_from(body.state) {
            Ok(RecordStateFilter::Unspecified) => StateFilter::All,
            Ok(RecordStateFilter::Active) => StateFilter::Active,
            Ok(RecordStateFilter::Ended) => StateFilter::Ended,
            Err(_) => {
                return Err(RegistryError::Invalid(vec![FieldViolation::new(
                    "state",
                    ErrorReason::FieldFormat,
                    "is not a known filter",
                )])
                .into());
            }
        };
        let limit = page_size(body.page_size)?;
        let after = decode_page_token(&body.page_token, body.state)?;
        let today = self.clock.today();
        let ods = council.ods_code;
        let mut rows = self
            .db
            .run(move |conn| {
                store::list_records(conn, &ods, after.as_deref(), filter, today, limit + 1)
            })
            .await?;
        let more = usize::try_from(limit).is_ok_and(|l| rows.len() > l);
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next_page_token = match (more, rows.last()) {
            (true, Some(last)) => format!("r1:{}:{}", last.nhs_number, body.state),
            _ => String::new(),
        };
        Ok(Response::new(ListChildRecordsResponse {
            records: rows.iter().map(row_to_wire).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "DeleteChildRecord"))]
    async fn delete_child_record(
        &self,
        request: Request<DeleteChildRecordRequest>,
    ) -> Result<Response<DeleteChildRecordResponse>, Status> {
        let council = self.auth.authorize(
            request.metadata(),
            &request.get_ref().local_authority_ods_code,
            Scope::Write,
            "DeleteChildRecord",
        )?;
        let body = request.into_inner();
        let nhs = parse_nhs_number(&body.nhs_number, "nhs_number")
            .map_err(|v| RegistryError::Invalid(vec![v]))?
            .to_string();
        let ods = council.ods_code.clone();
        self.db
            .run(move |conn| store::delete_record(conn, &ods, &nhs, body.expected_version))
            .await?;
        tracing::info!(la = %council.ods_code, "record deleted");
        Ok(Response::new(DeleteChildRecordResponse {}))
    }

    #[tracing::instrument(skip_all, fields(rpc = "UploadBatch"))]
    async fn upload_batch(
        &self,
        request: Request<Streaming<UploadBatchRequest>>,
    ) -> Result<Response<UploadBatchResponse>, Status> {
        let metadata = request.metadata().clone();
        let mut stream = request.into_inner();

        let header = match stream.message().await? {
            Some(UploadBatchRequest {
                item: Some(Item::Header(header)),
            }) => header,
            _ => {
                return Err(RegistryError::BatchMalformed(
                    "the first message must be the batch header".into(),
                )
                .into());
            }
        };
        let council = self.auth.authorize(
            &metadata,
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
            return Err(RegistryError::BatchMalformed(format!(
                "batch_id must be 1 to {MAX_BATCH_ID} letters, digits, '.', '_', ':' or '-'"
            ))
            .into());
        }
        let ods = council.ods_code.clone();
        let (previous, contacts) = {
            let (ods, batch_id) = (ods.clone(), batch_id.clone());
            self.db
                .run(move |conn| {
                    Ok((
                        store::get_batch(conn, &ods, &batch_id)?,
                        store::get_contacts(conn, &ods)?,
                    ))
                })
                .await?
        };
        if previous.is_none() && contacts.is_none() {
            return Err(RegistryError::FailedPrecondition {
                reason: ErrorReason::ContactDetailsMissing,
                message: "set the council's contact details (SetContactDetails) before uploading"
                    .into(),
            }
            .into());
        }

        let today = self.clock.today();
        let mut digest = Sha256::new();
        let mut seen = HashSet::new();
        let mut chunk = Vec::with_capacity(self.upload_chunk);
        let mut rejections = Vec::new();
        let (mut received, mut accepted) = (0u64, 0u64);

        while let Some(message) = stream.message().await? {
            let wire = match message.item {
                Some(Item::Record(record)) => record,
                Some(Item::Header(_)) => {
                    return Err(RegistryError::BatchMalformed(
                        "only the first message may be a header".into(),
                    )
                    .into());
                }
                None => {
                    return Err(RegistryError::BatchMalformed(
                        "a message carries neither header nor record".into(),
                    )
                    .into());
                }
            };
            received += 1;
            if received > MAX_BATCH_RECORDS {
                return Err(RegistryError::BatchMalformed(format!(
                    "a batch holds at most {MAX_BATCH_RECORDS} records"
                ))
                .into());
            }
            // Content digest: a retry with the same id must carry the same records.
            digest.update(wire.encoded_len().to_le_bytes());
            digest.update(wire.encode_to_vec());
            if previous.is_some() {
                continue; // replaying: read the stream only to compare content
            }
            match validate_record(&wire, "", today) {
                Ok(record) if !seen.insert(record.nhs_number) => rejections.push(RecordRejection {
                    position: received,
                    local_case_id: wire.local_case_id.clone(),
                    reason: ErrorReason::DuplicateInBatch as i32,
                    field: "nhs_number".into(),
                    message: "the NHS number already appeared earlier in this batch".into(),
                    replacement_nhs_number: String::new(),
                }),
                Ok(record) => {
                    chunk.push(store::BatchRecord {
                        position: received,
                        local_case_id: wire.local_case_id.clone(),
                        record,
                    });
                    accepted += 1;
                }
                Err(violations) => {
                    let first = violations.into_iter().next().unwrap_or_else(|| {
                        FieldViolation::new("", ErrorReason::Unspecified, "rejected")
                    });
                    rejections.push(RecordRejection {
                        position: received,
                        local_case_id: wire.local_case_id.clone(),
                        reason: first.reason as i32,
                        field: first.field,
                        message: first.description,
                        replacement_nhs_number: String::new(),
                    });
                }
            }
            if chunk.len() >= self.upload_chunk {
                let refused = self.flush(&ods, &mut chunk).await?;
                accepted -= u64::try_from(refused.len()).unwrap_or(0);
                rejections.extend(refused);
            }
        }
        let content_digest = digest.finalize().to_vec();

        if let Some(previous) = previous {
            if previous.content_digest != content_digest {
                return Err(RegistryError::BatchIdReused.into());
            }
            let result = BatchResult::decode(previous.result.as_slice()).map_err(|e| {
                RegistryError::Internal(format!("stored batch result undecodable: {e}"))
            })?;
            tracing::info!(la = %ods, batch = %batch_id, "batch replayed");
            return Ok(Response::new(UploadBatchResponse {
                result: Some(result),
                replayed: true,
            }));
        }
        let refused = self.flush(&ods, &mut chunk).await?;
        accepted -= u64::try_from(refused.len()).unwrap_or(0);
        rejections.extend(refused);
        // Refusals found at commit time join the validation ones in position order.
        rejections.sort_by_key(|r| r.position);

        let now = self.clock.now_micros();
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
            complete_time: Some(micros_to_timestamp(now)),
        };
        let row = UploadBatchRow {
            local_authority: ods.clone(),
            batch_id: batch_id.clone(),
            content_digest,
            result: result.encode_to_vec(),
            complete_time: now,
        };
        let stored = self
            .db
            .run(move |conn| {
                store::store_batch(conn, &row)?;
                store::get_batch(conn, &row.local_authority, &row.batch_id)
            })
            .await?;
        // If a concurrent upload of the same id completed first, answer with its outcome.
        let (result, replayed) = match stored {
            Some(first) if first.result != result.encode_to_vec() => (
                BatchResult::decode(first.result.as_slice())
                    .map_err(|e| RegistryError::Internal(e.to_string()))?,
                true,
            ),
            _ => (result, false),
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

    #[tracing::instrument(skip_all, fields(rpc = "ListAccessEvents"))]
    async fn list_access_events(
        &self,
        request: Request<ListAccessEventsRequest>,
    ) -> Result<Response<ListAccessEventsResponse>, Status> {
        let council = self.auth.authorize(
            request.metadata(),
            &request.get_ref().local_authority_ods_code,
            Scope::Read,
            "ListAccessEvents",
        )?;
        let body = request.into_inner();
        let nhs = parse_nhs_number(&body.nhs_number, "nhs_number")
            .map_err(|v| RegistryError::Invalid(vec![v]))?
            .to_string();
        let limit = page_size(body.page_size)?;
        let before = match body.page_token.as_str() {
            "" => None,
            token => Some(
                token
                    .strip_prefix("a1:")
                    .and_then(|id| id.parse::<i64>().ok())
                    .ok_or_else(|| {
                        RegistryError::Invalid(vec![FieldViolation::new(
                            "page_token",
                            ErrorReason::PageTokenInvalid,
                            "is not a token this query issued",
                        )])
                    })?,
            ),
        };
        let ods = council.ods_code;
        let rows = self
            .db
            .run(move |conn| {
                // A council sees the history only of numbers it holds a record for.
                if store::get_record(conn, &ods, &nhs)?.is_none() {
                    return Err(RegistryError::NotFound {
                        reason: ErrorReason::RecordNotFound,
                        message: "the council holds no record for this NHS number".into(),
                    });
                }
                crate::disclosure_store::list_access_events(conn, &nhs, before, limit + 1)
            })
            .await?;
        let more = usize::try_from(limit).is_ok_and(|l| rows.len() > l);
        let page = &rows[..rows.len().min(usize::try_from(limit).unwrap_or(usize::MAX))];
        let next_page_token = match (more, page.last()) {
            (true, Some(last)) => format!("a1:{}", last.id),
            _ => String::new(),
        };
        let access_events = page
            .iter()
            .filter_map(|row| AccessEvent::decode(row.event.as_slice()).ok())
            .collect();
        Ok(Response::new(ListAccessEventsResponse {
            access_events,
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "SubscribeNotifications"))]
    async fn subscribe_notifications(
        &self,
        request: Request<SubscribeNotificationsRequest>,
    ) -> Result<
        Response<
            futures::stream::BoxStream<'static, Result<SubscribeNotificationsResponse, Status>>,
        >,
        Status,
    > {
        let council = self.auth.authorize(
            request.metadata(),
            &request.get_ref().local_authority_ods_code,
            Scope::Read,
            "SubscribeNotifications",
        )?;
        let requested = request.get_ref().after_sequence;
        let ods = council.ods_code.clone();
        let (latest, acknowledged) = self
            .db
            .run(move |conn| crate::outbox::cursors(conn, &ods))
            .await?;
        let cursor = match requested {
            None => acknowledged,
            Some(after) => i64::try_from(after).map_err(|_| sequence_not_issued())?,
        };
        if cursor > latest {
            return Err(sequence_not_issued().into());
        }
        tracing::info!(la = %council.ods_code, cursor, "subscriber connected");
        let rx = crate::subscription::start(
            self.db.clone(),
            &self.wakeups,
            self.shutdown.clone(),
            self.subscription,
            council.ods_code,
            cursor,
        );
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    #[tracing::instrument(skip_all, fields(rpc = "AcknowledgeNotifications"))]
    async fn acknowledge_notifications(
        &self,
        request: Request<AcknowledgeNotificationsRequest>,
    ) -> Result<Response<AcknowledgeNotificationsResponse>, Status> {
        let council = self.auth.authorize(
            request.metadata(),
            &request.get_ref().local_authority_ods_code,
            Scope::Read,
            "AcknowledgeNotifications",
        )?;
        let sequence =
            i64::try_from(request.get_ref().sequence).map_err(|_| sequence_not_issued())?;
        let ods = council.ods_code;
        let acknowledged = self
            .db
            .run(move |conn| crate::outbox::acknowledge(conn, &ods, sequence))
            .await?
            .ok_or_else(sequence_not_issued)?;
        Ok(Response::new(AcknowledgeNotificationsResponse {
            acknowledged_sequence: u64::try_from(acknowledged).unwrap_or_default(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListNotifications"))]
    async fn list_notifications(
        &self,
        request: Request<ListNotificationsRequest>,
    ) -> Result<Response<ListNotificationsResponse>, Status> {
        let council = self.auth.authorize(
            request.metadata(),
            &request.get_ref().local_authority_ods_code,
            Scope::Read,
            "ListNotifications",
        )?;
        let body = request.into_inner();
        let limit = page_size(body.page_size)?;
        let after = match body.page_token.as_str() {
            "" => i64::try_from(body.after_sequence).unwrap_or(i64::MAX),
            token => token
                .strip_prefix("n1:")
                .and_then(|n| n.parse::<i64>().ok())
                .ok_or_else(|| {
                    RegistryError::Invalid(vec![FieldViolation::new(
                        "page_token",
                        ErrorReason::PageTokenInvalid,
                        "is not a token this query issued",
                    )])
                })?,
        };
        let ods = council.ods_code;
        let (rows, acknowledged) = self
            .db
            .run(move |conn| {
                let rows = crate::outbox::list(conn, &ods, after, limit + 1)?;
                let acknowledged =
                    store::get_contacts(conn, &ods)?.map_or(0, |la| la.acknowledged_sequence);
                Ok((rows, acknowledged))
            })
            .await?;
        let more = usize::try_from(limit).is_ok_and(|l| rows.len() > l);
        let page = &rows[..rows.len().min(usize::try_from(limit).unwrap_or(usize::MAX))];
        let next_page_token = match (more, page.last()) {
            (true, Some(last)) => format!("n1:{}", last.sequence),
            _ => String::new(),
        };
        let notifications = page
            .iter()
            .filter_map(|row| Notification::decode(row.notification.as_slice()).ok())
            .collect();
        Ok(Response::new(ListNotificationsResponse {
            notifications,
            next_page_token,
            acknowledged_sequence: u64::try_from(acknowledged).unwrap_or_default(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetBatch"))]
    async fn get_batch(
        &self,
        request: Request<GetBatchRequest>,
    ) -> Result<Response<GetBatchResponse>, Status> {
        let council = self.auth.authorize(
            request.metadata(),
            &request.get_ref().local_authority_ods_code,
            Scope::Read,
            "GetBatch",
        )?;
        let batch_id = request.into_inner().batch_id;
        let ods = council.ods_code;
        let row = self
            .db
            .run(move |conn| store::get_batch(conn, &ods, &batch_id))
            .await?;
        let row = row.ok_or_else(|| RegistryError::NotFound {
            reason: ErrorReason::Unspecified,
            message: "no completed batch with this id".into(),
        })?;
        let result = BatchResult::decode(row.result.as_slice())
            .map_err(|e| RegistryError::Internal(e.to_string()))?;
        Ok(Response::new(GetBatchResponse {
            result: Some(result),
        }))
    }
}

impl CouncilApi {
    /// Commits the pending chunk in one transaction; returns the records refused there (NHS
    /// numbers the demographics feed marked inactive).
    async fn flush(
        &self,
        ods: &str,
        chunk: &mut Vec<store::BatchRecord>,
    ) -> Result<Vec<RecordRejection>, RegistryError> {
        if chunk.is_empty() {
            return Ok(Vec::new());
        }
        let mut records = std::mem::replace(chunk, Vec::with_capacity(self.upload_chunk));
        let ods = ods.to_owned();
        let now = self.clock.now_micros();
        self.db
            .run(move |conn| store::apply_chunk(conn, &ods, &mut records, now))
            .await
    }
}
