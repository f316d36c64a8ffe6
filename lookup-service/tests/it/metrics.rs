//! The lookup service's admin port: `/metrics` parsed by the Prometheus client's own parser
//! shows the RED series of `LookupChild` moving by the calls made (answered and refused), the
//! lookups by outcome, shed and rate-limited calls; no label carries a child's or a caller's
//! data; `/livez` answers while the process serves and `/readyz` only while it is SERVING (not
//! while its registry refuses it).
//!
//! Every server of the test binary shares one meter provider: process-wide series are asserted
//! as at least the calls made here.

use std::time::Duration;

use cpis_proto::cpis::common::v1::AccessMode;
use cpis_testkit::metrics::{Scrape, admin_get, scrape};
use cpis_testkit::{Stack, db::Backend, pki::TestPki};

use crate::harness::{
    NHS_A, NHS_B, cpp, ed_clinician, noon, person, person_named, unscheduled_lookup,
};

const LOOKUP: &str = "cpis.lookup.v1.LookupService";

fn calls(page: &Scrape, code: &str) -> f64 {
    page.value(
        "cpis_rpc_server_calls_total",
        &[
            ("rpc_service", LOOKUP),
            ("rpc_method", "LookupChild"),
            ("grpc_code", code),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_shows_lookups_and_readiness() {
    let stack = crate::harness::start(Backend::Sqlite)
        .await
        .expect("sqlite");
    stack.register_council("AB1").await;
    stack.put("AB1", cpp(NHS_A)).await;
    let admin = stack.lookup_server().admin.expect("admin port");
    assert_eq!(admin_get(admin, "/livez").await.status, 200);
    assert_eq!(admin_get(admin, "/readyz").await.status, 200);
    let Some(before) = scrape(admin).await else {
        return;
    };

    let clinician = ed_clinician();
    for _ in 0..3 {
        let answer = stack
            .lookup(&clinician, NHS_A, AccessMode::Unscheduled)
            .await
            .expect("a lookup");
        assert_eq!(answer.alerts.len(), 1);
    }
    stack
        .lookup(&clinician, NHS_B, AccessMode::Unscheduled)
        .await
        .expect("a lookup finding nothing");
    // A role without the activity code: refused by policy.
    let refused = stack
        .lookup(
            &person(&["X9999"], "RXX01", "EMERGENCY_DEPARTMENT"),
            NHS_A,
            AccessMode::Unscheduled,
        )
        .await
        .expect_err("no activity code");
    let refused_code = cpis_core::metrics::code_name(refused.code());

    let Some(after) = scrape(admin).await else {
        return;
    };
    assert!(
        calls(&after, "OK") - calls(&before, "OK") >= 4.0,
        "{}",
        after.text
    );
    assert!(
        calls(&after, refused_code) - calls(&before, refused_code) >= 1.0,
        "{}",
        after.text
    );
    let timed = |page: &Scrape| {
        page.value(
            "cpis_rpc_server_duration_seconds_count",
            &[
                ("rpc_service", LOOKUP),
                ("rpc_method", "LookupChild"),
                ("grpc_code", "OK"),
            ],
        )
    };
    assert!(timed(&after) - timed(&before) >= 4.0);
    let lookups =
        |page: &Scrape, outcome: &str| page.value("cpis_lookups_total", &[("outcome", outcome)]);
    assert!(lookups(&after, "alert") - lookups(&before, "alert") >= 3.0);
    assert!(lookups(&after, "no_alert") - lookups(&before, "no_alert") >= 1.0);
    assert!(lookups(&after, "refused") - lookups(&before, "refused") >= 1.0);
    assert!(
        after
            .matching("cpis_lookups_total", &[("outcome", "alert")])
            .all(|s| s.labels.get("setting").is_some_and(|v| !v.is_empty())),
        "every lookup names its care setting"
    );
    let token = stack.nhs_token(&clinician);
    after.assert_no_child_data(&[
        NHS_A,
        NHS_B,
        "CASE-1",
        "Alex",
        "Example",
        "Dr Test",
        "555000000001",
        &token,
    ]);

    // A lookup service whose registry refuses it never turns SERVING: alive, not ready.
    let other = TestPki::new("other");
    let other_ca = other.ca_path().to_owned();
    let distrusted = stack
        .another_lookup(move |config| config.registry_ca = Some(other_ca))
        .await;
    let admin = distrusted.admin.expect("admin port");
    assert_eq!(
        cpis_testkit::metrics::wait_status(admin, "/livez", 200).await,
        200
    );
    // Give it time to try the registry, then it must still say so.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(admin_get(admin, "/readyz").await.status, 503);
    distrusted.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shed_and_rate_limited_calls_are_counted() {
    let stack = Stack::builder(Backend::Sqlite)
        .clock(registry_service::Clock::fixed(noon(2026, 6, 15)))
        .lookup(|c| {
            c.server.max_in_flight = 1;
            c.lookup_rate_per_user = "1/h,burst=1".parse().expect("rate");
        })
        .start()
        .await
        .expect("sqlite");
    stack.register_council("AB1").await;
    stack.put("AB1", cpp(NHS_A)).await;
    let admin = stack.lookup_server().admin.expect("admin port");
    let Some(before) = scrape(admin).await else {
        return;
    };

    // One user: the first lookup is allowed, the second over the rate.
    let clinician = person_named(
        "555000000009",
        "Dr Rate",
        &["B0107"],
        "RXX09",
        "EMERGENCY_DEPARTMENT",
    );
    stack
        .lookup(&clinician, NHS_A, AccessMode::Unscheduled)
        .await
        .expect("within the rate");
    stack
        .lookup(&clinician, NHS_A, AccessMode::Unscheduled)
        .await
        .expect_err("over the rate");

    // Many at once against one slot: some are shed (bounded: 24 calls).
    let channel = stack.lookup_server().channel().await;
    let answers = futures::future::join_all((0..24).map(|i| {
        let mut client =
            cpis_proto::cpis::lookup::v1::lookup_service_client::LookupServiceClient::new(
                channel.clone(),
            );
        let token = stack.nhs_token(&person_named(
            // Each its own user, so the per-user rate refuses none of them.
            &format!("5550000011{i:02}"),
            "Dr Flood",
            &["B0107"],
            "RXX10",
            "EMERGENCY_DEPARTMENT",
        ));
        async move { client.lookup_child(unscheduled_lookup(NHS_A, &token)).await }
    }))
    .await;
    let shed = answers
        .iter()
        .filter(|a| {
            a.as_ref().is_err_and(|s| {
                cpis_core::status::reason_of(s)
                    == Some(cpis_proto::cpis::common::v1::ErrorReason::Overloaded)
            })
        })
        .count();
    assert!(shed > 0, "24 at once against one slot: some must be shed");

    let Some(after) = scrape(admin).await else {
        return;
    };
    let per_user = [("limit", "lookup_per_user")];
    assert!(
        after.value("cpis_calls_rate_limited_total", &per_user)
            - before.value("cpis_calls_rate_limited_total", &per_user)
            >= 1.0,
        "{}",
        after.text
    );
    let service = [("rpc_service", LOOKUP)];
    let counted = after.value("cpis_calls_shed_total", &service)
        - before.value("cpis_calls_shed_total", &service);
    assert!(
        counted >= shed as f64,
        "{shed} shed, {counted} counted\n{}",
        after.text
    );
    assert!(
        calls(&after, "RESOURCE_EXHAUSTED") - calls(&before, "RESOURCE_EXHAUSTED")
            >= (shed + 1) as f64
    );
}
