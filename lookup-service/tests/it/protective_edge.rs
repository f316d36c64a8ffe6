//! The protective edge of the lookup service: lookups per user and per organisation are rate
//! limited (RESOURCE_EXHAUSTED RATE_LIMITED with a retry delay, nothing disclosed or recorded),
//! and calls beyond the server's bound on work in progress are refused at once (RESOURCE_EXHAUSTED
//! OVERLOADED with a retry delay) while health still answers, the admitted calls succeed and
//! service is normal as soon as the load stops. Bounded in count and time; the throughput and
//! latency figures under overload are the benchmark's (`cpis-bench overload`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cpis_core::status::{reason_of, retry_delay};
use cpis_proto::cpis::common::v1::{AccessMode, ErrorReason};
use cpis_testkit::{Stack, db::Backend, server::health};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::harness::{NHS_A, cpp, noon, person_named, unscheduled_lookup};

async fn stack_with(adjust: impl FnOnce(&mut lookup_service::Config) + 'static) -> Stack {
    let stack = Stack::builder(Backend::Sqlite)
        .clock(registry_service::Clock::fixed(noon(2026, 6, 15)))
        .lookup(adjust)
        .start()
        .await
        .expect("sqlite");
    stack.register_council("AB1").await;
    stack.put("AB1", cpp(NHS_A)).await;
    stack
}

fn clinician(uid: &str, org: &str) -> serde_json::Value {
    person_named(uid, "Dr Test", &["B0107"], org, "EMERGENCY_DEPARTMENT")
}

/// Asserts `answer` is RESOURCE_EXHAUSTED with `reason` and a retry delay.
fn assert_refused<T: std::fmt::Debug>(answer: Result<T, tonic::Status>, reason: ErrorReason) {
    let status = answer.expect_err("refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason_of(&status), Some(reason), "{status:?}");
    assert!(
        retry_delay(&status).is_some_and(|d| d > Duration::ZERO),
        "a retry delay: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_are_rate_limited_per_user_and_per_organisation() {
    let stack = stack_with(|c| {
        c.lookup_rate_per_user = "1/h,burst=3".parse().expect("rate");
        c.lookup_rate_per_org = "1/h,burst=5".parse().expect("rate");
    })
    .await;
    let lookup = |uid: &'static str, org: &'static str| {
        let stack = &stack;
        async move {
            stack
                .lookup(&clinician(uid, org), NHS_A, AccessMode::Unscheduled)
                .await
        }
    };
    for _ in 0..3 {
        lookup("555000000001", "RXX01")
            .await
            .expect("within the user's burst");
    }
    assert_refused(
        lookup("555000000001", "RXX01").await,
        ErrorReason::RateLimited,
    );
    // A colleague in the same trust: two more, then the trust's allowance is spent.
    for _ in 0..2 {
        lookup("555000000002", "RXX01")
            .await
            .expect("within the trust's burst");
    }
    assert_refused(
        lookup("555000000003", "RXX01").await,
        ErrorReason::RateLimited,
    );
    // Another trust is untouched.
    lookup("555000000004", "RYY02")
        .await
        .expect("another organisation");
    // Refused lookups disclosed nothing and were not recorded: 3 + 2 + 1 accesses.
    assert_eq!(stack.access_events("AB1", NHS_A).await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_refused_at_once_and_passes() {
    let stack = stack_with(|c| c.server.max_in_flight = 2).await;
    let token = stack.nhs_token(&clinician("555000000001", "RXX01"));
    let server = stack.lookup_server();
    let channels = futures::future::join_all((0..4).map(|_| server.channel())).await;
    let (served, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let workers = (0..32).map(|worker| {
        let client = cpis_proto::cpis::lookup::v1::lookup_service_client::LookupServiceClient::new(
            channels[worker % channels.len()].clone(),
        );
        let (token, served, refused) = (&token, &served, &refused);
        async move {
            let mut client = client;
            for _ in 0..10 {
                match client.lookup_child(unscheduled_lookup(NHS_A, token)).await {
                    Ok(_) => {
                        served.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(status) => {
                        assert_refused::<()>(Err(status), ErrorReason::Overloaded);
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }
    });
    let prober = async {
        // Health answers during the flood: a prober must not restart a busy server.
        tokio::time::sleep(Duration::from_millis(20)).await;
        health(server.channel().await, "").await
    };
    let ((), during) = tokio::join!(
        async {
            futures::future::join_all(workers).await;
        },
        prober
    );
    let (served, refused) = (served.into_inner(), refused.into_inner());
    eprintln!("overload: {served} served, {refused} refused of 320");
    assert_eq!(served + refused, 320);
    assert!(
        refused > 0,
        "32 callers against 2 slots: some must be refused"
    );
    assert!(served > 0);
    assert_eq!(during, Some(ServingStatus::Serving));
    // Every admitted lookup was recorded; the refused were not.
    assert_eq!(stack.access_events("AB1", NHS_A).await, served);
    // The load gone, every call is served again at once.
    for _ in 0..10 {
        stack
            .lookup(
                &clinician("555000000001", "RXX01"),
                NHS_A,
                AccessMode::Unscheduled,
            )
            .await
            .expect("served after the load");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registrys_overload_reaches_the_clinician_as_overload() {
    // The registry admits one disclosure at a time; the lookup service admits them all.
    let stack = Stack::builder(Backend::Sqlite)
        .clock(registry_service::Clock::fixed(noon(2026, 6, 15)))
        .registry(|c| c.server.max_in_flight = 1)
        .with_lookup()
        .start()
        .await
        .expect("sqlite");
    stack.register_council("AB1").await;
    stack.put("AB1", cpp(NHS_A)).await;
    let token = stack.nhs_token(&clinician("555000000001", "RXX01"));
    let channel = stack.lookup_server().channel().await;
    let answers = futures::future::join_all((0..48).map(|_| {
        let mut client =
            cpis_proto::cpis::lookup::v1::lookup_service_client::LookupServiceClient::new(
                channel.clone(),
            );
        let token = token.clone();
        async move { client.lookup_child(unscheduled_lookup(NHS_A, &token)).await }
    }))
    .await;
    let mut served = 0;
    let mut refused = 0;
    for answer in answers {
        match answer {
            Ok(_) => served += 1,
            Err(status) => {
                // Not "the access may have been recorded": the registry refused before reading.
                assert_refused::<()>(Err(status), ErrorReason::Overloaded);
                refused += 1;
            }
        }
    }
    eprintln!("registry overload: {served} served, {refused} refused");
    assert!(
        refused > 0,
        "48 at once against one slot: some must be refused"
    );
    assert_eq!(stack.access_events("AB1", NHS_A).await, served);
}
