//! `kill -9` of a registry process and a restart lose nothing committed: records, access events
//! and queued notifications all survive, in order, on both engines.

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use cpis_proto::cpis::common::v1::AccessMode;
use cpis_proto::cpis::registry::v1::{
    DiscloseRequest, ListAccessEventsRequest, PutChildRecordRequest,
    council_service_client::CouncilServiceClient,
    disclosure_service_client::DisclosureServiceClient,
};
use cpis_testkit::{both_backends, db::Backend, db::TestDb};

use cpis_testkit::{TestServer, pki::TestPki};

use crate::harness::{
    cpp_record, ed_clinician, next_sequence, nhs, signer, subscribe_at, with_token,
};

both_backends!(kill_9_loses_nothing_committed);

struct Process {
    child: Child,
    url: String,
    /// The internal port, reached with the lookup service's certificate.
    internal: TestServer,
}

async fn spawn(db: &TestDb, jwks: &Path, pki: &TestPki) -> Process {
    let mut registry = cpis_testkit::process::RegistryCommand::new(
        Path::new(env!("CARGO_BIN_EXE_registry-service")),
        &db.url,
        jwks,
        pki,
    );
    let child = registry
        .command
        .env("RUST_LOG", "warn")
        // Kept for the suite's privacy check when it runs (else discarded).
        .stdout(cpis_testkit::logs::child_output("registry-service"))
        .spawn()
        .expect("spawn registry-service");
    let (url, internal_port) = (registry.public_url(), registry.internal);
    cpis_testkit::server::until_serving(&url, "registry process").await;
    let internal = TestServer::reach(
        ([127, 0, 0, 1], internal_port).into(),
        pki.client_tls(Some(&pki.lookup)),
    );
    Process {
        child,
        url,
        internal,
    }
}

async fn kill_9_loses_nothing_committed(backend: Backend) {
    let Some(db) = TestDb::create(backend) else {
        return;
    };
    let signer = signer();
    let dir = tempfile::tempdir().expect("temp dir");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, serde_json::to_vec(signer.jwks()).expect("jwks")).expect("write jwks");
    let token = signer
        .mint(
            &serde_json::json!({"ods_code": "AB1", "scope": "read write"}),
            Duration::from_secs(600),
        )
        .expect("mint");

    let pki = TestPki::new("crash");
    let mut first = spawn(&db, &jwks, &pki).await;
    let mut council = CouncilServiceClient::new(TestServer::attach(&first.url).channel().await);
    council
        .set_contact_details(with_token(
            cpis_proto::cpis::registry::v1::SetContactDetailsRequest {
                local_authority: Some(cpis_proto::cpis::common::v1::LocalAuthority {
                    name: "Council AB1".into(),
                    emergency_duty_phone: "020 7946 0000".into(),
                    ..Default::default()
                }),
            },
            &token,
        ))
        .await
        .expect("contacts");
    council
        .put_child_record(with_token(
            PutChildRecordRequest {
                record: Some(cpp_record(&nhs(0))),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("put");
    let mut disclosure = DisclosureServiceClient::new(first.internal.channel().await);
    for _ in 0..5 {
        disclosure
            .disclose(DiscloseRequest {
                nhs_number: nhs(0),
                accessor: Some(ed_clinician("555000000001")),
                access_mode: AccessMode::Unscheduled as i32,
                request_id: String::new(),
            })
            .await
            .expect("disclose");
    }
    // SIGKILL: no drain, no shutdown hooks.
    first.child.kill().expect("kill -9");
    first.child.wait().expect("reaped");

    let mut second = spawn(&db, &jwks, &pki).await;
    let probe = cpis_testkit::TestServer::attach(&second.url);
    let mut stream = subscribe_at(&probe, &token, Some(0))
        .await
        .expect("subscribe after restart");
    for expected in 1..=5 {
        assert_eq!(
            next_sequence(&mut stream, Duration::from_secs(5))
                .await
                .sequence,
            expected
        );
    }
    let events = CouncilServiceClient::new(TestServer::attach(&second.url).channel().await)
        .list_access_events(with_token(
            ListAccessEventsRequest {
                nhs_number: nhs(0),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("history")
        .into_inner();
    assert_eq!(events.access_events.len(), 5);
    second.child.kill().expect("stop");
    second.child.wait().expect("reaped");
}
