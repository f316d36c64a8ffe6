//! The lookup service's edges, through the real stack: its request id is echoed, logged on its
//! own lines and on the registry's for the same disclosure; an oversized message answers
//! RESOURCE_EXHAUSTED; large tokens get a gRPC status; `BEARER` is a Bearer scheme; a name claim
//! with nothing visible or with bidi controls is a malformed token.

use cpis_core::status::reason_of;
use cpis_proto::cpis::common::v1::{AccessMode, ErrorReason};
use cpis_proto::cpis::lookup::v1::LookupChildRequest;
use cpis_testkit::logs::span_request_ids;
use cpis_testkit::{both_backends, db::Backend, logs};
use serde_json::{Value, json};
use tonic::{Code, Request};

use crate::harness::{NHS_A, cpp, ed_clinician, person_named, start, with_token};

both_backends!(
    request_ids_follow_a_lookup_into_the_registry,
    oversized_lookups_are_resource_exhausted,
    large_tokens_and_bearer_case,
    name_claims_need_something_visible,
);

fn lookup(nhs: &str, token: &str) -> Request<LookupChildRequest> {
    with_token(
        LookupChildRequest {
            nhs_number: nhs.into(),
            access_mode: AccessMode::Unscheduled as i32,
        },
        token,
    )
}

use cpis_testkit::server::echoed_request_id as echoed;

/// The JSON line with `message` logged under request id `id` (waiting for it: lines are written
/// after the answer may have left).
async fn logged(captured: &logs::Captured, id: &str, message: &str) -> Value {
    let what = format!("{message:?} under request id {id}");
    captured
        .wait_for(&what, |captured| {
            captured
                .json_lines_with(id)
                .iter()
                .map(|l| serde_json::from_str::<Value>(l).expect("one JSON object per line"))
                .find(|l| l["message"] == message)
        })
        .await
}

async fn request_ids_follow_a_lookup_into_the_registry(backend: Backend) {
    let captured = logs::capture();
    let Some(stack) = start(backend).await else {
        return;
    };
    stack.register_council("AB1").await;
    stack.put("AB1", cpp(NHS_A)).await;
    let token = stack.nhs_token(&ed_clinician());
    let mut client = stack.lookup_client().await;

    // The EPR's id: echoed, on the lookup's line and on the registry's line for the disclosure.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let id = format!("epr-{nanos}");
    let mut request = lookup(NHS_A, &token);
    request
        .metadata_mut()
        .insert("x-request-id", id.parse().unwrap());
    let answer = client.lookup_child(request).await.expect("answered");
    assert_eq!(echoed(answer.metadata()), id);
    let answered = logged(&captured, &id, "lookup answered").await;
    assert_eq!(span_request_ids(&answered), [id.as_str()]);
    let disclosed = logged(&captured, &id, "disclosed").await;
    assert_eq!(span_request_ids(&disclosed), [id.as_str()]);

    // None sent: the generated one travels the same way.
    let answer = client
        .lookup_child(lookup(NHS_A, &token))
        .await
        .expect("answered");
    let generated = echoed(answer.metadata());
    assert_eq!(generated.len(), 32, "{generated}");
    logged(&captured, &generated, "lookup answered").await;
    logged(&captured, &generated, "disclosed").await;

    // Malformed: refused as the contract says, and the refusal names the id it was logged under.
    let mut request = lookup(NHS_A, &token);
    request
        .metadata_mut()
        .insert("x-request-id", "two words".parse().unwrap());
    let refused = client.lookup_child(request).await.expect_err("malformed");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let replaced = echoed(refused.metadata());
    assert_eq!(replaced.len(), 32, "{replaced}");
}

async fn oversized_lookups_are_resource_exhausted(backend: Backend) {
    let Some(stack) = start(backend).await else {
        return;
    };
    let token = stack.nhs_token(&ed_clinician());
    let refused = stack
        .lookup_client()
        .await
        .lookup_child(lookup(&"9".repeat(5 << 20), &token))
        .await
        .expect_err("too large");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(reason_of(&refused), Some(ErrorReason::MessageTooLarge));
}

async fn large_tokens_and_bearer_case(backend: Backend) {
    let Some(stack) = start(backend).await else {
        return;
    };
    let mut client = stack.lookup_client().await;
    let padded = |bytes: usize| {
        let mut claims = ed_clinician();
        claims["padding"] = json!("p".repeat(bytes));
        stack.nhs_token(&claims)
    };
    client
        .lookup_child(lookup(NHS_A, &padded(15_000)))
        .await
        .expect("a 20 KB token is read");
    let refused = client
        .lookup_child(lookup(NHS_A, &padded(30_000)))
        .await
        .expect_err("too long");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert_eq!(reason_of(&refused), Some(ErrorReason::TokenInvalid));
    assert!(refused.message().contains("too long"), "{refused:?}");

    let token = stack.nhs_token(&ed_clinician());
    for scheme in ["BEARER", "bearer", "Bearer"] {
        let mut request = Request::new(LookupChildRequest {
            nhs_number: NHS_A.into(),
            access_mode: AccessMode::Unscheduled as i32,
        });
        request.metadata_mut().insert(
            "authorization",
            format!("{scheme} {token}").parse().unwrap(),
        );
        client
            .lookup_child(request)
            .await
            .unwrap_or_else(|e| panic!("{scheme}: {e:?}"));
    }
}

async fn name_claims_need_something_visible(backend: Backend) {
    let Some(stack) = start(backend).await else {
        return;
    };
    for name in ["\u{200b}\u{200d}\u{feff}", "Dr \u{202e}tseT", " "] {
        let claims = person_named(
            "555000000001",
            name,
            &["B0107"],
            "RXX01",
            "EMERGENCY_DEPARTMENT",
        );
        let refused = stack
            .lookup(&claims, NHS_A, AccessMode::Unscheduled)
            .await
            .expect_err("malformed name");
        assert_eq!(
            refused.code(),
            Code::Unauthenticated,
            "{name:?}: {refused:?}"
        );
        assert_eq!(reason_of(&refused), Some(ErrorReason::TokenInvalid));
        assert!(refused.message().contains("claim name"), "{refused:?}");
    }
}
