//! The registry tests' fixtures on top of `cpis_testkit::Stack` (which boots the registry through
//! its own `serve` on a fresh database): records, an ED clinician's accessor, disclosures as the
//! lookup service makes them, and notification subscriptions.

use std::time::Duration;

use cpis_core::auth::DevSigner;
use cpis_proto::cpis::common::v1::{
    ChildRecord, LookedAfterChild, LookedAfterLegalBasis, PlanPeriod, UnbornChildProtectionPlan,
};
use cpis_proto::cpis::registry::v1::{
    BatchHeader, ListChildRecordsRequest, UploadBatchRequest, UploadBatchResponse,
    council_service_client::CouncilServiceClient, upload_batch_request::Item,
};
use cpis_testkit::{Stack, StackBuilder, TestServer, db::Backend};
use tonic::Status;

pub use cpis_testkit::stack::with_token;

/// Records per upload transaction in these tests: small, so a few thousand records span several
/// commits.
const UPLOAD_CHUNK: usize = 500;

/// A registry stack for these tests, to adjust further before `start`.
pub fn stack(backend: Backend) -> StackBuilder {
    Stack::builder(backend).registry(|config| config.upload_chunk = UPLOAD_CHUNK)
}

/// Starts a registry on a fresh database of `backend`; `None` when that backend is unavailable
/// outside CI.
pub async fn start(backend: Backend) -> Option<Stack> {
    stack(backend).start().await
}

/// A council signer the registry does not trust unless told to.
pub fn signer() -> DevSigner {
    cpis_testkit::stack::council_signer()
}

pub use cpis_testkit::fixtures::date;
pub use cpis_testkit::nhs::{nhs, nhs_numbers};

/// A valid record with a CPP for a child born 2020-05-01, plan from 2025-01-10.
pub fn cpp_record(nhs_number: &str) -> ChildRecord {
    cpis_testkit::fixtures::cpp(nhs_number, &format!("CASE-{nhs_number}"), date(2020, 5, 1))
}

/// A valid record carrying all three blocks.
pub fn full_record(nhs_number: &str) -> ChildRecord {
    let mut record = cpp_record(nhs_number);
    record.looked_after_child = Some(LookedAfterChild {
        period: Some(PlanPeriod {
            start_date: Some(date(2025, 3, 1)),
            end_date: Some(date(2025, 9, 1)),
            delete_date: None,
        }),
        legal_basis: LookedAfterLegalBasis::Section20VoluntaryAccommodation as i32,
    });
    record.unborn_child_protection_plan = Some(UnbornChildProtectionPlan {
        period: Some(PlanPeriod {
            start_date: Some(date(2025, 2, 1)),
            end_date: None,
            delete_date: None,
        }),
        expected_delivery_date: Some(date(2025, 8, 1)),
    });
    record
}

/// An ED clinician's accessor, as the lookup service would send it.
pub fn ed_clinician(user_id: &str) -> cpis_proto::cpis::common::v1::Accessor {
    use cpis_proto::cpis::common::v1::{
        Accessor, CareSetting, Organisation, PersonAccessor, accessor::Kind,
    };
    Accessor {
        kind: Some(Kind::Person(PersonAccessor {
            user_id: user_id.into(),
            name: "Dr Test".into(),
            role_profile_id: "role-1".into(),
            job_role_code: "R8000".into(),
            job_role_name: "Clinical Practitioner".into(),
            activity_codes: vec!["B0107".into()],
        })),
        organisation: Some(Organisation {
            ods_code: "RXX01".into(),
            name: "Test Hospital".into(),
        }),
        care_setting: CareSetting::EmergencyDepartment as i32,
    }
}

/// Discloses `nhs_number` as the lookup service would (one access, recorded).
pub async fn disclose(
    reg: &Stack,
    nhs_number: &str,
    mode: cpis_proto::cpis::common::v1::AccessMode,
) -> cpis_proto::cpis::registry::v1::DiscloseResponse {
    disclose_at(&reg.internal, nhs_number, mode).await
}

/// A notification subscription for council `ods` after `after` (None: the stored cursor).
pub async fn subscribe(
    reg: &Stack,
    ods: &str,
    after: Option<u64>,
) -> Result<
    tonic::Streaming<cpis_proto::cpis::registry::v1::SubscribeNotificationsResponse>,
    tonic::Status,
> {
    subscribe_at(&reg.registry, &reg.council_token(ods, "read"), after).await
}

/// Discloses through the disclosure service of `server` (a registry's internal port, reached
/// with the lookup service's certificate).
pub async fn disclose_at(
    server: &TestServer,
    nhs_number: &str,
    mode: cpis_proto::cpis::common::v1::AccessMode,
) -> cpis_proto::cpis::registry::v1::DiscloseResponse {
    use cpis_proto::cpis::registry::v1::{
        DiscloseRequest, disclosure_service_client::DisclosureServiceClient,
    };
    DisclosureServiceClient::new(server.channel().await)
        .disclose(DiscloseRequest {
            nhs_number: nhs_number.into(),
            accessor: Some(ed_clinician("555000000001")),
            access_mode: mode as i32,
            request_id: "req-1".into(),
        })
        .await
        .expect("disclose")
        .into_inner()
}

/// Subscribes on `server` with `token`.
pub async fn subscribe_at(
    server: &TestServer,
    token: &str,
    after: Option<u64>,
) -> Result<
    tonic::Streaming<cpis_proto::cpis::registry::v1::SubscribeNotificationsResponse>,
    tonic::Status,
> {
    use cpis_proto::cpis::registry::v1::SubscribeNotificationsRequest;
    CouncilServiceClient::new(server.channel().await)
        .subscribe_notifications(with_token(
            SubscribeNotificationsRequest {
                local_authority_ods_code: String::new(),
                after_sequence: after,
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// The next notification's sequence on `stream`, skipping heartbeats; panics after `limit`.
pub async fn next_sequence(
    stream: &mut tonic::Streaming<cpis_proto::cpis::registry::v1::SubscribeNotificationsResponse>,
    limit: Duration,
) -> cpis_proto::cpis::registry::v1::Notification {
    use cpis_proto::cpis::registry::v1::subscribe_notifications_response::Event;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let message = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("a notification in time")
            .expect("stream ok")
            .expect("stream open");
        if let Some(Event::Notification(n)) = message.event {
            return n;
        }
    }
}

pub fn batch(batch_id: &str, records: Vec<ChildRecord>) -> Vec<UploadBatchRequest> {
    let mut messages = vec![UploadBatchRequest {
        item: Some(Item::Header(BatchHeader {
            batch_id: batch_id.into(),
            sequence_number: 42,
            expected_record_count: u64::try_from(records.len()).unwrap_or(0),
            ..Default::default()
        })),
    }];
    messages.extend(records.into_iter().map(|r| UploadBatchRequest {
        item: Some(Item::Record(r)),
    }));
    messages
}

pub async fn upload(
    reg: &Stack,
    ods: &str,
    messages: Vec<UploadBatchRequest>,
) -> Result<UploadBatchResponse, Status> {
    reg.council()
        .await
        .upload_batch(reg.as_council(ods, tokio_stream::iter(messages)))
        .await
        .map(tonic::Response::into_inner)
}

/// How many records council `ods` holds, listed a page at a time.
pub async fn count_records(reg: &Stack, ods: &str) -> usize {
    let mut client = reg.council().await;
    let (mut token, mut count) = (String::new(), 0);
    loop {
        let page = client
            .list_child_records(reg.as_council(
                ods,
                ListChildRecordsRequest {
                    page_size: 1000,
                    page_token: token,
                    ..Default::default()
                },
            ))
            .await
            .expect("list")
            .into_inner();
        count += page.records.len();
        if page.next_page_token.is_empty() {
            return count;
        }
        token = page.next_page_token;
    }
}

/// What a disclosure showed: each council's ODS code with the types of its plans shown.
pub fn shown_plans(
    answer: &cpis_proto::cpis::registry::v1::DiscloseResponse,
) -> Vec<(String, Vec<i32>)> {
    answer
        .alerts
        .iter()
        .map(|a| {
            (
                a.local_authority.clone().unwrap_or_default().ods_code,
                a.plans.iter().map(|p| p.plan_type).collect(),
            )
        })
        .collect()
}

/// Asserts a batch rejected exactly `expected` (position, field, reason) and accepted the rest
/// of its `total` records.
#[track_caller]
pub fn assert_rejections(
    result: &cpis_proto::cpis::registry::v1::BatchResult,
    total: usize,
    expected: &[(u64, String, i32)],
) {
    let got: Vec<(u64, String, i32)> = result
        .rejections
        .iter()
        .map(|r| (r.position, r.field.clone(), r.reason))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(
        result.accepted_count,
        u64::try_from(total - expected.len()).unwrap_or(0)
    );
}

/// A batch's (received, accepted, rejected) counts.
pub fn counts(result: &cpis_proto::cpis::registry::v1::BatchResult) -> (u64, u64, u64) {
    (
        result.received_count,
        result.accepted_count,
        result.rejected_count,
    )
}

/// The stored outcome of council `ods`'s batch `batch_id` (GetBatch).
pub async fn stored_batch(
    reg: &Stack,
    ods: &str,
    batch_id: &str,
) -> cpis_proto::cpis::registry::v1::BatchResult {
    reg.council()
        .await
        .get_batch(reg.as_council(
            ods,
            cpis_proto::cpis::registry::v1::GetBatchRequest {
                batch_id: batch_id.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("get batch")
        .into_inner()
        .result
        .expect("result")
}
