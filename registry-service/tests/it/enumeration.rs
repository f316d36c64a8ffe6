//! The enumeration guard at the registry, where every replica's disclosures meet: a caller at
//! its threshold whose lookups race through two registries on one PostgreSQL database (on
//! SQLite, which serves one node, through one registry) is refused every time, nothing of the
//! race is recorded, and the crossing is exactly one security event. And the guard's table of
//! who last looked up which child loses, in the background, what no window counts any more.

use std::time::{Duration, Instant};

use cpis_core::status::{reason_of, retry_delay};
use cpis_proto::cpis::common::v1::{AccessMode, ErrorReason};
use cpis_proto::cpis::registry::v1::{
    DiscloseRequest, ListSecurityEventsRequest, disclosure_service_client::DisclosureServiceClient,
};
use cpis_testkit::{TestServer, both_backends, db::Backend};
use registry_service::Clock;
use tonic::Code;

use crate::harness::{ed_clinician, nhs, stack};

both_backends!(racing_replicas_raise_one_event);
both_backends!(what_no_window_counts_is_pruned_in_the_background);

const THRESHOLD: u32 = 3;

async fn disclose(
    server: &TestServer,
    nhs_number: String,
) -> Result<cpis_proto::cpis::registry::v1::DiscloseResponse, tonic::Status> {
    DisclosureServiceClient::new(server.channel().await)
        .disclose(DiscloseRequest {
            nhs_number,
            accessor: Some(ed_clinician("555000000042")),
            access_mode: AccessMode::Unscheduled as i32,
            request_id: "sweep".into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn racing_replicas_raise_one_event(backend: Backend) {
    let Some(stack) = stack(backend)
        .clock(Clock::fixed(1_780_000_000_000_000))
        .registry(|config| config.enumeration_user_per_hour = THRESHOLD)
        .start()
        .await
    else {
        return;
    };
    // SQLite serves one node (one writer connection): its race is within one registry.
    let replica = match backend {
        Backend::Postgres => Some(
            stack
                .another_registry_ports(|config| config.enumeration_user_per_hour = THRESHOLD)
                .await,
        ),
        Backend::Sqlite => None,
    };
    let threshold = THRESHOLD as usize;
    for i in 0..threshold {
        disclose(&stack.internal, nhs(i))
            .await
            .expect("under the threshold");
    }
    // At the threshold, eight new children at once, half through each replica.
    let racers = (0..8).map(|i| {
        let server = match &replica {
            Some((_, internal)) if i % 2 == 1 => internal,
            _ => &stack.internal,
        };
        disclose(server, nhs(threshold + i))
    });
    for outcome in futures::future::join_all(racers).await {
        let status = outcome.expect_err("every lookup past the threshold is refused");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert_eq!(reason_of(&status), Some(ErrorReason::LookupsThrottled));
        assert!(retry_delay(&status).is_some_and(|d| d.as_secs() == 3600));
    }
    assert_eq!(
        stack.db.count("SELECT COUNT(*) AS n FROM access_events"),
        i64::try_from(threshold).unwrap()
    );
    assert_eq!(
        stack.db.count("SELECT COUNT(*) AS n FROM security_events"),
        1
    );
    let listed = stack
        .operator()
        .await
        .list_security_events(stack.as_operator(ListSecurityEventsRequest::default()))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.security_events.len(), 1);
    assert!(listed.next_page_token.is_empty());
}

/// The registry's upkeep deletes on its own the rows of `enumeration_last_seen` looked up more
/// than a day and an hour ago (the longest window, and the README's margin for clock skew), so
/// the table neither grows for ever nor keeps which staff looked up which child past any use;
/// what a window still counts stays, and so does the audit record of every access. Before,
/// nothing deleted them.
async fn what_no_window_counts_is_pruned_in_the_background(backend: Backend) {
    const START: i64 = 1_780_000_000_000_000;
    const KEPT_MICROS: i64 = 25 * 3_600 * 1_000_000;
    let clock = Clock::fixed(START);
    let Some(stack) = stack(backend)
        .clock(clock.clone())
        .registry(|config| config.enumeration_prune_interval = Duration::from_millis(100))
        .start()
        .await
    else {
        return;
    };
    let rows = |nhs: Option<String>| {
        let only = nhs.map_or_else(String::new, |n| format!(" WHERE nhs_number = '{n}'"));
        stack.db.count(&format!(
            "SELECT COUNT(*) AS n FROM enumeration_last_seen{only}"
        ))
    };
    for i in 0..3 {
        disclose(&stack.internal, nhs(i)).await.expect("disclosed");
    }
    // The clinician's row and their organisation's, for each child.
    assert_eq!(rows(None), 6);
    // A day, an hour and a second later, one more child.
    clock.set(START + KEPT_MICROS + 1_000_000);
    disclose(&stack.internal, nhs(3)).await.expect("disclosed");
    let deadline = Instant::now() + Duration::from_secs(10);
    while rows(None) != 2 {
        assert!(
            Instant::now() < deadline,
            "not pruned within 10 s: {} rows",
            rows(None)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rows(Some(nhs(3))), 2, "the recent child's rows are kept");
    assert_eq!(
        stack.db.count("SELECT COUNT(*) AS n FROM access_events"),
        4,
        "every access is still recorded"
    );
}
