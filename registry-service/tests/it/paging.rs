//! Page tokens are opaque: no child data inside (clients log them), refused when altered, made
//! up or replayed against another query, and still good after a restart and on another replica
//! (the key lives in the database, not in one process). Every refusal carries a reason.

use cpis_core::status::reason_of;
use cpis_proto::cpis::common::v1::{AccessMode, ErrorReason};
use cpis_proto::cpis::registry::v1::{
    GetBatchRequest, ListAccessEventsRequest, ListChildRecordsRequest, ListChildRecordsResponse,
    ListNotificationsRequest, RecordStateFilter, council_service_client::CouncilServiceClient,
};
use cpis_testkit::{Stack, both_backends, db::Backend};
use tonic::{Code, Status, transport::Channel};

use crate::harness::{cpp_record, disclose, nhs, start};

both_backends!(
    page_tokens_carry_no_child_data_and_survive_restarts,
    page_tokens_are_refused_when_forged_or_misused,
    every_not_found_names_its_reason
);

async fn page(
    stack: &Stack,
    client: &mut CouncilServiceClient<Channel>,
    state: RecordStateFilter,
    page_token: String,
) -> Result<ListChildRecordsResponse, Status> {
    client
        .list_child_records(stack.as_council(
            "AB1",
            ListChildRecordsRequest {
                page_size: 2,
                page_token,
                state: state as i32,
                ..Default::default()
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn with_records(backend: Backend) -> Option<Stack> {
    let stack = start(backend).await?;
    stack.register_council("AB1").await;
    let _client = stack.council().await;
    for i in 0..5 {
        stack
            .try_put("AB1", cpp_record(&nhs(i)))
            .await
            .expect("put");
    }
    Some(stack)
}

async fn page_tokens_carry_no_child_data_and_survive_restarts(backend: Backend) {
    let Some(mut stack) = with_records(backend).await else {
        return;
    };
    let mut client = stack.council().await;
    let first = page(
        &stack,
        &mut client,
        RecordStateFilter::Unspecified,
        String::new(),
    )
    .await
    .expect("first page");
    let token = first.next_page_token.clone();
    assert!(!token.is_empty());
    // No NHS number, in any form: not in the text, not in what the text decodes to, and no run
    // of digits an NHS number could hide in.
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&token)
        .unwrap_or_default();
    for i in 0..5 {
        let number = nhs(i);
        assert!(!token.contains(&number), "token {token} holds {number}");
        assert!(
            !decoded.windows(10).any(|w| w == number.as_bytes()),
            "token {token} decodes to {number}"
        );
    }
    assert!(
        !token
            .as_bytes()
            .windows(10)
            .any(|w| w.iter().all(u8::is_ascii_digit)),
        "{token}"
    );

    // Another replica on the same database opens it, and so does this one after a restart.
    let replica = stack.another_registry(|_| {}).await;
    let mut replica_client = CouncilServiceClient::new(replica.channel().await);
    let second = page(
        &stack,
        &mut replica_client,
        RecordStateFilter::Unspecified,
        token.clone(),
    )
    .await
    .expect("another replica opens the token");
    let numbers: Vec<String> = second
        .records
        .iter()
        .map(|r| r.nhs_number.clone())
        .collect();
    assert_eq!(numbers, [nhs(2), nhs(3)]);
    drop(replica);
    stack.restart_registry(|_| {}).await.expect("restart");
    let mut client = stack.council().await;
    let again = page(&stack, &mut client, RecordStateFilter::Unspecified, token)
        .await
        .expect("the restarted registry opens the token");
    assert_eq!(again.records, second.records);

    // Paging through still yields every record once, in NHS-number order.
    let (mut all, mut token) = (Vec::new(), String::new());
    loop {
        let page = page(&stack, &mut client, RecordStateFilter::Unspecified, token)
            .await
            .expect("page");
        all.extend(page.records.into_iter().map(|r| r.nhs_number));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(all, (0..5).map(nhs).collect::<Vec<_>>());
}

fn assert_refused(result: Result<impl std::fmt::Debug, Status>, case: &str) {
    let refused = result.expect_err(case);
    assert_eq!(
        (refused.code(), reason_of(&refused)),
        (Code::InvalidArgument, Some(ErrorReason::PageTokenInvalid)),
        "{case}: {refused:?}"
    );
}

async fn page_tokens_are_refused_when_forged_or_misused(backend: Backend) {
    let Some(stack) = with_records(backend).await else {
        return;
    };
    let mut client = stack.council().await;
    let token = page(
        &stack,
        &mut client,
        RecordStateFilter::Unspecified,
        String::new(),
    )
    .await
    .expect("first page")
    .next_page_token;
    // One character changed.
    let mut altered = token.clone().into_bytes();
    let middle = altered.len() / 2;
    altered[middle] = if altered[middle] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap_or_default();
    // The old, readable format with a child's NHS number in it.
    let legacy = format!("r1:{}:0", nhs(1));
    for (case, forged) in [
        ("altered", altered),
        ("legacy", legacy),
        ("not base64", "***".to_owned()),
        ("too long", "A".repeat(4096)),
        ("too short", "AAAA".to_owned()),
    ] {
        assert_refused(
            page(&stack, &mut client, RecordStateFilter::Unspecified, forged).await,
            case,
        );
    }
    // Replayed against another filter, or another listing.
    assert_refused(
        page(
            &stack,
            &mut client,
            RecordStateFilter::Active,
            token.clone(),
        )
        .await,
        "another filter",
    );
    let as_notifications = client
        .list_notifications(stack.as_council(
            "AB1",
            ListNotificationsRequest {
                page_token: token.clone(),
                ..Default::default()
            },
        ))
        .await;
    assert_refused(as_notifications, "notifications");
    disclose(&stack, &nhs(0), AccessMode::Unscheduled).await;
    let as_access_events = client
        .list_access_events(stack.as_council(
            "AB1",
            ListAccessEventsRequest {
                nhs_number: nhs(0),
                page_token: token,
                ..Default::default()
            },
        ))
        .await;
    assert_refused(as_access_events, "access events");
}

async fn every_not_found_names_its_reason(backend: Backend) {
    let Some(stack) = with_records(backend).await else {
        return;
    };
    let missing = stack
        .council()
        .await
        .get_batch(stack.as_council(
            "AB1",
            GetBatchRequest {
                batch_id: "never-uploaded".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("no such batch");
    assert_eq!(
        (missing.code(), reason_of(&missing)),
        (Code::NotFound, Some(ErrorReason::BatchNotFound))
    );
}
