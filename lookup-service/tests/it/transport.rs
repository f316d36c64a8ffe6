//! The lookup service's transport, with real handshakes on loopback: it reaches the registry's
//! internal port only with a server certificate it trusts and its own client certificate; its
//! NHS-facing port serves TLS when configured; a non-loopback plaintext listener needs
//! `--insecure-plaintext`.

use std::time::Duration;

use cpis_proto::cpis::common::v1::AccessMode;
use cpis_proto::cpis::lookup::v1::lookup_service_client::LookupServiceClient;
use cpis_testkit::pki::TestPki;
use cpis_testkit::server::health;
use cpis_testkit::{TestServer, both_backends, db::Backend};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::harness::{NHS_A, cpp, ed_clinician, start, unscheduled_lookup};

/// A lookup's health, three times over 1.5 s: a service that cannot reach the registry
/// securely must never claim to be ready.
async fn never_serving(server: &TestServer) {
    for _ in 0..3 {
        let channel = server.channel().await;
        assert_eq!(health(channel, "").await, Some(ServingStatus::NotServing));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

both_backends!(the_registry_is_reached_only_through_trusted_mutual_tls);

async fn the_registry_is_reached_only_through_trusted_mutual_tls(backend: Backend) {
    let Some(stack) = start(backend).await else {
        return;
    };
    stack.register_council("AB1").await;
    stack.put("AB1", cpp(NHS_A)).await;
    let token = stack.nhs_token(&ed_clinician());

    // Through the stack's own lookup service (mutual TLS): disclosed and recorded.
    let answer = stack
        .lookup(&ed_clinician(), NHS_A, AccessMode::Unscheduled)
        .await
        .expect("a lookup over mutual TLS");
    assert_eq!(answer.alerts.len(), 1);
    assert_eq!(stack.access_events("AB1", NHS_A).await, 1);

    // A lookup service that trusts another CA for the registry refuses its certificate.
    let other = TestPki::new("other");
    let other_ca = other.ca_path().to_owned();
    let distrustful = stack
        .another_lookup(move |config| config.registry_ca = Some(other_ca))
        .await;
    never_serving(&distrustful).await;
    let refused = LookupServiceClient::new(distrustful.channel().await)
        .lookup_child(unscheduled_lookup(NHS_A, &token))
        .await
        .expect_err("no registry it trusts");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    // One that presents no client certificate is refused by the registry's handshake.
    let anonymous = stack
        .another_lookup(|config| {
            config.registry_client_cert = None;
            config.registry_client_key = None;
        })
        .await;
    never_serving(&anonymous).await;
    let refused = LookupServiceClient::new(anonymous.channel().await)
        .lookup_child(unscheduled_lookup(NHS_A, &token))
        .await
        .expect_err("no client certificate");
    assert_ne!(refused.code(), Code::Ok);

    // Neither disclosed nor recorded anything.
    assert_eq!(stack.access_events("AB1", NHS_A).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nhs_facing_port_serves_tls_when_configured() {
    let stack = start(Backend::Sqlite).await.expect("sqlite");
    stack.register_council("AB1").await;
    stack.put("AB1", cpp(NHS_A)).await;
    let (cert, key) = (stack.pki.server.cert.clone(), stack.pki.server.key.clone());
    let lookup = stack
        .another_lookup(move |config| {
            config.server.tls.tls_cert = Some(cert);
            config.server.tls.tls_key = Some(key);
        })
        .await;
    assert!(lookup.url().starts_with("https://"));
    lookup.wait_serving("", Duration::from_secs(10)).await;
    let token = stack.nhs_token(&ed_clinician());
    let answer = LookupServiceClient::new(lookup.channel().await)
        .lookup_child(unscheduled_lookup(NHS_A, &token))
        .await
        .expect("a lookup over TLS")
        .into_inner();
    assert_eq!(answer.alerts.len(), 1);
    // A plaintext client gets nothing from a TLS port.
    let plaintext = TestServer::attach(&lookup.addr.to_string());
    let answered = match plaintext.try_channel().await {
        Ok(channel) => health(channel, "").await.is_some(),
        Err(_) => false,
    };
    assert!(!answered, "plaintext answered on a TLS port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_plaintext_listener_needs_insecure_plaintext() {
    let stack = start(Backend::Sqlite).await.expect("sqlite");
    let mut config = lookup_service::Config::with(
        stack.internal.url(),
        stack.nhs_signer.verifier().expect("verifier"),
    );
    config.registry_ca = Some(stack.pki.ca_path().to_owned());
    config.registry_client_cert = Some(stack.pki.lookup.cert.clone());
    config.registry_client_key = Some(stack.pki.lookup.key.clone());
    let everywhere = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind");
    cpis_testkit::server::assert_refuses_public_plaintext(lookup_service::serve(
        config.clone(),
        everywhere,
        std::future::pending(),
    ))
    .await;
    config.server.tls.insecure_plaintext = true;
    let server = TestServer::start_at(([0, 0, 0, 0], 0).into(), move |listener, shutdown| {
        lookup_service::serve(config, listener, shutdown)
    })
    .await;
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_client_certificate_is_presented_without_a_restart() {
    let mut stack = start(Backend::Sqlite).await.expect("sqlite");
    stack.register_council("AB1").await;
    stack.put("AB1", cpp(NHS_A)).await;
    // The lookup service starts with a certificate the registry does not admit.
    let files = tempfile::tempdir().expect("temp dir");
    let (cert, key) = (
        files.path().join("client.pem"),
        files.path().join("client.key"),
    );
    let stranger = stack.pki.client("stranger", "spiffe://cpis/stranger");
    std::fs::write(&cert, &stranger.cert_pem).unwrap();
    std::fs::write(&key, &stranger.key_pem).unwrap();
    let (cert_path, key_path) = (cert.clone(), key.clone());
    let lookup = stack
        .another_lookup(move |config| {
            config.registry_client_cert = Some(cert_path);
            config.registry_client_key = Some(key_path);
            config.server.tls.tls_reload_interval = Duration::from_millis(100);
        })
        .await;
    never_serving(&lookup).await;

    // Renewed on disk with the admitted identity; the next connection (here after the
    // registry's restart) presents it, and the service turns SERVING without a restart.
    std::fs::write(&key, &stack.pki.lookup.key_pem).unwrap();
    std::fs::write(&cert, &stack.pki.lookup.cert_pem).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.restart_registry(|_| {}).await.expect("restart");
    lookup.wait_serving("", Duration::from_secs(20)).await;
    let token = stack.nhs_token(&ed_clinician());
    let answer = LookupServiceClient::new(lookup.channel().await)
        .lookup_child(unscheduled_lookup(NHS_A, &token))
        .await
        .expect("a lookup with the renewed certificate")
        .into_inner();
    assert_eq!(answer.alerts.len(), 1);
}
