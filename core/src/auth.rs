//! Bearer-token verification shared by both services: JWTs signed with ES256 or RS256 by keys
//! from a JWKS file, checked for issuer, audience and expiry. Keys are parsed once at start-up
//! and looked up by `kid`, so the hot path is one signature check.
//! Also a development signer that generates an ES256 key pair and mints tokens.

use std::{collections::HashMap, path::Path};

use cpis_proto::cpis::common::v1::ErrorReason;
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation,
    errors::ErrorKind,
    jwk::{Jwk, JwkSet, KeyAlgorithm},
};
use serde::{Serialize, de::DeserializeOwned};
use tonic::metadata::MetadataMap;

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
}

impl AuthError {
    /// The contract's reason code.
    pub fn reason(&self) -> ErrorReason {
        match self {
            Self::Missing => ErrorReason::TokenMissing,
            Self::Invalid(_) => ErrorReason::TokenInvalid,
            Self::Expired => ErrorReason::TokenExpired,
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
    /// The JWKS file could not be read.
    #[error("cannot read JWKS file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The JWKS file is not a valid key set.
    #[error("JWKS file {path} is not valid: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The cause.
        message: String,
    },
    /// The key set holds no usable ES256/RS256 key.
    #[error("JWKS holds no ES256 or RS256 key")]
    NoKeys,
    /// Key generation or encoding failed.
    #[error("key: {0}")]
    Key(String),
}

#[derive(Clone)]
struct VerifyingKey {
    key: DecodingKey,
    algorithm: Algorithm,
}

/// Verifies bearer tokens against a fixed key set, issuer and audience.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: HashMap<String, VerifyingKey>,
    /// Used when a token has no `kid` and the set holds exactly one key.
    only_key: Option<VerifyingKey>,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

impl TokenVerifier {
    /// Reads a JWKS file.
    pub fn from_jwks_file(
        path: &Path,
        issuer: &str,
        audience: &str,
    ) -> Result<Self, KeyConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let set: JwkSet = serde_json::from_str(&text).map_err(|e| KeyConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_jwks(&set, issuer, audience)
    }

    /// Uses an in-memory key set.
    pub fn from_jwks(set: &JwkSet, issuer: &str, audience: &str) -> Result<Self, KeyConfigError> {
        let mut keys = HashMap::new();
        let mut all = Vec::new();
        for jwk in &set.keys {
            let algorithm = match (&jwk.common.key_algorithm, &jwk.algorithm) {
                (Some(KeyAlgorithm::ES256), _) => Algorithm::ES256,
                (Some(KeyAlgorithm::RS256), _) => Algorithm::RS256,
                (None, jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_)) => {
                    Algorithm::ES256
                }
                (None, jsonwebtoken::jwk::AlgorithmParameters::RSA(_)) => Algorithm::RS256,
                // Other algorithms (HMAC shared secrets, EdDSA) are not accepted here.
                _ => continue,
            };
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let entry = VerifyingKey { key, algorithm };
            if let Some(kid) = &jwk.common.key_id {
                keys.insert(kid.clone(), entry.clone());
            }
            all.push(entry);
        }
        if all.is_empty() {
            return Err(KeyConfigError::NoKeys);
        }
        let only_key = if all.len() == 1 { all.pop() } else { None };
        Ok(Self {
            keys,
            only_key,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        })
    }

    /// Extracts and verifies the bearer token of a request, returning its claims.
    pub fn verify_metadata<C: DeserializeOwned>(
        &self,
        metadata: &MetadataMap,
    ) -> Result<C, AuthError> {
        self.verify(bearer_token(metadata)?)
    }

    /// Verifies a compact JWT.
    pub fn verify<C: DeserializeOwned>(&self, token: &str) -> Result<C, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Invalid("malformed token".into()))?;
        let key = match &header.kid {
            Some(kid) => self.keys.get(kid),
            None => self.only_key.as_ref(),
        }
        .ok_or_else(|| AuthError::Invalid("unknown signing key".into()))?;
        if header.alg != key.algorithm {
            return Err(AuthError::Invalid(
                "algorithm does not match the key".into(),
            ));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        jsonwebtoken::decode::<C>(token, &key.key, &validation)
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
    kid: String,
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
            kid,
            jwks: JwkSet { keys: vec![jwk] },
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        })
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
        let now = chrono_now_secs();
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
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| KeyConfigError::Key(e.to_string()))
    }
}

fn chrono_now_secs() -> u64 {
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
