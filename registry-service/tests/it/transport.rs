//! Transport security, with real handshakes on loopback: the internal port admits only client
//! certificates of its CA that name an admitted identity (no certificate, an unknown CA or an
//! expired certificate fail the handshake; a wrong identity is PERMISSION_DENIED), a client
//! refuses a server certificate it does not trust, a certificate rotated on disk is presented
//! without a restart, each port serves only its audience's services, a non-loopback plaintext
//! listener needs `--insecure-plaintext`, and Python (grpcio) and grpcurl connect over TLS.

use std::time::Duration;

use cpis_core::status::reason_of;
use cpis_proto::cpis::common::v1::{AccessMode, ErrorReason};
use cpis_proto::cpis::registry::v1::{
    DiscloseRequest, GetContactDetailsRequest, council_service_client::CouncilServiceClient,
    disclosure_service_client::DisclosureServiceClient,
    operator_service_client::OperatorServiceClient,
};
use cpis_testkit::pki::{LOOKUP_IDENTITY, OPERATOR_IDENTITY, TestPki, Usage};
use cpis_testkit::server::health;
use cpis_testkit::tools::ToolTls;
use cpis_testkit::{TestServer, both_backends, db::Backend, logs};
use registry_service::{INTERNAL_SERVICES, PUBLIC_SERVICES};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::harness::{cpp_record, disclose, ed_clinician, nhs, stack, start};

/// Whether a health check over `port` succeeds: a refused handshake fails the connection or
/// its first call (TLS 1.3 clients learn of a refused certificate only then).
async fn answers(port: &TestServer) -> bool {
    match port.try_channel().await {
        Ok(channel) => health(channel, "").await == Some(ServingStatus::Serving),
        Err(_) => false,
    }
}

fn a_disclosure() -> DiscloseRequest {
    DiscloseRequest {
        nhs_number: nhs(0),
        accessor: Some(ed_clinician("555000000001")),
        access_mode: AccessMode::Unscheduled as i32,
        request_id: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_internal_port_refuses_clients_without_a_certificate_of_its_ca() {
    let reg = start(Backend::Sqlite).await.expect("sqlite");
    let pki = &reg.pki;
    assert!(
        answers(&reg.internal).await,
        "the lookup certificate is admitted"
    );

    // No client certificate.
    assert!(!answers(&reg.internal.with_tls(pki.client_tls(None))).await);

    // A certificate naming the right identity, from a CA the registry does not trust.
    let other = TestPki::new("other");
    let foreign = pki.client_tls(Some(&other.lookup));
    assert!(!answers(&reg.internal.with_tls(foreign)).await);

    // The registry's own CA, the right identity, but expired.
    let expired = pki.issue("expired", Usage::Client, Some(LOOKUP_IDENTITY), |params| {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let expired_port = reg.internal.with_tls(pki.client_tls(Some(&expired)));
    assert!(!answers(&expired_port).await);
    let refused = match expired_port.try_channel().await {
        Ok(channel) => DisclosureServiceClient::new(channel)
            .disclose(a_disclosure())
            .await
            .expect_err("an expired certificate is refused"),
        Err(_) => return,
    };
    assert_ne!(refused.code(), Code::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_refuses_a_server_certificate_it_does_not_trust() {
    let reg = start(Backend::Sqlite).await.expect("sqlite");
    let other = TestPki::new("other");
    // The right client certificate, but trusting another CA for the server.
    let tls = other.client_tls(None).identity(reg.pki.lookup.identity());
    let port = reg.internal.with_tls(tls);
    assert!(!answers(&port).await);
    assert!(port.try_channel().await.is_err() || !answers(&port).await);
}

both_backends!(the_wrong_identity_is_permission_denied_and_logged);

/// A certificate of the right CA naming an identity not admitted to the service called: refused
/// PERMISSION_DENIED with the reason, logged as a security event without the request's content.
async fn the_wrong_identity_is_permission_denied_and_logged(backend: Backend) {
    let captured = logs::capture();
    let Some(reg) = start(backend).await else {
        return;
    };
    reg.register_council("AB1").await;
    reg.put("AB1", cpp_record(&nhs(0))).await;
    let pki = &reg.pki;

    let stranger = pki.client("stranger", "spiffe://cpis/stranger");
    let as_stranger = reg.internal.with_tls(pki.client_tls(Some(&stranger)));
    let refused = DisclosureServiceClient::new(as_stranger.channel().await)
        .disclose(a_disclosure())
        .await
        .expect_err("a stranger may not disclose");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(
        reason_of(&refused),
        Some(ErrorReason::ClientIdentityNotAllowed)
    );

    // An operator's certificate does not make its holder the lookup service...
    let as_operator = reg.internal.with_tls(pki.client_tls(Some(&pki.operator)));
    let refused = DisclosureServiceClient::new(as_operator.channel().await)
        .disclose(a_disclosure())
        .await
        .expect_err("an operator may not disclose");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // ...nor the lookup service's an operator, whatever its token says.
    let refused = OperatorServiceClient::new(reg.internal.channel().await)
        .import_nhs_number_status_changes(reg.as_operator(tokio_stream::iter(Vec::new())))
        .await
        .expect_err("the lookup service is no operator");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(
        reason_of(&refused),
        Some(ErrorReason::ClientIdentityNotAllowed)
    );

    // Nothing was disclosed or recorded; the admitted identity still works.
    assert_eq!(reg.access_events("AB1", &nhs(0)).await, 0);
    disclose(&reg, &nhs(0), AccessMode::Unscheduled).await;
    assert_eq!(reg.access_events("AB1", &nhs(0)).await, 1);

    let events = captured.json_lines_with("spiffe://cpis/stranger");
    assert!(
        events.iter().any(
            |line| line.contains("client certificate identity not admitted")
                && line.contains("\"security\"")
        ),
        "{events:?}"
    );
    assert!(
        !captured.contains(&nhs(0)),
        "the NHS number must not be logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_needs_both_its_certificate_and_its_token() {
    let reg = start(Backend::Sqlite).await.expect("sqlite");
    // Certificate and token: admitted (an empty import is a valid one).
    let report = reg
        .operator()
        .await
        .import_nhs_number_status_changes(reg.as_operator(tokio_stream::iter(Vec::new())))
        .await
        .expect("an operator with certificate and token");
    assert_eq!(report.into_inner().received_count, 0);
    // The certificate without a token: UNAUTHENTICATED.
    let refused = reg
        .operator()
        .await
        .import_nhs_number_status_changes(tokio_stream::iter(Vec::new()))
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    // The operator identity is configured by name: another name from the same CA is refused.
    let impostor = reg.pki.client("impostor", "spiffe://cpis/operator-2");
    let port = reg.internal.with_tls(reg.pki.client_tls(Some(&impostor)));
    let refused = OperatorServiceClient::new(port.channel().await)
        .import_nhs_number_status_changes(reg.as_operator(tokio_stream::iter(Vec::new())))
        .await
        .expect_err("not an operator identity");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_ne!(OPERATOR_IDENTITY, "spiffe://cpis/operator-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_port_serves_only_its_audience() {
    let reg = start(Backend::Sqlite).await.expect("sqlite");
    // The public port neither lists nor serves the internal services.
    for listed in [
        cpis_testkit::server::list_services_v1(reg.registry.channel().await).await,
        cpis_testkit::server::list_services_v1alpha(reg.registry.channel().await).await,
    ] {
        for internal in INTERNAL_SERVICES {
            assert!(!listed.iter().any(|s| s == internal), "{listed:?}");
        }
    }
    // Nor can its reflection describe them (grpcurl's `describe`), while it describes its own.
    let public = reg.registry.channel().await;
    for internal in INTERNAL_SERVICES {
        assert!(
            !cpis_testkit::server::reflection_describes(public.clone(), internal).await,
            "the public port describes {internal}"
        );
    }
    for own in PUBLIC_SERVICES {
        assert!(cpis_testkit::server::reflection_describes(public.clone(), own).await);
    }
    let refused = DisclosureServiceClient::new(reg.registry.channel().await)
        .disclose(a_disclosure())
        .await
        .expect_err("no disclosure on the public port");
    assert_eq!(refused.code(), Code::Unimplemented, "{refused:?}");
    let refused = OperatorServiceClient::new(reg.registry.channel().await)
        .import_nhs_number_status_changes(reg.as_operator(tokio_stream::iter(Vec::new())))
        .await
        .expect_err("no operator service on the public port");
    assert_eq!(refused.code(), Code::Unimplemented, "{refused:?}");

    // The internal port neither lists nor serves CouncilService.
    let listed = cpis_testkit::server::list_services_v1(reg.internal.channel().await).await;
    for public in PUBLIC_SERVICES {
        assert!(!listed.iter().any(|s| s == public), "{listed:?}");
    }
    for public in PUBLIC_SERVICES {
        assert!(
            !cpis_testkit::server::reflection_describes(reg.internal.channel().await, public).await
        );
    }
    let refused = CouncilServiceClient::new(reg.internal.channel().await)
        .get_contact_details(reg.as_council("AB1", GetContactDetailsRequest::default()))
        .await
        .expect_err("no council service on the internal port");
    assert_eq!(refused.code(), Code::Unimplemented, "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_presented_without_a_restart() {
    let captured = logs::capture();
    // The internal port presents certificate files of its own (a copy of the stack's server
    // certificate), checked every 100 ms.
    let files = tempfile::tempdir().expect("temp dir");
    let (cert, key) = (files.path().join("tls.pem"), files.path().join("tls.key"));
    let (cert_path, key_path) = (cert.clone(), key.clone());
    let reg = stack(Backend::Sqlite)
        .registry(move |config| {
            std::fs::copy(config.internal_tls_cert.as_ref().unwrap(), &cert_path).unwrap();
            std::fs::copy(config.internal_tls_key.as_ref().unwrap(), &key_path).unwrap();
            config.internal_tls_cert = Some(cert_path);
            config.internal_tls_key = Some(key_path);
            config.server.tls.tls_reload_interval = Duration::from_millis(100);
        })
        .start()
        .await
        .expect("sqlite");
    let first = &reg.pki;
    let lookup = reg.pki.lookup.identity();
    let trusting = |pki: &TestPki| {
        reg.internal
            .with_tls(pki.client_tls(None).identity(lookup.clone()))
    };
    assert!(answers(&trusting(first)).await);
    let kept = trusting(first).channel().await;

    // Rotate to a certificate from another CA: new connections see it, old clients do not.
    let second = TestPki::new("second");
    std::fs::write(&key, &second.server.key_pem).unwrap();
    std::fs::write(&cert, &second.server.cert_pem).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !answers(&trusting(&second)).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rotated certificate was not presented within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!answers(&trusting(first)).await, "the old one is gone");
    // A connection made before the rotation keeps serving.
    assert_eq!(health(kept, "").await, Some(ServingStatus::Serving));

    // A broken file keeps the certificate in use, and says so.
    std::fs::write(&cert, "not a certificate").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !captured.contains("keeping the previous certificate") {
        assert!(tokio::time::Instant::now() < deadline, "no error logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answers(&trusting(&second)).await);

    // So does an expired one, however well formed.
    let third = TestPki::new("third");
    let expired = third.issue("expired-server", Usage::Server, None, |params| {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    std::fs::write(&key, &expired.key_pem).unwrap();
    std::fs::write(&cert, &expired.cert_pem).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !captured.contains("the new certificate has expired") {
        assert!(tokio::time::Instant::now() < deadline, "no error logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answers(&trusting(&second)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_plaintext_listener_needs_insecure_plaintext() {
    let reg = start(Backend::Sqlite).await.expect("sqlite");
    let everywhere = || tokio::net::TcpListener::bind("0.0.0.0:0");
    let loopback = || tokio::net::TcpListener::bind("127.0.0.1:0");
    let listeners = registry_service::Listeners {
        public: everywhere().await.expect("bind"),
        internal: loopback().await.expect("bind"),
        admin: None,
    };
    // Plaintext on every address, without the escape hatch: refused before serving.
    let mut config = reg.registry_config();
    config.internal_tls_cert = None;
    config.internal_tls_key = None;
    config.internal_client_ca = None;
    cpis_testkit::server::assert_refuses_public_plaintext(registry_service::serve(
        config.clone(),
        listeners,
        std::future::pending(),
    ))
    .await;

    // With it, the server starts (and says so loudly).
    let captured = logs::capture();
    config.server.tls.insecure_plaintext = true;
    let server = TestServer::start_at(([0, 0, 0, 0], 0).into(), move |public, shutdown| {
        let config = config;
        async move {
            let listeners = registry_service::Listeners {
                public,
                internal: loopback().await.expect("bind"),
                admin: None,
            };
            registry_service::serve(config, listeners, shutdown).await
        }
    })
    .await;
    assert!(captured.contains("INSECURE: listening in PLAINTEXT"));
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_grpcurl_connect_over_tls() {
    // The public port serves TLS too, with the stack's server certificate.
    let reg = stack(Backend::Sqlite)
        .registry(|config| {
            config.server.tls.tls_cert = config.internal_tls_cert.clone();
            config.server.tls.tls_key = config.internal_tls_key.clone();
        })
        .start()
        .await
        .expect("sqlite");
    assert!(reg.registry.url().starts_with("https://"));
    assert!(
        !answers(&TestServer::attach(&reg.registry.addr.to_string())).await,
        "no plaintext on a TLS port"
    );
    let pki = reg.pki.clone();
    let (public, internal) = (reg.registry.addr.port(), reg.internal.addr.port());
    tokio::task::spawn_blocking(move || {
        // Server TLS on the public port: grpc.ssl_channel_credentials with the CA alone.
        let server_only = ToolTls {
            ca: pki.ca_path(),
            client: None,
        };
        let mutual = ToolTls {
            ca: pki.ca_path(),
            client: Some((&pki.lookup.cert, &pki.lookup.key)),
        };
        cpis_testkit::tools::python_client_check_with(
            &format!("localhost:{public}"),
            PUBLIC_SERVICES,
            "cpis.registry.v1.CouncilService/GetContactDetails",
            "UNAUTHENTICATED",
            Some(server_only),
        );
        // Mutual TLS on the internal port: an empty disclosure is admitted, then invalid.
        cpis_testkit::tools::python_client_check_with(
            &format!("localhost:{internal}"),
            INTERNAL_SERVICES,
            "cpis.registry.v1.DisclosureService/Disclose",
            "INVALID_ARGUMENT",
            Some(mutual),
        );
        if let Some(listed) = cpis_testkit::tools::grpcurl_list_with(
            &format!("localhost:{public}"),
            Some(server_only),
        ) {
            assert!(listed.iter().any(|s| s == PUBLIC_SERVICES[0]), "{listed:?}");
            assert!(
                !listed.iter().any(|s| s.contains("Disclosure")),
                "{listed:?}"
            );
        }
        if let Some(listed) =
            cpis_testkit::tools::grpcurl_list_with(&format!("localhost:{internal}"), Some(mutual))
        {
            for service in INTERNAL_SERVICES {
                assert!(listed.iter().any(|s| s == service), "{listed:?}");
            }
        }
    })
    .await
    .expect("tools");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_handshake_falls_under_the_handshake_timeout() {
    use tokio::io::AsyncWriteExt as _;
    let reg = stack(Backend::Sqlite)
        .registry(|c| c.server.handshake_timeout = Duration::from_millis(500))
        .start()
        .await
        .expect("sqlite");
    // Connects to the TLS port and says nothing: closed at the handshake timeout.
    let mut silent = tokio::net::TcpStream::connect(reg.internal.addr)
        .await
        .unwrap();
    let took = crate::edges::closed_within(&mut silent, Duration::from_secs(5))
        .await
        .expect("a silent TLS connection is closed");
    assert!(took >= Duration::from_millis(400), "{took:?}");
    // Starts a ClientHello (a TLS record header announcing more) and stalls: closed too.
    let mut stalled = tokio::net::TcpStream::connect(reg.internal.addr)
        .await
        .unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    crate::edges::closed_within(&mut stalled, Duration::from_secs(5))
        .await
        .expect("a stalled TLS handshake is closed");
    // The port still serves whoever completes the handshake.
    assert!(answers(&reg.internal).await);
}

/// Opens `count` TCP connections to `port` that never say a word.
async fn silent_connections(port: &TestServer, count: usize) -> Vec<tokio::net::TcpStream> {
    let mut silent = Vec::with_capacity(count);
    for _ in 0..count {
        silent.push(
            tokio::net::TcpStream::connect(port.addr)
                .await
                .expect("connect"),
        );
    }
    silent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_cannot_stop_a_tls_listener() {
    // A handshake timeout long enough that only the handshake bounds can help.
    let reg = stack(Backend::Sqlite)
        .registry(|c| c.server.handshake_timeout = Duration::from_secs(120))
        .start()
        .await
        .expect("sqlite");
    // More silent connections than the listener holds handshakes for (1,024 by default), all
    // from one source (64 by default).
    let mut silent = silent_connections(&reg.internal, 1100).await;
    let answered = tokio::time::timeout(Duration::from_secs(10), answers(&reg.internal)).await;
    assert_eq!(
        answered,
        Ok(true),
        "a real client still completes its handshake"
    );
    // The source's oldest handshakes made way for its newest.
    crate::edges::closed_within(&mut silent[0], Duration::from_secs(5))
        .await
        .expect("the oldest silent connection is closed");
    let newest = silent.last_mut().expect("connections");
    assert_eq!(
        crate::edges::closed_within(newest, Duration::from_millis(300)).await,
        None,
        "the newest is still waiting for its handshake"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_listeners_handshake_limit_the_oldest_make_way() {
    let reg = stack(Backend::Sqlite)
        .registry(|c| {
            c.server.handshake_timeout = Duration::from_secs(120);
            c.server.max_pending_handshakes = 32;
            c.server.max_pending_handshakes_per_source = 1000;
        })
        .start()
        .await
        .expect("sqlite");
    let mut silent = silent_connections(&reg.internal, 100).await;
    let answered = tokio::time::timeout(Duration::from_secs(10), answers(&reg.internal)).await;
    assert_eq!(answered, Ok(true));
    for oldest in &mut silent[..10] {
        crate::edges::closed_within(oldest, Duration::from_secs(5))
            .await
            .expect("the oldest are closed");
    }
}

/// Sets council `ods`'s contact details over `port` (which may present a client certificate).
async fn set_contacts_over(
    reg: &cpis_testkit::Stack,
    port: &TestServer,
    ods: &str,
) -> Result<(), tonic::Status> {
    let request = cpis_testkit::stack::council_contacts(ods);
    CouncilServiceClient::new(
        port.try_channel()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("connect: {e}")))?,
    )
    .set_contact_details(reg.as_council(ods, request))
    .await
    .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn council_certificates_when_the_deployment_asks_for_them() {
    let captured = logs::capture();
    let reg = stack(Backend::Sqlite)
        // The public port serves TLS, and councils need certificates from the stack's CA.
        .registry(cpis_testkit::stack::require_council_certificates)
        .start()
        .await
        .expect("sqlite");
    let pki = &reg.pki;
    // Health and reflection need no certificate.
    assert!(answers(&reg.registry).await);

    // The council's certificate and its token: admitted.
    let ab1 = pki.client("council-ab1", "spiffe://cpis/council/AB1");
    let ab1_port = reg.registry.with_tls(pki.client_tls(Some(&ab1)));
    set_contacts_over(&reg, &ab1_port, "AB1")
        .await
        .expect("certificate and token of one council");

    // A token alone: UNAUTHENTICATED, in words, with its reason.
    let refused = set_contacts_over(&reg, &reg.registry, "AB1")
        .await
        .expect_err("a token alone");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert_eq!(
        reason_of(&refused),
        Some(ErrorReason::ClientCertificateMissing)
    );

    // Another council's certificate with AB1's token: PERMISSION_DENIED, logged.
    let cd2 = pki.client("council-cd2", "spiffe://cpis/council/CD2");
    let cd2_port = reg.registry.with_tls(pki.client_tls(Some(&cd2)));
    let refused = set_contacts_over(&reg, &cd2_port, "AB1")
        .await
        .expect_err("a certificate naming another council");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(
        reason_of(&refused),
        Some(ErrorReason::ClientIdentityNotAllowed)
    );
    assert!(
        captured
            .json_lines_with("does not name the token's council")
            .iter()
            .any(|l| l.contains("spiffe://cpis/council/CD2")),
        "the refusal is a security log line"
    );
    // And the same certificate with its own council's token: admitted.
    set_contacts_over(&reg, &cd2_port, "CD2")
        .await
        .expect("CD2 with its own token");

    // A certificate from a CA the registry does not trust fails the handshake.
    let other = TestPki::new("other");
    let foreign = other.client("council-ab1", "spiffe://cpis/council/AB1");
    let foreign_port = reg.registry.with_tls(pki.client_tls(Some(&foreign)));
    assert!(set_contacts_over(&reg, &foreign_port, "AB1").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_lists_and_new_cas_apply_without_a_restart() {
    let reg = start(Backend::Sqlite).await.expect("sqlite");
    let pki = &reg.pki;
    let other = TestPki::new("other");
    // The registry trusts a CA file and a revocation list (revoking nothing yet) that it
    // re-reads every 100 ms; its internal connections live at most 2 s.
    let dir = tempfile::tempdir().expect("dir");
    let ca = dir.path().join("client-ca.pem");
    std::fs::write(&ca, pki.ca_pem()).expect("write CA");
    let crl = dir.path().join("client.crl.pem");
    let revoking = |pki: &TestPki, serials: &[u64]| {
        std::fs::read_to_string(pki.revocation_list("crl.pem", serials)).expect("read CRL")
    };
    std::fs::write(&crl, revoking(pki, &[])).expect("write CRL");
    let (_public, internal) = reg
        .another_registry_ports(|c| {
            c.internal_client_ca = Some(ca.clone());
            c.internal_client_crl = vec![crl.clone()];
            c.server.tls.tls_reload_interval = Duration::from_millis(100);
            c.certificate_connection_age = Duration::from_secs(2);
        })
        .await;
    let settle = || tokio::time::sleep(Duration::from_millis(600));

    // A lookup certificate about to be revoked: admitted, and its connection kept open.
    let doomed = pki.issue("doomed", Usage::Client, Some(LOOKUP_IDENTITY), |params| {
        params.serial_number = Some(77_u64.into());
    });
    let doomed_port = internal.with_tls(pki.client_tls(Some(&doomed)));
    let open = doomed_port.channel().await;
    assert_eq!(health(open.clone(), "").await, Some(ServingStatus::Serving));

    // Revoked: a new connection with it fails; the lookup service's own still works.
    std::fs::write(&crl, revoking(pki, &[77])).expect("write CRL");
    settle().await;
    assert!(
        !answers(&doomed_port).await,
        "a revoked certificate is refused"
    );
    assert!(answers(&internal).await);
    // Its open connection ends at the maximum connection age, and cannot come back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while health(open.clone(), "").await == Some(ServingStatus::Serving) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the revoked certificate's connection outlived the maximum age"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // A new CA in the file: its certificates are admitted from the next handshake. (With
    // revocation lists configured, every issuer needs its list: the new CA's comes too.)
    let newcomer = internal.with_tls(pki.client_tls(Some(&other.lookup)));
    assert!(!answers(&newcomer).await, "not trusted yet");
    std::fs::write(&ca, format!("{}{}", pki.ca_pem(), other.ca_pem())).expect("write CAs");
    settle().await;
    assert!(
        !answers(&newcomer).await,
        "an issuer without a revocation list is refused"
    );
    let lists = format!("{}{}", revoking(pki, &[77]), revoking(&other, &[]));
    std::fs::write(&crl, lists).expect("write CRLs");
    settle().await;
    assert!(
        answers(&newcomer).await,
        "the new CA is trusted without a restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_council_certificate_loses_its_open_connection() {
    let reg = start(Backend::Sqlite).await.expect("sqlite");
    let pki = &reg.pki;
    let dir = tempfile::tempdir().expect("dir");
    let crl = dir.path().join("council.crl.pem");
    let revoking = |serials: &[u64]| {
        std::fs::read_to_string(pki.revocation_list("council-crl.pem", serials)).expect("CRL")
    };
    std::fs::write(&crl, revoking(&[])).expect("write CRL");
    let (public, _internal) = reg
        .another_registry_ports(|c| {
            cpis_testkit::stack::require_council_certificates(c);
            c.council_client_crl = vec![crl.clone()];
            c.server.tls.tls_reload_interval = Duration::from_millis(100);
            c.certificate_connection_age = Duration::from_secs(2);
        })
        .await;
    let doomed = pki.issue(
        "council-ab1-doomed",
        Usage::Client,
        Some("spiffe://cpis/council/AB1"),
        |params| params.serial_number = Some(91_u64.into()),
    );
    let port = public.with_tls(pki.client_tls(Some(&doomed)));
    let open = CouncilServiceClient::new(port.channel().await);
    let contacts = || reg.as_council("AB1", cpis_testkit::stack::council_contacts("AB1"));
    open.clone()
        .set_contact_details(contacts())
        .await
        .expect("admitted before the revocation");

    std::fs::write(&crl, revoking(&[91])).expect("write CRL");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        set_contacts_over(&reg, &port, "AB1").await.is_err(),
        "a new connection with the revoked certificate is refused"
    );
    // The connection opened before the revocation ends at the maximum age, and cannot return.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while open.clone().set_contact_details(contacts()).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the revoked council certificate kept its open connection"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuing_flood_of_silent_connections_does_not_stop_a_tls_listener() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let reg = stack(Backend::Sqlite)
        .registry(|c| c.server.handshake_timeout = Duration::from_secs(120))
        .start()
        .await
        .expect("sqlite");
    let addr = reg.internal.addr;
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let opened = std::sync::Arc::new(AtomicUsize::new(0));
    // New silent connections without pause (the newest 300 held open) until told to stop, at
    // most 30 s.
    let flood = {
        let (stop, opened) = (stop.clone(), opened.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let mut held = std::collections::VecDeque::new();
            while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(30) {
                if let Ok(stream) = tokio::net::TcpStream::connect(addr).await {
                    held.push_back(stream);
                    opened.fetch_add(1, Ordering::SeqCst);
                }
                if held.len() > 300 {
                    held.pop_front();
                }
            }
        })
    };
    // The flood is well under way (past the per-source bound many times) before the real
    // clients come, and goes on while they do.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while opened.load(Ordering::SeqCst) < 400 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flood did not get going"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The flood shares the real client's source address, so the per-source bound may close the
    // client's own handshake when the machine is slow: like any gRPC client it connects again,
    // and must be served within 5 s each time.
    for _ in 0..5 {
        let served = tokio::time::timeout(Duration::from_secs(5), async {
            while !answers(&reg.internal).await {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(served.is_ok(), "a real client is served during the flood");
    }
    assert!(
        !flood.is_finished(),
        "the flood went on while the real clients were served"
    );
    stop.store(true, Ordering::SeqCst);
    flood.await.expect("flood");
}
