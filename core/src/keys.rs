//! Token signing keys that rotate: a [`KeySet`] parsed from a JWKS, and the [`KeyStore`] that
//! keeps the current set fresh from its [`KeySource`] (a file re-read when it changes, or an
//! https URL fetched periodically and at once when a token names an unknown key, rate-limited).
//! A failed refresh keeps the last good keys; a service never starts without keys.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, RwLock, Weak},
    time::{Duration, Instant, SystemTime},
};

use http_body_util::BodyExt as _;
use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, Jwk, JwkSet, KeyAlgorithm, ThumbprintHash},
};

use crate::auth::KeyConfigError;

/// The largest JWKS accepted from a file or a URL: a real key set is a few KiB.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// How often a JWKS file's modification time and size are checked.
pub const FILE_POLL: Duration = Duration::from_secs(2);
/// The longest one JWKS fetch (connect, TLS, answer and body) may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// One usable public key.
#[derive(Clone)]
pub(crate) struct VerifyingKey {
    pub key: DecodingKey,
    pub algorithm: Algorithm,
}

/// The keys in effect at one moment, by key id: the JWK's `kid`, or for a key without one its
/// RFC 7638 SHA-256 thumbprint (base64url), so a token can name either.
#[derive(Clone)]
pub struct KeySet {
    keys: HashMap<String, VerifyingKey>,
    /// What identifies the set's content (ids and thumbprints, sorted): a refresh that brings
    /// the same keys changes nothing (the verified-token cache survives it).
    fingerprint: Vec<(String, String)>,
    /// Bumped whenever the content changes; cached verifications name the generation they
    /// were made under.
    pub(crate) generation: u64,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("ids", &self.ids())
            .field("generation", &self.generation)
            .finish()
    }
}

impl KeySet {
    /// The usable ES256/RS256 keys of `set` (others, such as HMAC or EdDSA keys, are skipped);
    /// refused when none is usable.
    pub fn from_jwks(set: &JwkSet) -> Result<Self, KeyConfigError> {
        let mut keys = HashMap::new();
        let mut fingerprint = Vec::new();
        for jwk in &set.keys {
            let Some(algorithm) = algorithm_of(jwk) else {
                continue;
            };
            let (Ok(key), Ok(thumbprint)) = (
                DecodingKey::from_jwk(jwk),
                jwk.thumbprint(ThumbprintHash::SHA256),
            ) else {
                continue;
            };
            let id = jwk
                .common
                .key_id
                .clone()
                .unwrap_or_else(|| thumbprint.clone());
            // The first key of an id wins: a set naming one id twice is the IdP's mistake, and
            // accepting either key for it would let the wrong one verify.
            if keys.contains_key(&id) {
                tracing::warn!(kid = %crate::text::LogSafe(&id), "JWKS names a key id twice: the first key is used");
                continue;
            }
            fingerprint.push((id.clone(), thumbprint));
            keys.insert(id, VerifyingKey { key, algorithm });
        }
        if keys.is_empty() {
            return Err(KeyConfigError::NoKeys);
        }
        fingerprint.sort();
        Ok(Self {
            keys,
            fingerprint,
            generation: 0,
        })
    }

    /// Parses a JWKS document.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        Self::from_jwks(&set).map_err(|e| e.to_string())
    }

    /// The key ids, sorted (for logs: public identifiers, not secrets).
    pub fn ids(&self) -> Vec<&str> {
        self.fingerprint.iter().map(|(id, _)| id.as_str()).collect()
    }

    /// The key a token names. A token without `kid` is accepted only while the set holds
    /// exactly one key: with several, which one signed it would be a guess (and trying each
    /// multiplies the signature checks an attacker can make us do per token).
    pub(crate) fn find(&self, kid: Option<&str>) -> Option<&VerifyingKey> {
        match kid {
            Some(kid) => self.keys.get(kid),
            None if self.keys.len() == 1 => self.keys.values().next(),
            None => None,
        }
    }

    /// Whether a token naming `kid` has a key here (a token without one is not "unknown":
    /// fetching again would not tell which key it means).
    pub(crate) fn knows(&self, kid: Option<&str>) -> bool {
        kid.is_none_or(|kid| self.keys.contains_key(kid))
    }
}

/// The RFC 7638 SHA-256 thumbprint of a JWK (base64url without padding).
pub fn thumbprint(jwk: &Jwk) -> Result<String, KeyConfigError> {
    jwk.thumbprint(ThumbprintHash::SHA256)
        .map_err(|e| KeyConfigError::Key(e.to_string()))
}

/// The algorithm a key verifies: ES256 for a P-256 key, RS256 for an RSA key, and only that
/// one. A key whose declared `alg` does not fit its type (an "ES256" RSA key, an EC key on
/// another curve) is the publisher's mistake and is skipped, not guessed at; other algorithms
/// (HMAC shared secrets, EdDSA) are not accepted here.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    use jsonwebtoken::jwk::EllipticCurve;
    let fits = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(fits),
        Some(KeyAlgorithm::ES256) if fits == Algorithm::ES256 => Some(fits),
        Some(KeyAlgorithm::RS256) if fits == Algorithm::RS256 => Some(fits),
        Some(_) => None,
    }
}

/// The longest a call whose token names an unknown key waits for the keys to be loaded again
/// (see [`KeyStore::refresh_for_unknown`]): an identity provider answers well within it.
pub const UNKNOWN_KID_WAIT: Duration = Duration::from_millis(500);

/// Where the keys come from.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// A JWKS file, re-read when its modification time or size changes.
    File(PathBuf),
    /// A JWKS URL: https, or http on a loopback address only.
    Url(JwksUrl),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "JWKS file {}", path.display()),
            Self::Url(url) => write!(f, "JWKS URL {}", url.0),
        }
    }
}

/// A checked JWKS URL, and the CA file its server is verified against beside the Mozilla roots
/// (an identity provider with a private CA).
#[derive(Clone, Debug)]
pub struct JwksUrl(http::Uri, Option<PathBuf>);

impl JwksUrl {
    /// Accepts https, and http only for a loopback host (a test or a sidecar on the same
    /// machine): keys fetched in the clear from elsewhere could be swapped by anyone on the
    /// path, and with them every identity.
    pub fn parse(text: &str) -> Result<Self, String> {
        let uri: http::Uri = text
            .parse()
            .map_err(|e| format!("JWKS URL {text:?} is not a URL: {e}"))?;
        let host = uri
            .host()
            .ok_or_else(|| format!("JWKS URL {text:?} names no host"))?;
        match uri.scheme_str() {
            Some("https") => Ok(Self(uri, None)),
            Some("http") if is_loopback(host) => Ok(Self(uri, None)),
            Some("http") => Err(format!(
                "JWKS URL {text:?}: http is allowed only on loopback; use https"
            )),
            _ => Err(format!("JWKS URL {text:?} must be https")),
        }
    }
}

impl JwksUrl {
    /// Also trusts the CA(s) in `ca` for this URL's server.
    pub fn trusting(mut self, ca: Option<&std::path::Path>) -> Self {
        self.1 = ca.map(ToOwned::to_owned);
        self
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// How a [`KeyStore`] with a URL source refreshes.
#[derive(Clone, Copy, Debug)]
pub struct RefreshPolicy {
    /// How often the URL is fetched again regardless of tokens (a file is polled every
    /// [`FILE_POLL`]).
    pub interval: Duration,
    /// The least time between two fetches a token with an unknown key id may cause: a flood of
    /// tokens naming random key ids makes at most one fetch per this period.
    pub min_refetch: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(300),
            min_refetch: Duration::from_secs(10),
        }
    }
}

/// The live key set of a verifier, and how it is refreshed.
pub(crate) struct KeyStore {
    current: RwLock<Arc<KeySet>>,
    /// `None`: fixed keys (tests, the dev stack, an in-memory set).
    source: Option<Loader>,
}

struct Loader {
    source: KeySource,
    policy: RefreshPolicy,
    http: HttpClient,
    /// Serialises loads (a token flood waits for the one fetch in flight rather than starting
    /// its own) and remembers when the last unknown-kid load started and what the file looked
    /// like.
    state: tokio::sync::Mutex<LoadState>,
}

/// What identifies a file's version without reading it: modification time and size.
type FileStamp = (SystemTime, u64);

#[derive(Default)]
struct LoadState {
    /// When a token with an unknown key id last caused a load (periodic loads do not count:
    /// they are already spaced, and a file's frequent polls must not starve unknown-kid loads).
    last_attempt: Option<Instant>,
    file_stamp: Option<FileStamp>,
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Empty<hyper::body::Bytes>,
>;

impl KeyStore {
    /// A store that never changes.
    pub fn fixed(keys: KeySet) -> Self {
        Self {
            current: RwLock::new(Arc::new(keys)),
            source: None,
        }
    }

    /// Loads the first key set from `source` (an error when it cannot: a service must not
    /// start unable to authenticate anyone) and starts refreshing it in the background for
    /// as long as the store lives.
    pub async fn load(source: KeySource, policy: RefreshPolicy) -> Result<Arc<Self>, String> {
        let extra_ca = match &source {
            KeySource::Url(url) => url.1.as_deref(),
            KeySource::File(_) => None,
        };
        let loader = Loader {
            http: http_client(extra_ca)?,
            source,
            policy,
            state: tokio::sync::Mutex::new(LoadState::default()),
        };
        let first = {
            let mut state = loader.state.lock().await;
            loader
                .read(&mut state)
                .await
                .and_then(|set| set.ok_or_else(|| "no change".to_owned()))
                .map_err(|e| format!("no token keys could be loaded from {}: {e}", loader.source))?
        };
        tracing::info!(source = %loader.source, kids = ?first.ids(), "token keys loaded");
        let every = match loader.source {
            KeySource::File(_) => FILE_POLL,
            KeySource::Url(_) => policy.interval,
        };
        let store = Arc::new(Self {
            current: RwLock::new(Arc::new(first)),
            source: Some(loader),
        });
        tokio::spawn(refresh_periodically(Arc::downgrade(&store), every));
        Ok(store)
    }

    /// Whether the keys can change (a file or URL source).
    pub fn refreshes(&self) -> bool {
        self.source.is_some()
    }

    /// The keys in effect.
    pub fn current(&self) -> Arc<KeySet> {
        // A poisoned lock only means a writer panicked between two plain assignments: the
        // value inside is still a whole key set.
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A token names key `kid`, unknown here: load the source again at once, unless a load
    /// started less than `min_refetch` ago (then the keys are as fresh as we allow). The load
    /// runs in a task of its own and the caller waits for it at most [`UNKNOWN_KID_WAIT`]
    /// (a load already in flight is waited for the same way, never started twice): a request
    /// waiting here holds its server's admission slot, so tokens naming made-up keys must not
    /// hold slots for a whole fetch from a slow identity provider. A token whose key arrives
    /// later is refused as unknown, and its retry finds the key.
    pub async fn refresh_for_unknown(self: &Arc<Self>, kid: Option<&str>) {
        if self.source.is_none() {
            return;
        }
        let kid = kid.map(str::to_owned);
        let store = Arc::clone(self);
        let load = tokio::spawn(async move {
            let Some(loader) = &store.source else {
                return;
            };
            let mut state = loader.state.lock().await;
            // Another caller's load may have brought the key while this one waited.
            if store.current().knows(kid.as_deref()) {
                return;
            }
            if state
                .last_attempt
                .is_some_and(|at| at.elapsed() < loader.policy.min_refetch)
            {
                return;
            }
            state.last_attempt = Some(Instant::now());
            store.reload(loader, &mut state).await;
        });
        // Not waited for past the bound; the load itself goes on (bounded by FETCH_TIMEOUT).
        let _ = tokio::time::timeout(UNKNOWN_KID_WAIT, load).await;
    }

    async fn reload(&self, loader: &Loader, state: &mut LoadState) {
        match loader.read(state).await {
            Ok(Some(set)) => self.install(set, &loader.source),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(source = %loader.source, error, "token keys not refreshed: the last good keys stay in use");
            }
        }
    }

    /// Puts `set` in effect if its keys differ from the current ones.
    fn install(&self, mut set: KeySet, source: &KeySource) {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.fingerprint == set.fingerprint {
            return;
        }
        set.generation = current.generation + 1;
        tracing::info!(source = %source, kids = ?set.ids(), "token keys changed");
        *current = Arc::new(set);
    }
}

async fn refresh_periodically(store: Weak<KeyStore>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        // The verifier is gone (its server stopped): so is the need for keys.
        let Some(store) = store.upgrade() else {
            return;
        };
        if let Some(loader) = &store.source {
            let mut state = loader.state.lock().await;
            store.reload(loader, &mut state).await;
        }
    }
}

impl Loader {
    /// The source's key set; `None` when a file has not changed since the last read.
    async fn read(&self, state: &mut LoadState) -> Result<Option<KeySet>, String> {
        match &self.source {
            KeySource::File(path) => {
                let path = path.clone();
                let seen = state.file_stamp;
                let read = tokio::task::spawn_blocking(move || read_file(&path, seen))
                    .await
                    .map_err(|e| format!("reading the file failed: {e}"))??;
                let Some((stamp, bytes)) = read else {
                    return Ok(None);
                };
                // Remembered even when the content is bad, so a broken file is reported once,
                // not every poll, and a fixed one is read at once.
                state.file_stamp = Some(stamp);
                KeySet::from_json(&bytes).map(Some)
            }
            KeySource::Url(url) => {
                let bytes = tokio::time::timeout(FETCH_TIMEOUT, fetch(&self.http, url))
                    .await
                    .map_err(|_| format!("no answer within {FETCH_TIMEOUT:?}"))??;
                KeySet::from_json(&bytes).map(Some)
            }
        }
    }
}

/// The file's bytes and stamp, or `None` when its stamp is still `seen`.
fn read_file(
    path: &std::path::Path,
    seen: Option<FileStamp>,
) -> Result<Option<(FileStamp, Vec<u8>)>, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    let stamp = (meta.modified().map_err(|e| e.to_string())?, meta.len());
    if seen == Some(stamp) {
        return Ok(None);
    }
    // Bounded as read, not only by the size seen before: the file may grow in between.
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(
            std::fs::File::open(path).map_err(|e| e.to_string())?,
            MAX_JWKS_BYTES as u64 + 1,
        ),
        &mut bytes,
    )
    .map_err(|e| e.to_string())?;
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
    }
    Ok(Some((stamp, bytes)))
}

/// An HTTP/1.1 client over rustls with the ring provider and the Mozilla root certificates
/// (compiled in, so a container without a CA bundle still verifies the IdP), plus the CA(s) in
/// `extra_ca` when given.
fn http_client(extra_ca: Option<&std::path::Path>) -> Result<HttpClient, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_ca {
        for ca in crate::tls::load_certificates(path).map_err(|e| e.to_string())? {
            roots
                .add(ca)
                .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https),
    )
}

/// GETs the JWKS, refusing anything but 200 and bodies over [`MAX_JWKS_BYTES`].
async fn fetch(client: &HttpClient, url: &JwksUrl) -> Result<Vec<u8>, String> {
    let request = http::Request::get(url.0.clone())
        .header(http::header::ACCEPT, "application/json")
        .body(http_body_util::Empty::new())
        .map_err(|e| e.to_string())?;
    let answer = client.request(request).await.map_err(|e| {
        // The legacy client's Display is terse ("client error (Connect)"): add the cause.
        let cause = std::error::Error::source(&e).map(ToString::to_string);
        match cause {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        }
    })?;
    if answer.status() != http::StatusCode::OK {
        return Err(format!("answered HTTP {}", answer.status()));
    }
    let body = http_body_util::Limited::new(answer.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok(body.to_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn thumbprint_is_rfc_7638() {
        // RFC 7638 section 3.1's example key and thumbprint.
        let jwk: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        }))
        .unwrap();
        assert_eq!(
            thumbprint(&jwk).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn a_declared_algorithm_must_fit_the_key() {
        let ec = r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
        let rsa = r#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB"}"#;
        let parse = |text: &str| -> Jwk { serde_json::from_str(text).expect("jwk") };
        let with_alg =
            |text: &str, alg: &str| parse(&text.replacen('{', &format!(r#"{{"alg":"{alg}","#), 1));
        assert_eq!(algorithm_of(&parse(ec)), Some(Algorithm::ES256));
        assert_eq!(algorithm_of(&parse(rsa)), Some(Algorithm::RS256));
        assert_eq!(algorithm_of(&with_alg(ec, "ES256")), Some(Algorithm::ES256));
        assert_eq!(
            algorithm_of(&with_alg(rsa, "RS256")),
            Some(Algorithm::RS256)
        );
        assert_eq!(
            algorithm_of(&with_alg(rsa, "ES256")),
            None,
            "an RSA key declared ES256"
        );
        assert_eq!(
            algorithm_of(&with_alg(ec, "RS256")),
            None,
            "an EC key declared RS256"
        );
        assert_eq!(algorithm_of(&with_alg(ec, "HS256")), None);
        let p384 = ec.replace("P-256", "P-384");
        assert_eq!(algorithm_of(&parse(&p384)), None, "ES256 needs P-256");
    }

    #[test]
    fn a_key_without_kid_is_named_by_its_thumbprint() {
        let signer = crate::auth::DevSigner::generate("i", "a").unwrap();
        let mut set = signer.jwks().clone();
        set.keys[0].common.key_id = None;
        let expected = thumbprint(&set.keys[0]).unwrap();
        let keys = KeySet::from_jwks(&set).unwrap();
        assert_eq!(keys.ids(), vec![expected.as_str()]);
        assert!(keys.find(Some(&expected)).is_some());
        // Alone in its set, it also verifies tokens that name no key.
        assert!(keys.find(None).is_some());
    }

    #[test]
    fn a_token_without_kid_needs_a_set_of_one() {
        let a = crate::auth::DevSigner::generate("i", "a")
            .unwrap()
            .with_key_id(None);
        let b = crate::auth::DevSigner::generate("i", "a").unwrap();
        let claims = serde_json::json!({"sub": "x"});
        let token = a.mint(&claims, Duration::from_secs(60)).unwrap();
        let alone = a.verifier().unwrap();
        alone
            .verify::<serde_json::Value>(&token)
            .expect("the only key");
        let both = JwkSet {
            keys: [a.jwks().keys.clone(), b.jwks().keys.clone()].concat(),
        };
        let both = crate::auth::TokenVerifier::from_jwks(&both, "i", "a").unwrap();
        let refused = both.verify::<serde_json::Value>(&token).unwrap_err();
        assert_eq!(
            refused,
            crate::auth::AuthError::Invalid("unknown signing key".into())
        );
        // Naming the key by its thumbprint works whatever the set holds.
        let named = a
            .clone()
            .with_key_id(Some(&thumbprint(&a.jwks().keys[0]).unwrap()))
            .mint(&claims, Duration::from_secs(60))
            .unwrap();
        both.verify::<serde_json::Value>(&named)
            .expect("named by thumbprint");
    }

    #[test]
    fn urls_are_https_or_loopback_http() {
        assert!(JwksUrl::parse("https://idp.example/jwks").is_ok());
        assert!(JwksUrl::parse("http://127.0.0.1:8080/jwks").is_ok());
        assert!(JwksUrl::parse("http://[::1]:8080/jwks").is_ok());
        assert!(JwksUrl::parse("http://localhost/jwks").is_ok());
        let refused = JwksUrl::parse("http://idp.example/jwks").unwrap_err();
        assert!(refused.contains("loopback"), "{refused}");
        assert!(JwksUrl::parse("ftp://idp.example/jwks").is_err());
        assert!(JwksUrl::parse("/jwks").is_err());
    }
}
