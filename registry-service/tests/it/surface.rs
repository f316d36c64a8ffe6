//! The registry's standard surface: health, reflection, generated clients (Rust, Python,
//! grpcurl), refusal without a token, and a graceful drain.

use std::time::Duration;

use cpis_proto::cpis::registry::v1::{
    GetContactDetailsRequest, council_service_client::CouncilServiceClient,
};
use cpis_testkit::db::Backend;
use cpis_testkit::server::{assert_standard_surface, health};
use registry_service::{INTERNAL_SERVICES, PUBLIC_SERVICES as SERVICES};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::harness::{stack, start};

#[tokio::test]
async fn health_and_reflection_through_rust_clients() {
    let stack = start(Backend::Sqlite).await.expect("sqlite");
    // Each port lists exactly what it serves: the public port never names the internal
    // services.
    assert_standard_surface(&stack.registry, SERVICES).await;
    assert_standard_surface(&stack.internal, INTERNAL_SERVICES).await;
    stack.registry.stop().await.expect("clean stop");
}

#[tokio::test]
async fn python_client_generated_from_proto_talks_to_registry() {
    let server = start(Backend::Sqlite).await.expect("sqlite").registry;
    let addr = server.addr;
    let checked = tokio::task::spawn_blocking(move || {
        cpis_testkit::tools::python_client_check(
            addr,
            SERVICES,
            "cpis.registry.v1.CouncilService/GetContactDetails",
            "UNAUTHENTICATED",
        )
    })
    .await
    .expect("python check task");
    if checked {
        server.stop().await.expect("clean stop");
    }
}

#[tokio::test]
async fn grpcurl_lists_registry_services() {
    let server = start(Backend::Sqlite).await.expect("sqlite").registry;
    let addr = server.addr;
    let listed = tokio::task::spawn_blocking(move || cpis_testkit::tools::grpcurl_list(addr))
        .await
        .expect("grpcurl task");
    if let Some(listed) = listed {
        for service in SERVICES {
            assert!(
                listed.iter().any(|s| s == service),
                "{service} not in {listed:?}"
            );
        }
    }
}

#[tokio::test]
async fn calls_without_a_token_are_unauthenticated() {
    let server = start(Backend::Sqlite).await.expect("sqlite").registry;
    let status = CouncilServiceClient::new(server.channel().await)
        .get_contact_details(GetContactDetailsRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn drain_reports_not_serving_then_stops() {
    let registry = stack(Backend::Sqlite)
        .registry(|config| {
            config.server.shutdown_delay = Duration::from_millis(400);
            config.server.shutdown_grace = Duration::from_secs(2);
        })
        .start()
        .await
        .expect("sqlite");
    let mut server = registry.registry;
    let channel = server.channel().await;
    assert_eq!(
        health(channel.clone(), "").await,
        Some(ServingStatus::Serving)
    );

    server.begin_shutdown();
    // During the shutdown delay the server still answers, but as NOT_SERVING.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        match health(channel.clone(), "").await {
            Some(ServingStatus::NotServing) => break,
            Some(ServingStatus::Serving) if tokio::time::Instant::now() < deadline => {
                tokio::task::yield_now().await;
            }
            other => panic!("expected NOT_SERVING while draining, got {other:?}"),
        }
    }
    for service in SERVICES {
        assert_eq!(
            health(channel.clone(), service).await,
            Some(ServingStatus::NotServing)
        );
    }
    server.stop().await.expect("clean stop after drain");
}
