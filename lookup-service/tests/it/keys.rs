//! NHS token keys that rotate and token lifetimes at the lookup service: a key published at
//! the JWKS URL after start is fetched when a token names it (no restart), and user tokens
//! valid for longer than an hour, or without `iat`, are refused.

use std::time::Duration;

use cpis_core::{auth::DevSigner, status::reason_of};
use cpis_proto::cpis::common::v1::ErrorReason;
use cpis_proto::cpis::lookup::v1::lookup_service_client::LookupServiceClient;
use cpis_testkit::{Stack, both_backends, db::Backend, jwks::JwksServer, stack::nhs_signer};
use registry_service::Clock;
use tonic::{Code, Status, transport::Channel};

use crate::harness::{NHS_A, cpp, ed_clinician, noon, start, unscheduled_lookup};

both_backends!(a_new_key_is_fetched_when_a_token_names_it, lifetimes);

/// An unscheduled lookup of NHS_A with `token`: Ok when the token is accepted.
async fn lookup(client: &LookupServiceClient<Channel>, token: &str) -> Result<(), Status> {
    client
        .clone()
        .lookup_child(unscheduled_lookup(NHS_A, token))
        .await
        .map(|_| ())
}

fn ed_token(signer: &DevSigner) -> String {
    signer
        .mint(&ed_clinician(), Duration::from_secs(600))
        .expect("mint")
}

fn assert_refused(result: Result<(), Status>, reason: ErrorReason, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    assert_eq!(reason_of(&status), Some(reason), "{what}: {status:?}");
}

async fn a_new_key_is_fetched_when_a_token_names_it(backend: Backend) {
    let (a, b) = (nhs_signer(), nhs_signer());
    let idp = JwksServer::start(&[&a]).await;
    let url = idp.url();
    let Some(stack) = Stack::builder(backend)
        .clock(Clock::fixed(noon(2026, 6, 15)))
        .lookup(move |config| {
            config.verifier = None;
            config.jwks_url = Some(url);
            // No periodic refresh during the test: B can only come from an unknown-kid fetch.
            config.jwks_refresh = Duration::from_secs(3600);
            config.jwks_min_refetch = Duration::ZERO;
        })
        .start()
        .await
    else {
        return;
    };
    stack.register_council("AB1").await;
    stack.put("AB1", cpp(NHS_A)).await;
    let client = stack.lookup_client().await;
    lookup(&client, &ed_token(&a)).await.expect("A is served");
    assert_refused(
        lookup(&client, &ed_token(&b)).await,
        ErrorReason::TokenInvalid,
        "B not served yet",
    );
    let fetches = idp.fetches();
    idp.serve(&[&a, &b]);
    lookup(&client, &ed_token(&b))
        .await
        .expect("B accepted once served, without restart");
    assert_eq!(idp.fetches(), fetches + 1, "one fetch, for B's key id");
}

async fn lifetimes(backend: Backend) {
    let Some(stack) = start(backend).await else {
        return;
    };
    stack.register_council("AB1").await;
    stack.put("AB1", cpp(NHS_A)).await;
    let client = stack.lookup_client().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let signed = |iat: Option<u64>, exp: u64| {
        let mut claims = ed_clinician();
        claims["iss"] = "cpis".into();
        claims["aud"] = "cpis-lookup".into();
        claims["exp"] = exp.into();
        if let Some(iat) = iat {
            claims["iat"] = iat.into();
        }
        stack.nhs_signer.sign(&claims).expect("sign")
    };
    lookup(&client, &signed(Some(now), now + 3600))
        .await
        .expect("an hour's user token is accepted");
    let refused = lookup(&client, &signed(Some(now), now + 2 * 3600))
        .await
        .expect_err("two hours");
    assert_eq!(
        reason_of(&refused),
        Some(ErrorReason::TokenLifetimeTooLong),
        "{refused:?}"
    );
    assert!(refused.message().contains("1h"), "{refused:?}");
    let refused = lookup(&client, &signed(None, now + 600))
        .await
        .expect_err("no iat");
    assert_eq!(reason_of(&refused), Some(ErrorReason::TokenInvalid));
    assert!(refused.message().contains("iat"), "{refused:?}");
    assert_eq!(
        stack.access_events("AB1", NHS_A).await,
        1,
        "only the accepted lookup is recorded"
    );
}
