//! The lookup service's standard surface: health, reflection, generated clients (Rust, Python,
//! grpcurl) and refusal without a token.

use cpis_proto::cpis::lookup::v1::{
    LookupChildRequest, lookup_service_client::LookupServiceClient,
};
use cpis_testkit::db::Backend;
use cpis_testkit::server::assert_standard_surface;
use lookup_service::SERVICES;

use crate::harness::start;

#[tokio::test]
async fn health_and_reflection_through_rust_clients() {
    let stack = start(Backend::Sqlite).await.expect("sqlite");
    let server = stack.lookup_server();
    assert_standard_surface(server, SERVICES).await;
}

#[tokio::test]
async fn python_client_generated_from_proto_talks_to_lookup() {
    let stack = start(Backend::Sqlite).await.expect("sqlite");
    let server = stack.lookup_server();
    let addr = server.addr;
    let checked = tokio::task::spawn_blocking(move || {
        cpis_testkit::tools::python_client_check(
            addr,
            SERVICES,
            "cpis.lookup.v1.LookupService/LookupChild",
            "UNAUTHENTICATED",
        )
    })
    .await
    .expect("python check task");
    let _ = checked;
}

#[tokio::test]
async fn grpcurl_lists_lookup_services() {
    let stack = start(Backend::Sqlite).await.expect("sqlite");
    let server = stack.lookup_server();
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
async fn lookups_without_a_token_are_unauthenticated() {
    let stack = start(Backend::Sqlite).await.expect("sqlite");
    let status = LookupServiceClient::new(stack.lookup_server().channel().await)
        .lookup_child(LookupChildRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}
