//! The lookup service's standard surface: health, reflection, generated clients (Rust, Python,
//! grpcurl) and the not-yet-implemented answer.

use cpis_proto::cpis::lookup::v1::{
    LookupChildRequest, lookup_service_client::LookupServiceClient,
};
use cpis_testkit::server::assert_standard_surface;
use lookup_service::{Config, SERVICES};

use crate::harness::start_lookup;

#[tokio::test]
async fn health_and_reflection_through_rust_clients() {
    let server = start_lookup(Config::default()).await;
    assert_standard_surface(&server, SERVICES).await;
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn python_client_generated_from_proto_talks_to_lookup() {
    let server = start_lookup(Config::default()).await;
    let addr = server.addr;
    let checked = tokio::task::spawn_blocking(move || {
        cpis_testkit::tools::python_client_check(
            addr,
            SERVICES,
            "cpis.lookup.v1.LookupService/LookupChild",
            "UNIMPLEMENTED",
        )
    })
    .await
    .expect("python check task");
    if checked {
        server.stop().await.expect("clean stop");
    }
}

#[tokio::test]
async fn grpcurl_lists_lookup_services() {
    let server = start_lookup(Config::default()).await;
    let addr = server.addr;
    let listed = tokio::task::spawn_blocking(move || cpis_testkit::tools::grpcurl_list(addr))
        .await
        .expect("grpcurl task");
    if let Some(listed) = listed {
        assert!(
            listed.iter().any(|s| s == "cpis.lookup.v1.LookupService"),
            "{listed:?}"
        );
        // The edge must not advertise the registry's services.
        assert!(
            !listed.iter().any(|s| s.starts_with("cpis.registry")),
            "{listed:?}"
        );
    }
}

#[tokio::test]
async fn unimplemented_rpcs_answer_unimplemented() {
    let server = start_lookup(Config::default()).await;
    let status = LookupServiceClient::new(server.channel().await)
        .lookup_child(LookupChildRequest::default())
        .await
        .expect_err("not implemented yet");
    assert_eq!(status.code(), tonic::Code::Unimplemented);
}
