//! Traces end to end: the real `registry-service` and `lookup-service` binaries export to a real
//! OTLP receiver, and one lookup from a caller sending a W3C `traceparent` yields one trace
//! across both services, nested as documented (README "Tracing"): the caller's trace id is
//! honoured, the registry's call span is a child of the lookup's call span, the token, policy,
//! disclosure transaction and outbox spans sit under their call's span, and the JSON log lines
//! name the trace. A malformed `traceparent` is ignored: the call succeeds in a trace of its own.
//!
//! The registry binary is taken from beside the lookup binary (cargo builds both for a workspace
//! test run; `cargo build -p registry-service` first when running this crate alone).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use cpis_proto::cpis::lookup::v1::lookup_service_client::LookupServiceClient;
use cpis_proto::cpis::registry::v1::{
    BatchHeader, PutChildRecordRequest, SubscribeNotificationsRequest, UploadBatchRequest,
    council_service_client::CouncilServiceClient, upload_batch_request::Item,
};
use cpis_testkit::otlp::{ExportedSpan, Receiver};
use cpis_testkit::{
    TestServer, both_backends, db::Backend, db::TestDb, pki::TestPki, server::until_serving,
};
use tonic::transport::Channel;

use crate::harness::{NHS_A, NHS_B, cpp, ed_clinician, unscheduled_lookup, with_token};

both_backends!(one_lookup_is_one_trace_across_both_services);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_traceparent_is_ignored() {
    malformed_traceparent(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_disturbs_nothing() {
    collector_down(Backend::Sqlite).await;
}

/// The caller's trace and its span (W3C ids in hex).
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A process killed when dropped (the test's bounded lifetime).
struct Process(Child);

impl Process {
    /// Sends SIGTERM (a clean stop) and waits at most `limit` for the exit status.
    fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.0.try_wait().expect("wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Both services as processes exporting to `receiver`, with data for one lookup of NHS_A.
struct Services {
    _registry: Process,
    lookup_process: Process,
    lookup_url: String,
    lookup_log: PathBuf,
    /// The registry's public port, as council AB1.
    council: CouncilServiceClient<Channel>,
    council_token: String,
    council_signer: cpis_core::auth::DevSigner,
    nhs_signer: cpis_core::auth::DevSigner,
    _pki: TestPki,
    _dir: tempfile::TempDir,
}

fn registry_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_lookup-service")).with_file_name("registry-service");
    assert!(
        path.exists(),
        "{} is not built: run `cargo build -p registry-service` (a workspace test run builds it)",
        path.display()
    );
    path
}

/// The environment that switches traces on, towards `receiver`, with a short batch delay.
fn otel_env(command: &mut Command, collector: &str) {
    command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("OTEL_TRACES_EXPORTER")
        .env_remove("OTEL_TRACES_SAMPLER");
}

async fn start_services(db: &TestDb, collector: &str) -> Services {
    let dir = tempfile::tempdir().expect("temp dir");
    let council_signer = cpis_testkit::stack::council_signer();
    let nhs_signer = cpis_testkit::stack::nhs_signer();
    let council_jwks = dir.path().join("council-jwks.json");
    let nhs_jwks = dir.path().join("nhs-jwks.json");
    std::fs::write(
        &council_jwks,
        cpis_testkit::jwks::jwks_of(&[&council_signer]),
    )
    .expect("jwks");
    std::fs::write(&nhs_jwks, cpis_testkit::jwks::jwks_of(&[&nhs_signer])).expect("jwks");
    let pki = TestPki::new("traces");

    let lookup_port = cpis_testkit::server::free_port();
    let registry_binary = registry_binary();
    let mut registry =
        cpis_testkit::process::RegistryCommand::new(&registry_binary, &db.url, &council_jwks, &pki);
    let internal = registry.internal;
    registry
        .command
        .env("CPIS_LOG_FORMAT", "json")
        .stdout(cpis_testkit::logs::child_output("registry-service"));
    otel_env(&mut registry.command, collector);
    let registry_url = registry.public_url();
    let registry = Process(registry.command.spawn().expect("spawn registry-service"));
    until_serving(&registry_url, "registry-service").await;

    let (lookup_out, lookup_log) = cpis_testkit::logs::child_log_file("lookup-service", dir.path());
    let mut lookup = Command::new(env!("CARGO_BIN_EXE_lookup-service"));
    lookup
        .arg("serve")
        .env("CPIS_LOOKUP_LISTEN", format!("127.0.0.1:{lookup_port}"))
        .env("CPIS_ADMIN_LISTEN", "127.0.0.1:0")
        .env("CPIS_REGISTRY_URL", format!("https://127.0.0.1:{internal}"))
        .env("CPIS_REGISTRY_CA", pki.ca_path())
        .env("CPIS_REGISTRY_CLIENT_CERT", &pki.lookup.cert)
        .env("CPIS_REGISTRY_CLIENT_KEY", &pki.lookup.key)
        .env("CPIS_LOOKUP_JWKS_FILE", &nhs_jwks)
        .env("CPIS_LOG_FORMAT", "json")
        .stdout(lookup_out);
    otel_env(&mut lookup, collector);
    let lookup = Process(lookup.spawn().expect("spawn lookup-service"));
    let lookup_url = format!("http://127.0.0.1:{lookup_port}");
    until_serving(&lookup_url, "lookup-service").await;

    // A council with a record on NHS_A, so the lookup discloses it and queues a notification.
    let token = council_signer
        .mint(
            &serde_json::json!({"sub": "AB1-system", "ods_code": "AB1", "scope": "read write"}),
            Duration::from_secs(600),
        )
        .expect("mint");
    let mut council = CouncilServiceClient::new(TestServer::attach(&registry_url).channel().await);
    council
        .set_contact_details(with_token(
            cpis_testkit::stack::council_contacts("AB1"),
            &token,
        ))
        .await
        .expect("contact details");
    council
        .put_child_record(with_token(
            PutChildRecordRequest {
                record: Some(cpp(NHS_A)),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("put record");

    Services {
        _registry: registry,
        lookup_process: lookup,
        lookup_url,
        lookup_log,
        council,
        council_token: token,
        council_signer,
        nhs_signer,
        _pki: pki,
        _dir: dir,
    }
}

/// One unscheduled lookup of NHS_A sending `traceparent` and request id `request_id`.
async fn lookup(services: &Services, traceparent: &str, request_id: &str) {
    lookup_with_state(services, traceparent, "", request_id).await;
}

/// The same with a `tracestate` header too (when not empty).
async fn lookup_with_state(
    services: &Services,
    traceparent: &str,
    tracestate: &str,
    request_id: &str,
) {
    let token = services
        .nhs_signer
        .mint(&ed_clinician(), Duration::from_secs(600))
        .expect("mint");
    let mut request = unscheduled_lookup(NHS_A, &token);
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().expect("ascii"));
    request
        .metadata_mut()
        .insert("x-request-id", request_id.parse().expect("ascii"));
    if !tracestate.is_empty() {
        request
            .metadata_mut()
            .insert("tracestate", tracestate.parse().expect("ascii"));
    }
    let answer = LookupServiceClient::new(TestServer::attach(&services.lookup_url).channel().await)
        .lookup_child(request)
        .await
        .expect("lookup answered")
        .into_inner();
    assert_eq!(answer.alerts.len(), 1, "the record is disclosed");
}

fn one<'a>(spans: &'a [ExportedSpan], service: &str, name: &str) -> &'a ExportedSpan {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| s.service == service && s.name == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {service} span {name:?} in the trace; spans: {:#?}",
        spans
            .iter()
            .map(|s| (&s.service, &s.name))
            .collect::<Vec<_>>()
    );
    found[0]
}

async fn one_lookup_is_one_trace_across_both_services(backend: Backend) {
    let Some(receiver) = Receiver::start() else {
        return;
    };
    let Some(db) = TestDb::create(backend) else {
        return;
    };
    let services = start_services(&db, &receiver.endpoint()).await;
    lookup(
        &services,
        &format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"),
        "trace-test-1",
    )
    .await;

    // Everything below ends with the call; the batch delay is 100 ms.
    let ours = |spans: &[ExportedSpan]| -> Vec<ExportedSpan> {
        spans
            .iter()
            .filter(|s| s.trace_id == CALLER_TRACE)
            .cloned()
            .collect()
    };
    let spans = receiver
        .wait_for(Duration::from_secs(20), |spans| {
            let ours = ours(spans);
            ["outbox_enqueue", "cpis.lookup.v1.LookupService/LookupChild"]
                .iter()
                .all(|name| ours.iter().any(|s| s.name == *name))
        })
        .await;
    let trace = ours(&spans);

    let lookup_server = one(
        &trace,
        "lookup-service",
        "cpis.lookup.v1.LookupService/LookupChild",
    );
    // The caller's trace is honoured: its span is the lookup's parent.
    assert_eq!(lookup_server.parent_span_id, CALLER_SPAN);
    assert_eq!(lookup_server.kind, "SPAN_KIND_SERVER");
    assert_eq!(lookup_server.attributes["rpc.system"], "grpc");
    assert_eq!(
        lookup_server.attributes["rpc.service"],
        "cpis.lookup.v1.LookupService"
    );
    assert_eq!(lookup_server.attributes["rpc.method"], "LookupChild");
    assert_eq!(lookup_server.attributes["rpc.grpc.status_code"], "0");
    assert_eq!(lookup_server.attributes["request_id"], "trace-test-1");

    // The registry call has no client span: a span of its own showed only the gap between
    // the two calls' spans and cost every lookup CPU.
    assert!(
        !trace.iter().any(|s| s.kind == "SPAN_KIND_CLIENT"),
        "no client span for the registry call"
    );
    for name in ["verify_token", "policy"] {
        assert!(
            one(&trace, "lookup-service", name).descends_from(lookup_server, &trace),
            "{name} under the lookup's call"
        );
    }

    // The registry's call span is the lookup's call span's child: one trace across both services.
    let registry_server = trace
        .iter()
        .find(|s| s.service == "registry-service" && s.kind == "SPAN_KIND_SERVER")
        .expect("the registry's call span in the caller's trace");
    assert_eq!(
        registry_server.name,
        "cpis.registry.v1.DisclosureService/Disclose"
    );
    assert_eq!(registry_server.parent_span_id, lookup_server.span_id);
    assert_eq!(registry_server.attributes["rpc.grpc.status_code"], "0");
    // The registry logs under the id the lookup passed on.
    assert_eq!(registry_server.attributes["request_id"], "trace-test-1");

    let transaction = one(&trace, "registry-service", "disclosure_transaction");
    assert!(transaction.descends_from(registry_server, &trace));
    let statements: u64 = transaction.attributes["db.statement_count"]
        .trim_matches('"')
        .parse()
        .expect("a statement count");
    assert!(
        statements >= 3,
        "a disclosure reads and writes: {statements}"
    );
    let outbox = one(&trace, "registry-service", "outbox_enqueue");
    assert!(outbox.descends_from(transaction, &trace));

    // Resource attributes: name (above), version and a per-process instance id.
    assert!(
        trace
            .iter()
            .all(|s| s.service == "lookup-service" || s.service == "registry-service")
    );
    for span in [lookup_server, registry_server] {
        assert_eq!(span.resource["service.version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(span.resource["service.instance.id"].len(), 32);
    }
    assert_ne!(
        lookup_server.resource["service.instance.id"],
        registry_server.resource["service.instance.id"]
    );

    // The lookup's JSON log lines name the trace and the span they were written in.
    let log = std::fs::read_to_string(&services.lookup_log).expect("lookup log");
    let answered = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "lookup answered")
        .unwrap_or_else(|| panic!("no 'lookup answered' line in:\n{log}"));
    assert_eq!(answered["trace_id"], CALLER_TRACE);
    let span_id = answered["span_id"].as_str().expect("span_id");
    assert!(
        trace
            .iter()
            .any(|s| s.span_id == span_id && s.service == "lookup-service"),
        "the line's span is one of the lookup's spans"
    );

    council_spans(services, &receiver).await;
}

/// A council's upload commits its chunk in a span under the upload's call, and its
/// subscription delivers the lookup's notification in a span under the subscription's call.
async fn council_spans(mut services: Services, receiver: &Receiver) {
    // A token the registry has not seen: its signature is checked (and spanned) in the upload;
    // a verified token is cached, and a cache hit has no span.
    let upload_token = services
        .council_signer
        .mint(
            &serde_json::json!({"sub": "AB1-uploader", "ods_code": "AB1", "scope": "read write"}),
            Duration::from_secs(600),
        )
        .expect("mint");
    let token = services.council_token.clone();
    let batch = vec![
        UploadBatchRequest {
            item: Some(Item::Header(BatchHeader {
                local_authority_ods_code: "AB1".into(),
                batch_id: "trace-batch-1".into(),
                sequence_number: 1,
                expected_record_count: 1,
            })),
        },
        UploadBatchRequest {
            item: Some(Item::Record(cpp(NHS_B))),
        },
    ];
    let mut upload = with_token(futures::stream::iter(batch), &upload_token);
    upload
        .metadata_mut()
        .insert("x-request-id", "trace-upload".parse().expect("ascii"));
    services
        .council
        .upload_batch(upload)
        .await
        .expect("uploaded");

    let mut subscribe = with_token(
        SubscribeNotificationsRequest {
            local_authority_ods_code: String::new(),
            after_sequence: Some(0),
        },
        &token,
    );
    subscribe
        .metadata_mut()
        .insert("x-request-id", "trace-subscribe".parse().expect("ascii"));
    let mut stream = services
        .council
        .subscribe_notifications(subscribe)
        .await
        .expect("subscribed")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a notification within 10 s")
        .expect("stream")
        .expect("a message");
    assert!(first.event.is_some());
    // The stream's call span ends (and is exported) when the stream does.
    drop(stream);

    let call = |spans: &[ExportedSpan], id: &str| {
        spans
            .iter()
            .find(|s| {
                s.kind == "SPAN_KIND_SERVER"
                    && s.attributes.get("request_id").map(String::as_str) == Some(id)
            })
            .cloned()
    };
    let spans = receiver
        .wait_for(Duration::from_secs(20), |spans| {
            call(spans, "trace-upload").is_some()
                && call(spans, "trace-subscribe").is_some()
                && spans.iter().any(|s| s.name == "upload_chunk_commit")
                && spans.iter().any(|s| s.name == "deliver_notification")
        })
        .await;
    let upload = call(&spans, "trace-upload").expect("the upload's call span");
    assert_eq!(upload.name, "cpis.registry.v1.CouncilService/UploadBatch");
    assert_eq!(upload.attributes["rpc.grpc.status_code"], "0");
    for (name, what) in [
        ("upload_chunk_commit", "a chunk commit"),
        ("verify_token", "the council's token verified"),
    ] {
        assert!(
            spans
                .iter()
                .any(|s| s.name == name && s.descends_from(&upload, &spans)),
            "{what} under the upload"
        );
    }
    let subscription = call(&spans, "trace-subscribe").expect("the subscription's call span");
    assert_eq!(
        subscription.name,
        "cpis.registry.v1.CouncilService/SubscribeNotifications"
    );
    assert!(
        spans
            .iter()
            .any(|s| s.name == "deliver_notification" && s.descends_from(&subscription, &spans)),
        "a delivery under the subscription"
    );
}

async fn malformed_traceparent(backend: Backend) {
    let Some(receiver) = Receiver::start() else {
        return;
    };
    let Some(db) = TestDb::create(backend) else {
        return;
    };
    let services = start_services(&db, &receiver.endpoint()).await;
    // Not hex, wrong lengths: ignored, never an error.
    lookup(&services, "00-not-a-trace-zz", "trace-test-malformed").await;
    // "Not sampled" and a trace state of the caller's: the lookup is traced all the same, in
    // the caller's trace, and the caller's text is not carried.
    let unsampled = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-00");
    lookup_with_state(
        &services,
        &unsampled,
        "planted=caller-text",
        "trace-test-unsampled",
    )
    .await;
    // A refusal before any answer (no token) records its status too (UNAUTHENTICATED, 16).
    let mut refused = tonic::Request::new(cpis_proto::cpis::lookup::v1::LookupChildRequest {
        nhs_number: NHS_A.into(),
        access_mode: cpis_proto::cpis::common::v1::AccessMode::Unscheduled as i32,
    });
    refused
        .metadata_mut()
        .insert("x-request-id", "trace-test-refused".parse().expect("ascii"));
    let status = LookupServiceClient::new(TestServer::attach(&services.lookup_url).channel().await)
        .lookup_child(refused)
        .await
        .expect_err("no token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    // A path no method has (a REST-minded client naming a child): UNIMPLEMENTED, and its span
    // is "unknown", never the path.
    let mut grpc =
        tonic::client::Grpc::new(TestServer::attach(&services.lookup_url).channel().await);
    grpc.ready().await.expect("ready");
    let mut stray = tonic::Request::new(());
    stray
        .metadata_mut()
        .insert("x-request-id", "trace-test-stray".parse().expect("ascii"));
    let stray = grpc
        .unary(
            stray,
            tonic::codegen::http::uri::PathAndQuery::from_static("/Patient/9990000026/CareTeam"),
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await
        .expect_err("no such method");
    assert_eq!(stray.code(), tonic::Code::Unimplemented);
    let with_id =
        |s: &ExportedSpan, id: &str| s.attributes.get("request_id").map(String::as_str) == Some(id);
    let spans = receiver
        .wait_for(Duration::from_secs(20), |spans| {
            spans
                .iter()
                .any(|s| with_id(s, "trace-test-malformed") && s.service == "registry-service")
                && spans.iter().any(|s| with_id(s, "trace-test-refused"))
                && spans.iter().any(|s| with_id(s, "trace-test-stray"))
        })
        .await;
    let stray = spans
        .iter()
        .find(|s| with_id(s, "trace-test-stray"))
        .expect("the stray call's span");
    assert_eq!(stray.name, "unknown");
    assert!(
        !format!("{stray:?}").contains("Patient") && !format!("{stray:?}").contains("9990000026"),
        "the stray path is not exported: {stray:?}"
    );
    let all = receiver
        .wait_for(Duration::from_secs(20), |spans| {
            spans
                .iter()
                .any(|s| with_id(s, "trace-test-unsampled") && s.service == "registry-service")
        })
        .await;
    let unsampled: Vec<&ExportedSpan> = all.iter().filter(|s| s.trace_id == CALLER_TRACE).collect();
    assert!(
        unsampled.iter().any(|s| s.service == "lookup-service")
            && unsampled.iter().any(|s| s.service == "registry-service"),
        "a caller's \"not sampled\" does not keep its lookup out of the traces"
    );
    assert!(
        all.iter().all(|s| !s.trace_state.contains("planted")),
        "a caller's tracestate is not exported"
    );
    let refused = spans
        .iter()
        .find(|s| with_id(s, "trace-test-refused"))
        .expect("the refused call's span");
    assert_eq!(refused.attributes["rpc.grpc.status_code"], "16");
    let lookup_server = spans
        .iter()
        .find(|s| {
            s.service == "lookup-service"
                && s.kind == "SPAN_KIND_SERVER"
                && s.attributes.get("request_id").map(String::as_str)
                    == Some("trace-test-malformed")
        })
        .expect("the lookup's call span");
    // A trace of its own: a root span with a fresh, valid trace id.
    assert!(lookup_server.parent_span_id.is_empty());
    assert_eq!(lookup_server.trace_id.len(), 32);
    assert_ne!(lookup_server.trace_id, "0".repeat(32));
    let registry_server = spans
        .iter()
        .find(|s| {
            s.service == "registry-service"
                && s.kind == "SPAN_KIND_SERVER"
                && s.attributes.get("request_id").map(String::as_str)
                    == Some("trace-test-malformed")
        })
        .expect("the registry's call span");
    assert_eq!(registry_server.trace_id, lookup_server.trace_id);
}

/// Spans for a collector that does not answer are dropped: lookups are served as usual, the
/// failure is logged (within a budget), and a clean stop still ends promptly (the last flush is
/// bounded).
async fn collector_down(backend: Backend) {
    let Some(db) = TestDb::create(backend) else {
        return;
    };
    // A port nothing listens on.
    let collector = format!("http://127.0.0.1:{}", cpis_testkit::server::free_port());
    let mut services = start_services(&db, &collector).await;
    for n in 0..3 {
        lookup(
            &services,
            &format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"),
            &format!("collector-down-{n}"),
        )
        .await;
    }
    // Past the batch delay, so exports have been tried and failed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = services
        .lookup_process
        .terminate(Duration::from_secs(10))
        .expect("the lookup service stops within 10 s");
    assert!(status.success(), "a clean stop: {status}");
    let log = std::fs::read_to_string(&services.lookup_log).expect("lookup log");
    let failures = log
        .lines()
        .filter(|l| l.contains("trace export failed"))
        .count();
    assert!(
        (1..=10).contains(&failures),
        "export failures logged, within the budget: {failures} lines in\n{log}"
    );
}
