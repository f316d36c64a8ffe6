//! The registry's admin port as a scraper and a platform see it: `/metrics` parsed by the
//! Prometheus client's own parser shows the RED series, the pool, disclosures, uploads, the
//! notification backlog and lag, subscribers, rate-limited calls and security events moving with
//! the calls made, and no label carries a child's data; `/livez` answers while the process
//! serves, `/readyz` only while both gRPC ports are SERVING.
//!
//! Every server of the test binary shares one meter provider, so the RED and process-wide
//! counters are asserted as at least the calls made here (other tests add to them), and the
//! per-council series exactly, on councils no other test uses.

use std::time::Duration;

use cpis_proto::cpis::common::v1::AccessMode;
use cpis_proto::cpis::registry::v1::{AcknowledgeNotificationsRequest, GetChildRecordRequest};
use cpis_testkit::metrics::{Scrape, admin_get, scrape, scrape_until};
use cpis_testkit::{TestServer, both_backends, db::Backend};
use tonic::Code;

use crate::harness::{batch, cpp_record, disclose, nhs, stack, subscribe, upload};

both_backends!(scrape_shows_the_registry_at_work);

const WAIT: Duration = Duration::from_secs(15);
const COUNCIL: &str = "cpis.registry.v1.CouncilService";

fn calls(page: &Scrape, service: &str, method: &str, code: &str) -> f64 {
    page.value(
        "cpis_rpc_server_calls_total",
        &[
            ("rpc_service", service),
            ("rpc_method", method),
            ("grpc_code", code),
        ],
    )
}

fn durations(page: &Scrape, service: &str, method: &str, code: &str) -> f64 {
    page.value(
        "cpis_rpc_server_duration_seconds_count",
        &[
            ("rpc_service", service),
            ("rpc_method", method),
            ("grpc_code", code),
        ],
    )
}

async fn scrape_shows_the_registry_at_work(backend: Backend) {
    // A council no other test uses, per engine (both run at once in this binary).
    let ods = match backend {
        Backend::Sqlite => "MQ1",
        Backend::Postgres => "MQ2",
    };
    let Some(reg) = stack(backend)
        .registry(|c| c.notification_backlog_refresh = Duration::from_millis(100))
        .start()
        .await
    else {
        return;
    };
    let admin = reg.registry.admin.expect("the stack binds an admin port");
    assert_eq!(admin_get(admin, "/livez").await.status, 200);
    assert_eq!(admin_get(admin, "/readyz").await.status, 200, "serving");
    assert_eq!(admin_get(admin, "/nothing").await.status, 404);
    let Some(before) = scrape(admin).await else {
        return;
    };

    // RED: two writes, one read that finds nothing (NOT_FOUND).
    reg.register_council(ods).await;
    reg.put(ods, cpp_record(&nhs(0))).await;
    reg.put(ods, cpp_record(&nhs(1))).await;
    let missing = reg
        .council()
        .await
        .get_child_record(reg.as_council(
            ods,
            GetChildRecordRequest {
                nhs_number: nhs(2),
                ..Default::default()
            },
        ))
        .await
        .expect_err("no such record");
    assert_eq!(missing.code(), Code::NotFound);

    // An upload: two accepted, one rejected.
    let mut bad = cpp_record(&nhs(5));
    bad.nhs_number = "not a number".into();
    let result = upload(
        &reg,
        ods,
        batch(
            "metrics-1",
            vec![cpp_record(&nhs(3)), cpp_record(&nhs(4)), bad],
        ),
    )
    .await
    .expect("upload")
    .result
    .expect("result");
    assert_eq!((result.accepted_count, result.rejected_count), (2, 1));

    // A disclosure: committed, and it notifies the council (backlog 1, lag above 0).
    disclose(&reg, &nhs(0), AccessMode::Unscheduled).await;

    let council = [("council", ods)];
    let Some(after) = scrape_until(admin, WAIT, |page| {
        page.value("cpis_notification_backlog", &council) >= 1.0
            && page.value("cpis_notification_lag_seconds", &council) > 0.0
    })
    .await
    else {
        return;
    };
    let moved = |method: &str, code: &str| {
        calls(&after, COUNCIL, method, code) - calls(&before, COUNCIL, method, code)
    };
    assert!(moved("PutChildRecord", "OK") >= 2.0, "{}", after.text);
    assert!(
        moved("GetChildRecord", "NOT_FOUND") >= 1.0,
        "{}",
        after.text
    );
    assert!(moved("SetContactDetails", "OK") >= 1.0, "{}", after.text);
    assert!(moved("UploadBatch", "OK") >= 1.0, "{}", after.text);
    assert!(
        durations(&after, COUNCIL, "PutChildRecord", "OK")
            - durations(&before, COUNCIL, "PutChildRecord", "OK")
            >= 2.0
    );
    let disclosed =
        |page: &Scrape| calls(page, "cpis.registry.v1.DisclosureService", "Disclose", "OK");
    assert!(disclosed(&after) - disclosed(&before) >= 1.0);
    // Health is counted too (the stack waited for SERVING through it).
    assert!(calls(&after, "grpc.health.v1.Health", "Check", "OK") >= 1.0);

    let committed = [("outcome", "committed")];
    assert!(
        after.value(
            "cpis_disclosure_transaction_duration_seconds_count",
            &committed
        ) - before.value(
            "cpis_disclosure_transaction_duration_seconds_count",
            &committed
        ) >= 1.0
    );
    let accepted = [("council", ods), ("outcome", "accepted")];
    let rejected = [("council", ods), ("outcome", "rejected")];
    assert_eq!(after.value("cpis_upload_records_total", &accepted), 2.0);
    assert_eq!(after.value("cpis_upload_records_total", &rejected), 1.0);
    assert_eq!(after.value("cpis_notification_backlog", &council), 1.0);

    // The pool: a bound, both states reported, and checkouts that waited (the first of a
    // fresh pool always does: it opens the connection).
    assert!(after.value("cpis_db_pool_max_connections", &[]) >= 1.0);
    assert!(after.has("cpis_db_pool_connections"));
    assert_eq!(
        after
            .matching("cpis_db_pool_connections", &[("state", "in_use")])
            .count(),
        1
    );
    assert_eq!(
        after
            .matching("cpis_db_pool_connections", &[("state", "idle")])
            .count(),
        1
    );
    assert!(after.value("cpis_db_pool_waits_total", &[]) >= 1.0);
    assert!(
        after.value("cpis_db_pool_wait_seconds_count", &[])
            >= after.value("cpis_db_pool_waits_total", &[])
    );

    // A subscriber: 1 while connected, 0 once gone.
    let stream = subscribe(&reg, ods, None).await.expect("subscribe");
    scrape_until(admin, WAIT, |page| {
        page.value("cpis_notification_subscribers", &council) == 1.0
    })
    .await;
    drop(stream);
    scrape_until(admin, WAIT, |page| {
        page.value("cpis_notification_subscribers", &council) == 0.0
    })
    .await;

    // Acknowledged, the backlog and the lag fall to 0.
    let last = reg
        .notifications(ods)
        .await
        .iter()
        .map(|n| n.sequence)
        .max()
        .expect("a notification");
    reg.council()
        .await
        .acknowledge_notifications(reg.as_council(
            ods,
            AcknowledgeNotificationsRequest {
                sequence: last,
                ..Default::default()
            },
        ))
        .await
        .expect("acknowledge");
    let Some(settled) = scrape_until(admin, WAIT, |page| {
        page.value("cpis_notification_backlog", &council) == 0.0
    })
    .await
    else {
        return;
    };
    assert_eq!(
        settled.value("cpis_notification_lag_seconds", &council),
        0.0
    );

    let token = reg.council_token(ods, "read write");
    let numbers: Vec<String> = (0..6).map(nhs).collect();
    let mut forbidden: Vec<&str> = vec!["Alex", "Example", "CASE-", "Dr Test", &token];
    forbidden.extend(numbers.iter().map(String::as_str));
    settled.assert_no_child_data(&forbidden);
}

/// Council writes over their rate and lookups past the enumeration threshold show in
/// `cpis_calls_rate_limited_total{limit="council_write"}` and
/// `cpis_security_events_total{kind="lookups_throttled"}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_security_events_are_counted() {
    let reg = stack(Backend::Sqlite)
        .registry(|c| {
            c.council_write_rate = "1/h,burst=2".parse().expect("rate");
            c.enumeration_user_per_hour = 2;
        })
        .start()
        .await
        .expect("sqlite");
    let admin = reg.registry.admin.expect("admin port");
    let Some(before) = scrape(admin).await else {
        return;
    };
    reg.register_council("MQ3").await;
    reg.put("MQ3", cpp_record(&nhs(0))).await;
    let refused = reg
        .try_put("MQ3", cpp_record(&nhs(1)))
        .await
        .expect_err("over the write rate");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    // Two distinct children within the threshold, the third crosses it.
    for i in 0..2 {
        disclose(&reg, &nhs(10 + i), AccessMode::Unscheduled).await;
    }
    let throttled = try_disclose(&reg.internal, &nhs(12))
        .await
        .expect_err("past the threshold");
    assert_eq!(throttled.code(), Code::ResourceExhausted);

    let Some(after) = scrape(admin).await else {
        return;
    };
    let write = [("limit", "council_write")];
    assert!(
        after.value("cpis_calls_rate_limited_total", &write)
            - before.value("cpis_calls_rate_limited_total", &write)
            >= 1.0,
        "{}",
        after.text
    );
    let kind = [("kind", "lookups_throttled")];
    assert!(
        after.value("cpis_security_events_total", &kind)
            - before.value("cpis_security_events_total", &kind)
            >= 1.0,
        "{}",
        after.text
    );
    let refused_writes = calls(&after, COUNCIL, "PutChildRecord", "RESOURCE_EXHAUSTED")
        - calls(&before, COUNCIL, "PutChildRecord", "RESOURCE_EXHAUSTED");
    assert!(refused_writes >= 1.0);
}

/// `/readyz` is 503 while the registry waits for its database and while it drains, 200 while
/// it serves; `/livez` is 200 throughout. Checkouts from the missing database count as pool
/// timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_health() {
    // A database that is not there: the registry waits NOT_SERVING.
    let unreachable =
        registry_service::DatabaseUrl::parse("postgres://postgres@127.0.0.1:9/none").expect("url");
    let mut config = registry_service::Config::with(
        unreachable,
        crate::harness::signer().verifier().expect("verifier"),
    );
    // The backlog refresh checks a connection out often, and gives up soon: pool timeouts.
    config.db_acquire_timeout = Duration::from_millis(50);
    config.notification_backlog_refresh = Duration::from_millis(100);
    let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let admin = admin_listener.local_addr().expect("addr");
    let waiting = TestServer::spawn(move |public, shutdown| async move {
        let listeners = registry_service::Listeners {
            public,
            internal: tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
            admin: Some(admin_listener),
        };
        registry_service::serve(config, listeners, shutdown).await
    })
    .await;
    let live = cpis_testkit::metrics::wait_status(admin, "/livez", 200).await;
    assert_eq!(live, 200);
    assert_eq!(
        admin_get(admin, "/readyz").await.status,
        503,
        "no database yet"
    );
    // Checkouts against a database that is not there wait, then time out (UNAVAILABLE).
    let Some(first) = scrape(admin).await else {
        return;
    };
    let timeouts = first.value("cpis_db_pool_timeouts_total", &[]);
    scrape_until(admin, WAIT, |page| {
        page.value("cpis_db_pool_timeouts_total", &[]) >= timeouts + 1.0
    })
    .await;
    assert_eq!(
        admin_get(admin, "/readyz").await.status,
        503,
        "still no database"
    );
    waiting.stop().await.expect("clean stop");

    // Serving, then draining (health NOT_SERVING for the shutdown delay).
    let mut reg = stack(Backend::Sqlite)
        .registry(|c| c.server.shutdown_delay = Duration::from_secs(3))
        .start()
        .await
        .expect("sqlite");
    let admin = reg.registry.admin.expect("admin port");
    assert_eq!(admin_get(admin, "/readyz").await.status, 200);
    reg.registry.begin_shutdown();
    assert_eq!(
        cpis_testkit::metrics::wait_status(admin, "/readyz", 503).await,
        503,
        "draining"
    );
    assert_eq!(
        admin_get(admin, "/livez").await.status,
        200,
        "still up while draining"
    );
}

/// A disclosure as the lookup service asks for it, refusal and all.
async fn try_disclose(server: &TestServer, nhs_number: &str) -> Result<(), tonic::Status> {
    use cpis_proto::cpis::registry::v1::{
        DiscloseRequest, disclosure_service_client::DisclosureServiceClient,
    };
    DisclosureServiceClient::new(server.channel().await)
        .disclose(DiscloseRequest {
            nhs_number: nhs_number.into(),
            accessor: Some(crate::harness::ed_clinician("555000000001")),
            access_mode: AccessMode::Unscheduled as i32,
            request_id: "req-1".into(),
        })
        .await
        .map(|_| ())
}
