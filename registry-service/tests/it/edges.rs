//! The edges of the transport, through the real server: an oversized message answers
//! RESOURCE_EXHAUSTED (MESSAGE_TOO_LARGE); a large token gets a gRPC status, never HTTP 431; the
//! Bearer scheme is matched without regard to case; an accessor's names need something visible
//! and no bidi controls; a connection that never sends the HTTP/2 preface, or carries no call,
//! is closed, while an open notification stream keeps its connection.

use std::time::{Duration, Instant};

use cpis_core::status::{reason_of, violated_fields};
use cpis_proto::cpis::common::v1::{AccessMode, ErrorReason, accessor::Kind};
use cpis_proto::cpis::registry::v1::{
    DiscloseRequest, GetContactDetailsRequest, UploadBatchRequest, upload_batch_request::Item,
};
use cpis_testkit::{both_backends, db::Backend};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::{Code, Request};

use crate::harness::{
    batch, cpp_record, disclose, ed_clinician, next_sequence, nhs, stack, start, subscribe,
    with_token,
};

both_backends!(
    oversized_messages_are_resource_exhausted,
    large_tokens_get_a_grpc_status,
    bearer_is_case_insensitive,
    accessor_names_need_something_visible,
    silent_and_idle_connections_are_closed,
);

async fn oversized_messages_are_resource_exhausted(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    reg.register_council("LA1").await;
    let mut client = reg.council().await;
    let mut huge = cpp_record(&nhs(0));
    huge.given_name = "G".repeat(5 << 20);

    let unary = reg
        .try_put("LA1", huge.clone())
        .await
        .expect_err("too large");
    let mut streamed = batch("big-1", vec![cpp_record(&nhs(1))]);
    streamed.push(UploadBatchRequest {
        item: Some(Item::Record(huge)),
    });
    let stream = client
        .upload_batch(reg.as_council("LA1", tokio_stream::iter(streamed)))
        .await
        .expect_err("too large");
    for status in [unary, stream] {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert_eq!(reason_of(&status), Some(ErrorReason::MessageTooLarge));
        assert!(status.message().contains("limit is"), "{status:?}");
    }
    // The connection still serves.
    client
        .get_contact_details(reg.as_council("LA1", GetContactDetailsRequest::default()))
        .await
        .expect("still serving");
}

fn padded_token(reg: &cpis_testkit::Stack, padding: usize) -> String {
    reg.council_signer
        .mint(
            &serde_json::json!({
                "sub": "LA1-system", "ods_code": "LA1", "scope": "read",
                "padding": "p".repeat(padding),
            }),
            Duration::from_secs(600),
        )
        .unwrap()
}

async fn large_tokens_get_a_grpc_status(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    reg.register_council("LA1").await;
    let mut client = reg.council().await;
    let ask = |token: &str| with_token(GetContactDetailsRequest::default(), token);

    // 20 KB: over hyper's default header limit (16 KiB), well within ours: accepted.
    let big = padded_token(&reg, 15_000);
    assert!(big.len() > 20_000, "{}", big.len());
    client
        .get_contact_details(ask(&big))
        .await
        .expect("a 20 KB token is read");

    // 40 KB: read, and refused in words.
    let too_big = padded_token(&reg, 30_000);
    assert!(too_big.len() > cpis_core::limits::MAX_TOKEN_BYTES);
    let refused = client
        .get_contact_details(ask(&too_big))
        .await
        .expect_err("too long");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert_eq!(reason_of(&refused), Some(ErrorReason::TokenInvalid));
    assert!(refused.message().contains("too long"), "{refused:?}");
    client
        .get_contact_details(ask(&big))
        .await
        .expect("the connection still serves");
}

async fn bearer_is_case_insensitive(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    reg.register_council("LA1").await;
    let mut council = reg.council().await;
    let token = reg.council_token("LA1", "read");
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let mut request = Request::new(GetContactDetailsRequest::default());
        request.metadata_mut().insert(
            "authorization",
            format!("{scheme} {token}").parse().unwrap(),
        );
        council
            .get_contact_details(request)
            .await
            .unwrap_or_else(|e| panic!("{scheme}: {e:?}"));
    }
    for not_bearer in [format!("Basic {token}"), format!("Bearer{token}"), token] {
        let mut request = Request::new(GetContactDetailsRequest::default());
        request
            .metadata_mut()
            .insert("authorization", not_bearer.parse().unwrap());
        let refused = council
            .get_contact_details(request)
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    }
}

async fn accessor_names_need_something_visible(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    let mut disclosure = reg.disclosure().await;
    for name in [
        "\u{200b}\u{200c}\u{200d}\u{2060}\u{feff}",
        "   ",
        "Dr \u{202e}tseT",
        "\u{2067}Dr Test\u{2069}",
    ] {
        let mut accessor = ed_clinician("555000000001");
        if let Some(Kind::Person(person)) = accessor.kind.as_mut() {
            person.name = name.into();
        }
        let refused = disclosure
            .disclose(DiscloseRequest {
                nhs_number: nhs(0),
                accessor: Some(accessor),
                access_mode: AccessMode::Unscheduled as i32,
                request_id: String::new(),
            })
            .await
            .expect_err("refused");
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{name:?}: {refused:?}"
        );
        assert_eq!(
            reason_of(&refused),
            Some(ErrorReason::FieldFormat),
            "{name:?}"
        );
        assert_eq!(
            violated_fields(&refused),
            ["accessor.person.name"],
            "{name:?}"
        );
    }
}

/// Reads until the server closes the connection; how long that took (None: still open at
/// `limit`).
pub(crate) async fn closed_within(
    stream: &mut tokio::net::TcpStream,
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let mut buffer = [0_u8; 1024];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

async fn silent_and_idle_connections_are_closed(backend: Backend) {
    let Some(reg) = stack(backend)
        .registry(|c| {
            c.server.handshake_timeout = Duration::from_millis(500);
            c.server.idle_timeout = Duration::from_secs(2);
        })
        .start()
        .await
    else {
        return;
    };
    let addr = reg.registry.addr;

    // Connects and says nothing: closed at the handshake timeout.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let took = closed_within(&mut silent, Duration::from_secs(5))
        .await
        .expect("a silent connection is closed");
    assert!(took >= Duration::from_millis(400), "{took:?}");

    // Trickles part of the preface: the deadline does not move.
    let mut trickle = tokio::net::TcpStream::connect(addr).await.unwrap();
    trickle.write_all(b"PRI * HTTP/2.0").await.unwrap();
    closed_within(&mut trickle, Duration::from_secs(5))
        .await
        .expect("a half preface is closed");

    // Says hello (preface and SETTINGS) and then nothing: closed at the idle timeout (plus the
    // quiet second that protects a call whose first frames were just read).
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let took = closed_within(&mut idle, Duration::from_secs(10))
        .await
        .expect("an idle connection is closed");
    assert!(took >= Duration::from_millis(1900), "{took:?}");

    // A notification stream open longer than the idle timeout keeps its connection, and hears.
    reg.register_council("LA1").await;
    reg.put("LA1", cpp_record(&nhs(0))).await;
    let mut stream = subscribe(&reg, "LA1", None).await.expect("subscribe");
    tokio::time::sleep(Duration::from_secs(4)).await;
    disclose(&reg, &nhs(0), AccessMode::Unscheduled).await;
    let heard = next_sequence(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(heard.sequence, 1);
}
