//! Who is calling the registry and what they may touch: council tokens name one council (ODS
//! code) and carry scopes; every call is scoped to that council, and an attempt on another
//! council's data is refused and logged (without any child's data).

use cpis_core::auth::TokenVerifier;
use cpis_proto::cpis::common::v1::ErrorReason;
use serde::Deserialize;
use tonic::metadata::MetadataMap;

use crate::{error::RegistryError, record::is_ods_code};

/// What a call needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Reads: scope "read".
    Read,
    /// Writes: scope "write".
    Write,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }
}

/// The claims a council token carries beyond iss/aud/exp.
#[derive(Debug, Deserialize)]
struct CouncilClaims {
    ods_code: Option<String>,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    sub: String,
}

/// An authenticated council, allowed the scope the call needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Council {
    /// The council's ODS code.
    pub ods_code: String,
}

/// Authenticates council calls.
#[derive(Clone, Debug)]
pub struct CouncilAuth {
    verifier: TokenVerifier,
}

impl CouncilAuth {
    /// Uses `verifier` for every council token.
    pub fn new(verifier: TokenVerifier) -> Self {
        Self { verifier }
    }

    /// Verifies an operator: any valid token with scope "operator".
    pub fn authorize_operator(&self, metadata: &MetadataMap) -> Result<(), RegistryError> {
        let claims: CouncilClaims = self.verifier.verify_metadata(metadata)?;
        if !claims.scope.split_whitespace().any(|s| s == "operator") {
            return Err(RegistryError::PermissionDenied {
                reason: ErrorReason::ScopeMissing,
                message: "the credential lacks scope \"operator\"".into(),
            });
        }
        tracing::info!(target: "security", subject = %claims.sub, "operator call");
        Ok(())
    }

    /// Verifies the caller, checks `scope`, and checks that `requested` (the request's
    /// `local_authority_ods_code`, empty meaning "mine") is the caller's own council.
    pub fn authorize(
        &self,
        metadata: &MetadataMap,
        requested: &str,
        scope: Scope,
        rpc: &'static str,
    ) -> Result<Council, RegistryError> {
        let claims: CouncilClaims = self.verifier.verify_metadata(metadata)?;
        let ods_code = claims
            .ods_code
            .filter(|code| is_ods_code(code))
            .ok_or_else(|| {
                cpis_core::auth::AuthError::Invalid("token names no valid ods_code".into())
            })?;
        if !requested.is_empty() && requested != ods_code {
            // A security event for the operator: who tried what, never whose child.
            tracing::warn!(
                target: "security",
                caller = %ods_code,
                subject = %claims.sub,
                requested = %requested,
                rpc,
                "cross-council access refused"
            );
            return Err(RegistryError::wrong_council());
        }
        if !claims.scope.split_whitespace().any(|s| s == scope.as_str()) {
            return Err(RegistryError::PermissionDenied {
                reason: ErrorReason::ScopeMissing,
                message: format!("the credential lacks scope \"{}\"", scope.as_str()),
            });
        }
        Ok(Council { ods_code })
    }
}
