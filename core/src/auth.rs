//! Bearer-token verification shared by both services: JWTs signed with ES256 or RS256 by keys
//! from a JWKS file or URL that may rotate (`crate::keys`), checked for issuer, audience,
//! expiry, issue time and lifetime. Keys are looked up by `kid` (or RFC 7638 thumbprint), and
//! verified claims are cached until expiry, so the hot path is a hash and a map look-up.
//! Also a development signer that generates an ES256 key pair and mints tokens.

use std::{sync::Arc, time::Duration};

use cpis_proto::cpis::common::v1::ErrorReason;
use jsonwebtoken::{
    Algorithm, EncodingKey, Header, Validation,
    errors::ErrorKind,
    jwk::{Jwk, JwkSet},
};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest as _, Sha256};
use tonic::metadata::MetadataMap;

use crate::keys::{KeySet, KeySource, KeyStore, RefreshPolicy};

/// Why a credential was refused; maps to UNAUTHENTICATED with the matching reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization: Bearer` metadata.
    #[error("missing bearer token")]
    Missing,
    /// Signature, issuer, audience, key or claims not acceptable.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Expired or not yet valid.
    #[error("token expired or not yet valid")]
    Expired,
    /// Valid for longer than the service accepts (`exp - iat` over the maximum).
    #[error("token lifetime exceeds the maximum of {}", humantime::format_duration(*max))]
    LifetimeTooLong {
        /// The maximum configured.
        max: Duration,
    },
}

impl AuthError {
    /// The contract's reason code.
    pub fn reason(&self) -> ErrorReason {
        match self {
            Self::Missing => ErrorReason::TokenMissing,
            Self::Invalid(_) => ErrorReason::TokenInvalid,
            Self::Expired => ErrorReason::TokenExpired,
            Self::LifetimeTooLong { .. } => ErrorReason::TokenLifetimeTooLong,
        }
    }

    /// The UNAUTHENTICATED status for this refusal.
    pub fn to_status(&self) -> tonic::Status {
        crate::status::with_reason(
            tonic::Code::Unauthenticated,
            self.reason(),
            self.to_string(),
        )
    }
}

/// Why the verifier could not be built (a configuration error, reported at start-up).
#[derive(Debug, thiserror::Error)]
pub enum KeyConfigError {
    /// The key set holds no usable ES256/RS256 key.
    #[error("JWKS holds no ES256 or RS256 key")]
    NoKeys,
    /// Key generation or encoding failed.
    #[error("key: {0}")]
    Key(String),
}

/// What a token must satisfy besides a good signature from a known key.
#[derive(Clone, Debug)]
pub struct TokenRules {
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud`.
    pub audience: String,
    /// The longest lifetime accepted: `exp - iat`, or for a token without `iat` (when it is
    /// not required) `exp - now`. A stolen long-lived token is a long-lived identity.
    pub max_lifetime: Duration,
    /// Whether a token must say when it was issued (`iat`).
    pub require_iat: bool,
    /// The clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
}

impl TokenRules {
    /// Default clock-skew leeway.
    pub const LEEWAY: Duration = Duration::from_secs(30);
    /// Default maximum lifetime (a user token's: an hour).
    pub const MAX_LIFETIME: Duration = Duration::from_secs(3600);

    /// `iss` and `aud` as given; `iat` required, lifetime at most an hour, 30 s leeway.
    pub fn new(issuer: &str, audience: &str) -> Self {
        Self {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            max_lifetime: Self::MAX_LIFETIME,
            require_iat: true,
            leeway: Self::LEEWAY,
        }
    }
}

/// How many verified tokens are remembered (per verifier). At about a kilobyte of claims each,
/// a few megabytes: enough for every active clinician of a large deployment between two
/// expiries, and bounded whatever callers send.
pub const VERIFIED_TOKENS_CACHED: usize = 10_000;

/// A token verified earlier: its claims, until its expiry, under the key set it was verified
/// with.
#[derive(Clone)]
struct Verified {
    claims: Arc<serde_json::Value>,
    exp: u64,
    generation: u64,
}

/// Verifies bearer tokens against a key set that may rotate ([`KeySource`]), an issuer, an
/// audience and lifetime rules. Verified claims are cached by the token's SHA-256 until the
/// token expires, so a caller's repeated calls skip the signature check; an entry made under an
/// older key set is never used, so a key removed from the set stops its tokens at once.
/// Cloning shares the keys and the cache.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: Arc<KeyStore>,
    rules: Arc<TokenRules>,
    cache: Arc<quick_cache::sync::Cache<[u8; 32], Verified>>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("keys", &self.keys.current())
            .field("rules", &self.rules)
            .finish()
    }
}

impl TokenVerifier {
    fn new(keys: Arc<KeyStore>, rules: TokenRules) -> Self {
        Self {
            keys,
            rules: Arc::new(rules),
            cache: Arc::new(quick_cache::sync::Cache::new(VERIFIED_TOKENS_CACHED)),
        }
    }

    /// Uses a fixed in-memory key set, with [`TokenRules::new`]'s defaults.
    pub fn from_jwks(set: &JwkSet, issuer: &str, audience: &str) -> Result<Self, KeyConfigError> {
        Ok(Self::new(
            Arc::new(KeyStore::fixed(KeySet::from_jwks(set)?)),
            TokenRules::new(issuer, audience),
        ))
    }

    /// Loads keys from `source` and keeps them fresh while the verifier lives (see
    /// [`KeyStore`](crate::keys)); an error when no key could be loaded.
    pub async fn load(
        source: KeySource,
        refresh: RefreshPolicy,
        rules: TokenRules,
    ) -> Result<Self, String> {
        Ok(Self::new(KeyStore::load(source, refresh).await?, rules))
    }

    /// The same keys under other lifetime rules (a service's configuration applied to a
    /// verifier a test or the dev stack injected), with a cache of its own.
    #[must_use]
    pub fn with_lifetime(&self, max_lifetime: Duration, require_iat: bool) -> Self {
        let rules = TokenRules {
            max_lifetime,
            require_iat,
            ..(*self.rules).clone()
        };
        Self::new(self.keys.clone(), rules)
    }

    /// The key set in effect.
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.current()
    }

    /// Extracts and verifies the bearer token of a request, returning its claims, with the
    /// keys in effect now (see [`Self::verify_metadata_fresh`] and [`FreshKeys`] for a token
    /// whose key is not known yet).
    pub fn verify_metadata<C: DeserializeOwned>(
        &self,
        metadata: &MetadataMap,
    ) -> Result<C, AuthError> {
        self.verify(bearer_token(metadata)?)
    }

    /// Like [`Self::verify_metadata`], but a token naming a key id not in the set first makes
    /// the set refresh from its source (rate-limited).
    pub async fn verify_metadata_fresh<C: DeserializeOwned>(
        &self,
        metadata: &MetadataMap,
    ) -> Result<C, AuthError> {
        let token = bearer_token(metadata)?;
        if let Some(kid) = self.unknown_key_id(token) {
            self.keys.refresh_for_unknown(Some(&kid)).await;
        }
        self.verify(token)
    }

    /// The key id `token` names when the set does not hold it and refreshing could help; `None`
    /// for a known key, a token without `kid`, a malformed token or fixed keys.
    fn unknown_key_id(&self, token: &str) -> Option<String> {
        if !self.keys.refreshes() {
            return None;
        }
        let kid = jsonwebtoken::decode_header(token).ok()?.kid?;
        (!self.keys.current().knows(Some(&kid))).then_some(kid)
    }

    /// Verifies a compact JWT: signature by a key of the set, `iss`, `aud`, `exp`, `nbf`, then
    /// `iat` and the lifetime.
    pub fn verify<C: DeserializeOwned>(&self, token: &str) -> Result<C, AuthError> {
        let keys = self.keys.current();
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let leeway = self.rules.leeway.as_secs();
        let claims = match self.cache.get(&digest) {
            Some(hit)
                if hit.generation == keys.generation
                    && now_secs() <= hit.exp.saturating_add(leeway) =>
            {
                hit.claims
            }
            stale => {
                if stale.is_some() {
                    self.cache.remove(&digest);
                }
                // A span for the signature check only: a cache hit is a hash and a map look-up,
                // and a span of its own would cost more than the look-up (`cpis-bench telemetry`).
                let (claims, exp) = tracing::info_span!("verify_token")
                    .in_scope(|| self.verify_signed(&keys, token))?;
                let claims = Arc::new(claims);
                self.cache.insert(
                    digest,
                    Verified {
                        claims: claims.clone(),
                        exp,
                        generation: keys.generation,
                    },
                );
                claims
            }
        };
        C::deserialize(&*claims)
            .map_err(|_| AuthError::Invalid("claims do not have the expected shape".into()))
    }

    /// The signature and every rule; the claims and `exp` when all hold.
    fn verify_signed(
        &self,
        keys: &KeySet,
        token: &str,
    ) -> Result<(serde_json::Value, u64), AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Invalid("malformed token".into()))?;
        let key = keys
            .find(header.kid.as_deref())
            .ok_or_else(|| AuthError::Invalid("unknown signing key".into()))?;
        if header.alg != key.algorithm {
            return Err(AuthError::Invalid(
                "algorithm does not match the key".into(),
            ));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[&self.rules.issuer]);
        validation.set_audience(&[&self.rules.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.rules.leeway.as_secs();
        let claims = jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => AuthError::Expired,
                ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer".into()),
                ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience".into()),
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::MissingRequiredClaim(claim) => {
                    AuthError::Invalid(format!("missing claim {claim}"))
                }
                ErrorKind::Json(_) => {
                    AuthError::Invalid("claims do not have the expected shape".into())
                }
                _ => AuthError::Invalid("token rejected".into()),
            })?;
        let exp = self.check_lifetime(&claims)?;
        Ok((claims, exp))
    }

    /// `iat` (required unless configured otherwise, not in the future) and the lifetime; the
    /// token's `exp` when they hold.
    fn check_lifetime(&self, claims: &serde_json::Value) -> Result<u64, AuthError> {
        let exp = claims
            .get("exp")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| AuthError::Invalid("claim exp is not a number of seconds".into()))?;
        let now = now_secs();
        let leeway = self.rules.leeway.as_secs();
        let too_long = || AuthError::LifetimeTooLong {
            max: self.rules.max_lifetime,
        };
        let max = self.rules.max_lifetime.as_secs();
        match claims.get("iat") {
            None if self.rules.require_iat => Err(AuthError::Invalid("missing claim iat".into())),
            None => {
                // Without iat the lifetime is unknown; what is left of it must still fit.
                if exp.saturating_sub(now) > max.saturating_add(leeway) {
                    return Err(too_long());
                }
                Ok(exp)
            }
            Some(iat) => {
                let iat = iat.as_u64().ok_or_else(|| {
                    AuthError::Invalid("claim iat is not a number of seconds".into())
                })?;
                if iat > now.saturating_add(leeway) {
                    // Issued in the future: not yet valid.
                    return Err(AuthError::Expired);
                }
                if exp.saturating_sub(iat) > max {
                    return Err(too_long());
                }
                Ok(exp)
            }
        }
    }
}

/// A gRPC service whose interceptor verifies tokens synchronously (tonic interceptors cannot
/// wait), wrapped so that a token naming a key id the verifier does not hold first makes the
/// key set refresh (rate-limited), and the interceptor then sees the fresh keys.
#[derive(Clone)]
pub struct FreshKeys<S> {
    verifier: TokenVerifier,
    inner: S,
}

impl<S> std::fmt::Debug for FreshKeys<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FreshKeys").finish_non_exhaustive()
    }
}

impl<S> FreshKeys<S> {
    /// Wraps `inner`, whose interceptor verifies with `verifier` (or a verifier sharing its
    /// keys).
    pub fn new(verifier: TokenVerifier, inner: S) -> Self {
        Self { verifier, inner }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for FreshKeys<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for FreshKeys<S>
where
    S: tower::Service<http::Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let unknown = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| bearer_in(value).ok())
            .and_then(|token| self.verifier.unknown_key_id(token));
        // The service made ready is the one to call; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let keys = self.verifier.keys.clone();
        Box::pin(async move {
            if let Some(kid) = unknown {
                keys.refresh_for_unknown(Some(&kid)).await;
            }
            inner.call(request).await
        })
    }
}

/// The token of a request's `authorization: Bearer <token>` metadata. The scheme is matched
/// without regard to case (RFC 7235: `bearer`, `BEARER`); a token over
/// [`MAX_TOKEN_BYTES`](crate::limits::MAX_TOKEN_BYTES) is refused before any parsing.
pub fn bearer_token(metadata: &MetadataMap) -> Result<&str, AuthError> {
    let value = metadata.get("authorization").ok_or(AuthError::Missing)?;
    let value = value
        .to_str()
        .map_err(|_| AuthError::Invalid("authorization is not ASCII".into()))?;
    bearer_in(value)
}

/// The token of an `authorization` value.
fn bearer_in(value: &str) -> Result<&str, AuthError> {
    let (_, token) = value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .ok_or_else(|| AuthError::Invalid("authorization is not a Bearer token".into()))?;
    let token = token.trim();
    if token.len() > crate::limits::MAX_TOKEN_BYTES {
        return Err(AuthError::Invalid(format!(
            "token too long: at most {} bytes",
            crate::limits::MAX_TOKEN_BYTES
        )));
    }
    Ok(token)
}

/// A development (and test) ES256 signer: a fresh key pair, its public JWKS, and token minting.
/// Never the default for a service bound to a non-loopback address.
#[derive(Clone)]
pub struct DevSigner {
    encoding: EncodingKey,
    kid: Option<String>,
    jwks: JwkSet,
    /// Issuer put in minted tokens.
    pub issuer: String,
    /// Audience put in minted tokens.
    pub audience: String,
}

impl std::fmt::Debug for DevSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl DevSigner {
    /// Generates a new P-256 key pair.
    pub fn generate(issuer: &str, audience: &str) -> Result<Self, KeyConfigError> {
        Self::from_pkcs8_pem(&Self::generate_pem()?, issuer, audience)
    }

    /// A new P-256 private key as PKCS#8 PEM, for a dev stack to keep on disk.
    pub fn generate_pem() -> Result<Vec<u8>, KeyConfigError> {
        use p256::pkcs8::{EncodePrivateKey as _, LineEnding};
        let secret = p256::SecretKey::random(&mut rand_core::OsRng);
        let pem = secret
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyConfigError::Key(e.to_string()))?;
        Ok(pem.as_bytes().to_vec())
    }

    /// Loads a P-256 private key (PKCS#8 PEM), for a dev stack that keeps its keys across runs.
    pub fn from_pkcs8_pem(
        pem: &[u8],
        issuer: &str,
        audience: &str,
    ) -> Result<Self, KeyConfigError> {
        let encoding =
            EncodingKey::from_ec_pem(pem).map_err(|e| KeyConfigError::Key(e.to_string()))?;
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256)
            .map_err(|e| KeyConfigError::Key(e.to_string()))?;
        // A stable key id derived from the public key, so restarts keep issued tokens valid.
        let public =
            serde_json::to_vec(&jwk.algorithm).map_err(|e| KeyConfigError::Key(e.to_string()))?;
        let kid = format!("dev-{:016x}", fnv1a(&public));
        jwk.common.key_id = Some(kid.clone());
        Ok(Self {
            encoding,
            kid: Some(kid),
            jwks: JwkSet { keys: vec![jwk] },
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        })
    }

    /// The same key published and used under another key id, or under none (then a verifier
    /// knows it by its RFC 7638 thumbprint): for tests of key rotation and unknown key ids.
    #[must_use]
    pub fn with_key_id(mut self, kid: Option<&str>) -> Self {
        self.kid = kid.map(str::to_owned);
        for jwk in &mut self.jwks.keys {
            jwk.common.key_id = self.kid.clone();
        }
        self
    }

    /// The key id tokens are signed under.
    pub fn key_id(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The public key set to configure verifiers with.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// A verifier accepting this signer's tokens.
    pub fn verifier(&self) -> Result<TokenVerifier, KeyConfigError> {
        TokenVerifier::from_jwks(&self.jwks, &self.issuer, &self.audience)
    }

    /// Signs `claims`, adding `iss`, `aud`, `iat` and `exp` (now + `ttl`) unless present.
    pub fn mint(
        &self,
        claims: &serde_json::Value,
        ttl: std::time::Duration,
    ) -> Result<String, KeyConfigError> {
        let now = now_secs();
        let mut body = serde_json::Map::new();
        body.insert("iss".into(), self.issuer.clone().into());
        body.insert("aud".into(), self.audience.clone().into());
        body.insert("iat".into(), now.into());
        body.insert("exp".into(), (now + ttl.as_secs()).into());
        if let serde_json::Value::Object(extra) = claims {
            for (k, v) in extra {
                body.insert(k.clone(), v.clone());
            }
        }
        self.sign(&serde_json::Value::Object(body))
    }

    /// Signs exactly `claims` (for tests that need malformed or expired tokens).
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, KeyConfigError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| KeyConfigError::Key(e.to_string()))
    }
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// FNV-1a: a tiny, stable, non-cryptographic hash for key ids.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
