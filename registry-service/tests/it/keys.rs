//! Token keys that rotate and token lifetimes: keys served at a JWKS URL (a real HTTP server on
//! loopback) and in a file are picked up without restart, a removed key stops its tokens even
//! when they were verified (and cached) before, a flood of unknown key ids makes a bounded
//! number of fetches, a service without keys does not start, and tokens without `iat` or with a
//! lifetime over the maximum are refused.

use std::time::{Duration, Instant};

use cpis_core::{auth::DevSigner, status::reason_of};
use cpis_proto::cpis::common::v1::{ErrorReason, LocalAuthority};
use cpis_proto::cpis::registry::v1::{
    SetContactDetailsRequest, council_service_client::CouncilServiceClient,
};
use cpis_testkit::{
    Stack, TestServer, both_backends,
    db::{Backend, TestDb},
    jwks::{JwksServer, jwks_of},
};
use tonic::{Code, Status, transport::Channel};

use crate::harness::{signer, stack, with_token};

both_backends!(
    keys_rotate_at_the_url,
    unknown_key_flood_is_rate_limited,
    keys_reload_from_the_file,
    no_keys_no_start,
    lifetimes,
);

/// A council token of LA1 signed by `signer`, valid ten minutes.
fn token(signer: &DevSigner) -> String {
    signer
        .mint(
            &serde_json::json!({"sub": "LA1-system", "ods_code": "LA1", "scope": "read write"}),
            Duration::from_secs(600),
        )
        .expect("mint")
}

/// A write as LA1 with `token`: Ok when the registry accepts the token.
async fn call(client: &CouncilServiceClient<Channel>, token: &str) -> Result<(), Status> {
    client
        .clone()
        .set_contact_details(with_token(
            SetContactDetailsRequest {
                local_authority: Some(LocalAuthority {
                    name: "Council LA1".into(),
                    emergency_duty_phone: "020 7946 0000".into(),
                    ..Default::default()
                }),
            },
            token,
        ))
        .await
        .map(|_| ())
}

fn assert_refused(result: Result<(), Status>, reason: ErrorReason, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    assert_eq!(reason_of(&status), Some(reason), "{what}: {status:?}");
}

/// Calls until the registry refuses `token` (a background refresh is due), at most 10 s.
async fn until_refused(client: &CouncilServiceClient<Channel>, token: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match call(client, token).await {
            Err(status) if status.code() == Code::Unauthenticated => {
                assert_eq!(
                    reason_of(&status),
                    Some(ErrorReason::TokenInvalid),
                    "{what}"
                );
                return;
            }
            result => assert!(Instant::now() < deadline, "{what}: still {result:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A registry whose keys come from `url` (nothing injected).
async fn start_with_url(
    backend: Backend,
    url: String,
    refresh: Duration,
    min_refetch: Duration,
) -> Option<Stack> {
    stack(backend)
        .registry(move |config| {
            config.verifier = None;
            config.jwks_url = Some(url);
            config.jwks_refresh = refresh;
            config.jwks_min_refetch = min_refetch;
        })
        .start()
        .await
}

async fn keys_rotate_at_the_url(backend: Backend) {
    let (a, b) = (signer(), signer());
    let idp = JwksServer::start(&[&a]).await;
    let Some(reg) = start_with_url(
        backend,
        idp.url(),
        Duration::from_millis(300),
        Duration::ZERO,
    )
    .await
    else {
        return;
    };
    let client = reg.council().await;
    let (token_a, token_b) = (token(&a), token(&b));
    call(&client, &token_a).await.expect("A is served");
    assert_refused(
        call(&client, &token_b).await,
        ErrorReason::TokenInvalid,
        "B is not served yet",
    );

    idp.serve(&[&a, &b]);
    call(&client, &token_b)
        .await
        .expect("B accepted once served, without restart");
    call(&client, &token_a).await.expect("A still served");

    // A is withdrawn: its token, verified (and cached) a moment ago, is refused from the next
    // refresh on.
    idp.serve(&[&b]);
    until_refused(&client, &token_a, "A withdrawn").await;
    call(&client, &token_b).await.expect("B still accepted");

    // The IdP fails: the last good keys stay in use.
    idp.fail(hyper::StatusCode::SERVICE_UNAVAILABLE);
    let fetches = idp.fetches();
    while idp.fetches() < fetches + 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    call(&client, &token_b)
        .await
        .expect("B still accepted while the IdP fails");
}

async fn unknown_key_flood_is_rate_limited(backend: Backend) {
    let a = signer();
    let idp = JwksServer::start(&[&a]).await;
    let min_refetch = Duration::from_secs(3);
    // No periodic refresh during the test: every fetch after the first is an unknown kid's.
    let Some(reg) =
        start_with_url(backend, idp.url(), Duration::from_secs(3600), min_refetch).await
    else {
        return;
    };
    assert_eq!(idp.fetches(), 1, "one fetch at start");
    let client = reg.council().await;

    let started = Instant::now();
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..100 {
        let forged = token(&a.clone().with_key_id(Some(&format!("random-{i}"))));
        let client = client.clone();
        flood.spawn(async move { call(&client, &forged).await });
    }
    while let Some(result) = flood.join_next().await {
        assert_refused(
            result.expect("join"),
            ErrorReason::TokenInvalid,
            "unknown key id",
        );
    }
    let elapsed = started.elapsed();
    let fetched = idp.fetches() - 1;
    let allowed = 1 + (elapsed.as_secs_f64() / min_refetch.as_secs_f64()) as usize;
    assert!(
        (1..=allowed).contains(&fetched),
        "100 unknown key ids in {elapsed:?} made {fetched} fetches (allowed {allowed})"
    );

    // A key published since is found by the next unknown-kid fetch once the period is over.
    let b = signer();
    idp.serve(&[&a, &b]);
    tokio::time::sleep(min_refetch).await;
    call(&client, &token(&b))
        .await
        .expect("B found by an unknown-kid fetch");
    assert_eq!(idp.fetches(), 1 + fetched + 1);
}

/// Replaces `path` at once (as a Kubernetes ConfigMap update does), never half-written.
fn publish(path: &std::path::Path, bytes: &[u8]) {
    let next = path.with_extension("next");
    std::fs::write(&next, bytes).expect("write JWKS");
    std::fs::rename(&next, path).expect("rename JWKS");
}

async fn keys_reload_from_the_file(backend: Backend) {
    let (a, b) = (signer(), signer());
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("jwks.json");
    publish(&path, &jwks_of(&[&a]));
    let file = path.clone();
    let Some(reg) = stack(backend)
        .registry(move |config| {
            config.verifier = None;
            config.jwks_file = Some(file);
            config.jwks_min_refetch = Duration::ZERO;
        })
        .start()
        .await
    else {
        return;
    };
    let client = reg.council().await;
    let (token_a, token_b) = (token(&a), token(&b));
    call(&client, &token_a).await.expect("A in the file");
    assert_refused(
        call(&client, &token_b).await,
        ErrorReason::TokenInvalid,
        "B not in the file yet",
    );

    publish(&path, &jwks_of(&[&a, &b]));
    call(&client, &token_b)
        .await
        .expect("B accepted once in the file, without restart");

    publish(&path, &jwks_of(&[&b]));
    until_refused(&client, &token_a, "A removed from the file").await;
    call(&client, &token_b).await.expect("B still accepted");

    // A broken file leaves the last good keys in use.
    publish(&path, b"{ not a key set");
    tokio::time::sleep(cpis_core::keys::FILE_POLL * 2).await;
    call(&client, &token_b)
        .await
        .expect("B still accepted after a broken file");
}

async fn no_keys_no_start(backend: Backend) {
    let Some(db) = TestDb::create(backend) else {
        return;
    };
    let idp = JwksServer::start(&[]).await;
    let pki = cpis_testkit::pki::TestPki::new("keys");
    let listeners = || async {
        let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
        registry_service::Listeners {
            public: bind().await.expect("bind"),
            internal: bind().await.expect("bind"),
            admin: None,
        }
    };
    let cases = [
        (Some(idp.url()), "no token keys could be loaded"),
        (
            Some("http://idp.example/jwks".to_owned()),
            "http is allowed only on loopback",
        ),
        (None, "no token keys: set --jwks-file"),
    ];
    for (url, expected) in cases {
        let mut config = cpis_testkit::stack::registry_config(&db, &signer(), &pki);
        config.verifier = None;
        config.jwks_url = url;
        let error = tokio::time::timeout(
            Duration::from_secs(20),
            registry_service::serve(config, listeners().await, std::future::pending()),
        )
        .await
        .expect("serve ends at once")
        .expect_err("a registry without keys does not start");
        assert!(error.to_string().contains(expected), "{error}");
    }
    // The endpoint answering errors: the same.
    idp.fail(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let mut config = cpis_testkit::stack::registry_config(&db, &signer(), &pki);
    config.verifier = None;
    config.jwks_url = Some(idp.url());
    let error = registry_service::serve(config, listeners().await, std::future::pending())
        .await
        .expect_err("no start");
    assert!(error.to_string().contains("HTTP 500"), "{error}");
}

async fn lifetimes(backend: Backend) {
    let Some(reg) = crate::harness::start(backend).await else {
        return;
    };
    let client = reg.council().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let signed = |iat: Option<u64>, exp: u64| {
        let mut claims = serde_json::json!({
            "iss": "cpis", "aud": "cpis-registry", "exp": exp,
            "sub": "LA1-system", "ods_code": "LA1", "scope": "read write",
        });
        if let Some(iat) = iat {
            claims["iat"] = iat.into();
        }
        reg.council_signer.sign(&claims).expect("sign")
    };
    let hour = 3600;
    call(&client, &signed(Some(now), now + 23 * hour))
        .await
        .expect("a day's token (the registry's default maximum) is accepted");
    assert_refused(
        call(&client, &signed(Some(now), now + 25 * hour)).await,
        ErrorReason::TokenLifetimeTooLong,
        "lifetime over 24 h",
    );
    // Issued an hour ago for 25 hours: still too long, however little is left.
    assert_refused(
        call(&client, &signed(Some(now - hour), now + 24 * hour)).await,
        ErrorReason::TokenLifetimeTooLong,
        "lifetime over 24 h, partly used",
    );
    let no_iat = signed(None, now + 60);
    let refused = call(&client, &no_iat).await.expect_err("no iat");
    assert_eq!(
        reason_of(&refused),
        Some(ErrorReason::TokenInvalid),
        "{refused:?}"
    );
    assert!(refused.message().contains("iat"), "{refused:?}");
    assert_refused(
        call(&client, &signed(Some(now + hour), now + 2 * hour)).await,
        ErrorReason::TokenExpired,
        "issued in the future",
    );

    // Configured: ten minutes at most, iat optional.
    let strict_server: TestServer = reg
        .another_registry(|config| {
            config.token_max_lifetime = Duration::from_secs(600);
            config.token_require_iat = false;
        })
        .await;
    let strict = CouncilServiceClient::new(strict_server.channel().await);
    call(&strict, &no_iat)
        .await
        .expect("no iat, a minute left: accepted when iat is optional");
    assert_refused(
        call(&strict, &signed(None, now + hour)).await,
        ErrorReason::TokenLifetimeTooLong,
        "no iat, an hour left",
    );
    assert_refused(
        call(&strict, &signed(Some(now), now + hour)).await,
        ErrorReason::TokenLifetimeTooLong,
        "an hour's token over a ten-minute maximum",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_over_https_from_an_idp_with_a_private_ca() {
    let idp_pki = cpis_testkit::pki::TestPki::new("idp");
    let a = signer();
    let idp = JwksServer::start_tls(&[&a], &idp_pki).await;
    assert!(idp.url().starts_with("https://"));

    // Not trusting the IdP's CA: the fetch fails verification, and the registry does not start.
    let db = TestDb::create(Backend::Sqlite).expect("sqlite");
    let pki = cpis_testkit::pki::TestPki::new("keys");
    let mut config = cpis_testkit::stack::registry_config(&db, &signer(), &pki);
    config.verifier = None;
    config.jwks_url = Some(idp.url());
    let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
    let listeners = registry_service::Listeners {
        public: bind().await.expect("bind"),
        internal: bind().await.expect("bind"),
        admin: None,
    };
    let error = tokio::time::timeout(
        Duration::from_secs(20),
        registry_service::serve(config, listeners, std::future::pending()),
    )
    .await
    .expect("serve ends at once")
    .expect_err("an untrusted IdP gives no keys");
    assert!(
        error.to_string().contains("no token keys could be loaded"),
        "{error}"
    );

    // Told to trust it (--jwks-ca): its keys are served over https.
    let ca = idp_pki.ca_path().to_owned();
    let url = idp.url();
    let reg = stack(Backend::Sqlite)
        .registry(move |config| {
            config.verifier = None;
            config.jwks_url = Some(url);
            config.jwks_ca = Some(ca);
        })
        .start()
        .await
        .expect("sqlite");
    let client = reg.council().await;
    call(&client, &token(&a))
        .await
        .expect("a key fetched over https");
    assert!(idp.fetches() >= 1);
}

/// Tokens naming made-up keys while the identity provider is slow: each is refused within the
/// short wait for a load (never a whole fetch), so they cannot hold the server's slots, and a
/// genuine token (its key cached) is served at once throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_identity_provider_does_not_hold_calls() {
    let a = signer();
    let idp = JwksServer::start(&[&a]).await;
    let reg = start_with_url(
        Backend::Sqlite,
        idp.url(),
        Duration::from_secs(3600),
        Duration::ZERO,
    )
    .await
    .expect("sqlite");
    let client = reg.council().await;
    idp.stall(Duration::from_secs(4));
    let started = Instant::now();
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..10 {
        let forged = token(&a.clone().with_key_id(Some(&format!("made-up-{i}"))));
        let client = client.clone();
        flood.spawn(async move {
            let started = Instant::now();
            (call(&client, &forged).await, started.elapsed())
        });
    }
    let genuine = Instant::now();
    call(&client, &token(&a))
        .await
        .expect("a genuine token while the IdP stalls");
    assert!(
        genuine.elapsed() < Duration::from_secs(2),
        "{:?}",
        genuine.elapsed()
    );
    while let Some(result) = flood.join_next().await {
        let (answer, took) = result.expect("join");
        assert_refused(answer, ErrorReason::TokenInvalid, "unknown key id");
        assert!(
            took < Duration::from_secs(2),
            "a forged token held a call {took:?}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}
