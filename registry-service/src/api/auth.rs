//! Who is calling the registry, decided once per call by an interceptor in front of each service:
//! a council (its token names one ODS code and carries scopes), an operator (scope "operator"),
//! or the lookup service (its service credential). The interceptor puts the typed caller in the
//! request's extensions; handlers only check the scope and council a call needs
//! (`authorize`), and never parse tokens. An attempt on another council's data is refused and
//! logged, without any child's data.

use cpis_core::{
    auth::{AuthError, TokenVerifier},
    ods::OdsCode,
    text::{LogOds, LogSafe},
};
use cpis_proto::cpis::registry::v1 as api;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tonic::{Request, Status, service::Interceptor};

use crate::error::RegistryError;

/// What a council call needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
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

/// The claims a council or operator token carries beyond iss/aud/exp.
#[derive(Debug, Deserialize)]
struct Claims {
    ods_code: Option<String>,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    sub: String,
}

impl Claims {
    fn has_scope(&self, wanted: &str) -> bool {
        self.scope.split_whitespace().any(|s| s == wanted)
    }
}

/// An authenticated council, as the interceptor found it.
#[derive(Clone, Debug)]
pub(crate) struct CouncilCaller {
    ods_code: OdsCode,
    subject: String,
    read: bool,
    write: bool,
}

/// Verifies council tokens (`CouncilService`).
#[derive(Clone, Debug)]
pub(crate) struct CouncilInterceptor(pub TokenVerifier);

impl Interceptor for CouncilInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let claims: Claims = self.0.verify_metadata(request.metadata()).map_err(refuse)?;
        let ods_code = claims
            .ods_code
            .as_deref()
            .and_then(|code| OdsCode::parse(code).ok())
            .ok_or_else(|| refuse(AuthError::Invalid("token names no valid ods_code".into())))?;
        let caller = CouncilCaller {
            ods_code,
            read: claims.has_scope(Scope::Read.as_str()),
            write: claims.has_scope(Scope::Write.as_str()),
            subject: claims.sub,
        };
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// A council request: which RPC it is, the scope it needs and the council it names.
pub(crate) trait CouncilRequest {
    /// The RPC, for the security log.
    const RPC: &'static str;
    /// The scope it needs.
    const SCOPE: Scope;
    /// The `local_authority_ods_code` it names (empty: the caller's own).
    fn requested(&self) -> &str;
}

macro_rules! council_requests {
    ($($message:ident => $rpc:literal, $scope:ident;)*) => {$(
        impl CouncilRequest for api::$message {
            const RPC: &'static str = $rpc;
            const SCOPE: Scope = Scope::$scope;
            fn requested(&self) -> &str {
                &self.local_authority_ods_code
            }
        }
    )*};
}

// Every council RPC and the scope it needs, in one table.
council_requests! {
    GetContactDetailsRequest => "GetContactDetails", Read;
    PutChildRecordRequest => "PutChildRecord", Write;
    GetChildRecordRequest => "GetChildRecord", Read;
    ListChildRecordsRequest => "ListChildRecords", Read;
    DeleteChildRecordRequest => "DeleteChildRecord", Write;
    ListAccessEventsRequest => "ListAccessEvents", Read;
    SubscribeNotificationsRequest => "SubscribeNotifications", Read;
    AcknowledgeNotificationsRequest => "AcknowledgeNotifications", Read;
    ListNotificationsRequest => "ListNotifications", Read;
    GetBatchRequest => "GetBatch", Read;
    ListBatchRejectionsRequest => "ListBatchRejections", Read;
}

impl CouncilRequest for api::SetContactDetailsRequest {
    const RPC: &'static str = "SetContactDetails";
    const SCOPE: Scope = Scope::Write;
    fn requested(&self) -> &str {
        self.local_authority
            .as_ref()
            .map_or("", |la| la.ods_code.as_str())
    }
}

/// The council making `request`, allowed what the request needs.
pub(crate) fn council<T: CouncilRequest>(request: &Request<T>) -> Result<OdsCode, RegistryError> {
    authorize(
        request.extensions(),
        request.get_ref().requested(),
        T::SCOPE,
        T::RPC,
    )
}

/// Checks that the caller found by the interceptor holds `scope` and that `requested` (empty
/// meaning "mine") is its own council.
pub(crate) fn authorize(
    extensions: &tonic::Extensions,
    requested: &str,
    scope: Scope,
    rpc: &'static str,
) -> Result<OdsCode, RegistryError> {
    let caller = extensions
        .get::<CouncilCaller>()
        .ok_or_else(|| RegistryError::Internal("council call without its interceptor".into()))?;
    if !requested.is_empty() && requested != caller.ods_code.as_str() {
        // A security event for the operator: who tried what, never whose child. The requested
        // code is caller text: logged only if it is an ODS code (else "invalid" and its length).
        tracing::warn!(
            target: "security",
            caller = %caller.ods_code,
            subject = %LogSafe(&caller.subject),
            requested = %LogOds(requested),
            rpc,
            "cross-council access refused"
        );
        return Err(RegistryError::WrongCouncil);
    }
    let allowed = match scope {
        Scope::Read => caller.read,
        Scope::Write => caller.write,
    };
    if !allowed {
        return Err(RegistryError::ScopeMissing(scope.as_str()));
    }
    Ok(caller.ods_code.clone())
}

/// Verifies operator tokens (`OperatorService`): any valid token with scope "operator".
#[derive(Clone, Debug)]
pub(crate) struct OperatorInterceptor(pub TokenVerifier);

impl Interceptor for OperatorInterceptor {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let claims: Claims = self.0.verify_metadata(request.metadata()).map_err(refuse)?;
        if !claims.has_scope("operator") {
            return Err(RegistryError::ScopeMissing("operator").into());
        }
        tracing::info!(target: "security", subject = %LogSafe(&claims.sub), "operator call");
        Ok(request)
    }
}

/// Admits only the lookup service to `DisclosureService`, by its credential.
#[derive(Clone)]
pub(crate) struct DisclosureInterceptor {
    /// SHA-256 of the lookup service's token; `None` refuses every caller.
    credential: Option<[u8; 32]>,
}

impl std::fmt::Debug for DisclosureInterceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DisclosureInterceptor")
            .field("configured", &self.credential.is_some())
            .finish()
    }
}

impl DisclosureInterceptor {
    /// `token` is the lookup service's credential.
    pub fn new(token: Option<&SecretString>) -> Self {
        Self {
            credential: token.map(|t| Sha256::digest(t.expose_secret().as_bytes()).into()),
        }
    }
}

impl Interceptor for DisclosureInterceptor {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let expected = self.credential.ok_or_else(|| {
            refuse(AuthError::Invalid(
                "the disclosure service has no caller configured".into(),
            ))
        })?;
        let token = cpis_core::auth::bearer_token(request.metadata()).map_err(refuse)?;
        // Comparing digests keeps the comparison's timing independent of how much of the
        // secret a guess got right.
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if digest != expected {
            tracing::warn!(target: "security", "disclosure refused: unknown service credential");
            return Err(refuse(AuthError::Invalid(
                "unknown service credential".into(),
            )));
        }
        Ok(request)
    }
}

/// UNAUTHENTICATED, with the refusal's reason.
fn refuse(error: AuthError) -> Status {
    error.to_status()
}
