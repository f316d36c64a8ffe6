//! Who is calling the registry, decided once per call by an interceptor in front of each service:
//! a council (its token names one ODS code and carries scopes), an operator (a client
//! certificate naming an admitted identity, and a token with scope "operator"), or the lookup
//! service (a client certificate naming an admitted identity, on the mTLS internal port). The interceptor puts the typed caller in the
//! request's extensions; handlers only check the scope and council a call needs
//! (`authorize`), and never parse tokens. An attempt on another council's data is refused and
//! logged, without any child's data.

use std::sync::Arc;

use cpis_core::{
    auth::{AuthError, TokenVerifier},
    connection::ConnectionInfo,
    ods::OdsCode,
    rate::{Rate, RateLimit},
    status::with_reason,
    text::{LogOds, LogSafe},
};
use cpis_proto::cpis::common::v1::ErrorReason;
use cpis_proto::cpis::registry::v1 as api;
use serde::Deserialize;
use tonic::{Code, Request, Status, service::Interceptor};

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
    limits: Arc<CouncilLimits>,
}

/// Calls allowed per council (per replica; see `cpis_core::rate`).
#[derive(Debug)]
pub(crate) struct CouncilLimits {
    /// Reads: records, access history, contacts, batches, notification listings and
    /// acknowledgements, opening a notification stream.
    pub reads: RateLimit,
    /// Single writes: records, deletions, contact details.
    pub writes: RateLimit,
    /// Bulk uploads (each a whole batch).
    pub uploads: RateLimit,
}

impl CouncilLimits {
    /// Limits of `reads`, `writes` and `uploads` per council.
    pub fn new(reads: Rate, writes: Rate, uploads: Rate) -> Self {
        Self {
            reads: RateLimit::new("council_read", "reads", "council", reads),
            writes: RateLimit::new("council_write", "writes", "council", writes),
            uploads: RateLimit::new("council_upload", "uploads", "council", uploads),
        }
    }
}

/// Verifies council tokens (`CouncilService`) and, where the deployment asks for them, council
/// client certificates.
#[derive(Clone, Debug)]
pub(crate) struct CouncilInterceptor {
    /// Council tokens.
    pub verifier: TokenVerifier,
    /// With `--council-client-ca`: the certificate each call must also come with.
    pub certificates: Option<CouncilCertificates>,
    /// Writes and uploads allowed per council.
    pub limits: Arc<CouncilLimits>,
}

impl Interceptor for CouncilInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let claims: Claims = self
            .verifier
            .verify_metadata(request.metadata())
            .map_err(refuse)?;
        let ods_code = claims
            .ods_code
            .as_deref()
            .and_then(|code| OdsCode::parse(code).ok())
            .ok_or_else(|| refuse(AuthError::Invalid("token names no valid ods_code".into())))?;
        if let Some(certificates) = &self.certificates {
            certificates.check(&request, &ods_code)?;
        }
        let caller = CouncilCaller {
            ods_code,
            read: claims.has_scope(Scope::Read.as_str()),
            write: claims.has_scope(Scope::Write.as_str()),
            subject: claims.sub,
            limits: self.limits.clone(),
        };
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// Council client certificates, where the deployment asks for them (`--council-client-ca`): a
/// council call must come with a certificate (checked against the council CA in the handshake)
/// that names the council its token names, so a stolen token alone opens nothing.
#[derive(Clone, Debug)]
pub(crate) struct CouncilCertificates {
    /// The identity wanted, with `{ods}` for the council's ODS code.
    template: Arc<str>,
    /// Refusals a caller can repeat at will: a few log lines a second.
    refusals: Arc<cpis_core::log_budget::SharedBudget>,
}

impl CouncilCertificates {
    /// Certificates must name `template` with `{ods}` replaced by the token's council.
    pub fn new(template: &str) -> Self {
        Self {
            template: template.into(),
            refusals: Arc::default(),
        }
    }

    fn check<T>(&self, request: &Request<T>, ods_code: &OdsCode) -> Result<(), Status> {
        let connection = request.extensions().get::<ConnectionInfo>();
        let Some(peer) = connection.and_then(|c| c.peer_certificate.as_deref()) else {
            self.refusals.allow(|suppressed| {
                tracing::warn!(
                    target: "security",
                    la = %ods_code,
                    remote = ?connection.and_then(|c| c.remote),
                    suppressed,
                    "council call without a client certificate refused"
                );
            });
            return Err(with_reason(
                Code::Unauthenticated,
                ErrorReason::ClientCertificateMissing,
                "council calls here need a client certificate naming the council (mutual TLS) \
                 as well as a token",
            ));
        };
        let wanted = self.template.replace("{ods}", ods_code.as_str());
        if peer.identities.iter().any(|id| id.is(&wanted)) {
            return Ok(());
        }
        let presented = presented(&peer.identities);
        self.refusals.allow(|suppressed| {
            tracing::warn!(
                target: "security",
                la = %ods_code,
                presented = %LogSafe(&presented),
                remote = ?connection.and_then(|c| c.remote),
                suppressed,
                "council client certificate does not name the token's council"
            );
        });
        Err(with_reason(
            Code::PermissionDenied,
            ErrorReason::ClientIdentityNotAllowed,
            format!(
                "the client certificate does not name council {ods_code}, which the token names"
            ),
        ))
    }
}

/// A certificate's identities for a security log line.
fn presented(identities: &[cpis_core::tls::Identity]) -> String {
    identities
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
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
    // Counted once the call is known to be allowed: a refused call spends nothing.
    let limit = match scope {
        Scope::Write if rpc == "UploadBatch" => &caller.limits.uploads,
        Scope::Write => &caller.limits.writes,
        Scope::Read => &caller.limits.reads,
    };
    limit
        .check(caller.ods_code.as_str())
        .map_err(|status| RegistryError::Stream(Box::new(status)))?;
    Ok(caller.ods_code.clone())
}

/// Admits to an internal service only callers whose verified client certificate (the internal
/// port's mTLS) names one of the configured identities.
#[derive(Clone, Debug)]
pub(crate) struct IdentityGate {
    /// The service guarded, for the refusal and the security log.
    service: &'static str,
    allowed: Arc<[String]>,
}

impl IdentityGate {
    /// A gate for `service` admitting `allowed` (SAN URIs or DNS names); empty admits no one.
    pub fn new(service: &'static str, allowed: &[String]) -> Self {
        Self {
            service,
            // An empty entry ("a,,b" or a trailing comma) would admit a certificate whose SAN
            // is empty: dropped.
            allowed: allowed
                .iter()
                .map(|id| id.trim())
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }

    /// The admitted identity of the caller of `request`.
    fn admit<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let connection = request.extensions().get::<ConnectionInfo>();
        let Some(peer) = connection.and_then(|c| c.peer_certificate.as_deref()) else {
            tracing::warn!(
                target: "security",
                service = self.service,
                remote = ?connection.and_then(|c| c.remote),
                "internal call without a client certificate refused"
            );
            return Err(with_reason(
                Code::Unauthenticated,
                ErrorReason::ClientCertificateMissing,
                format!(
                    "{} admits only callers with a client certificate (mutual TLS)",
                    self.service
                ),
            ));
        };
        if let Some(admitted) = self
            .allowed
            .iter()
            .find(|wanted| peer.identities.iter().any(|id| id.is(wanted)))
        {
            return Ok(admitted.clone());
        }
        // A security event: which certificate tried which service; never a request's content.
        let presented = presented(&peer.identities);
        tracing::warn!(
            target: "security",
            service = self.service,
            presented = %LogSafe(&presented),
            remote = ?connection.and_then(|c| c.remote),
            "client certificate identity not admitted"
        );
        Err(with_reason(
            Code::PermissionDenied,
            ErrorReason::ClientIdentityNotAllowed,
            format!(
                "the client certificate's identity is not admitted to {}",
                self.service
            ),
        ))
    }
}

/// Admits operators (`OperatorService`): a client certificate naming an operator identity, and
/// a valid token with scope "operator" (a second factor naming the person).
#[derive(Clone, Debug)]
pub(crate) struct OperatorInterceptor {
    /// Admitted operator certificates.
    pub gate: IdentityGate,
    /// Operator tokens.
    pub verifier: TokenVerifier,
}

impl Interceptor for OperatorInterceptor {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let identity = self.gate.admit(&request)?;
        let claims: Claims = self
            .verifier
            .verify_metadata(request.metadata())
            .map_err(refuse)?;
        if !claims.has_scope("operator") {
            return Err(RegistryError::ScopeMissing("operator").into());
        }
        tracing::info!(
            target: "security",
            subject = %LogSafe(&claims.sub),
            certificate = %LogSafe(&identity),
            "operator call"
        );
        Ok(request)
    }
}

/// Admits only the lookup service to `DisclosureService`, by its client certificate.
#[derive(Clone, Debug)]
pub(crate) struct DisclosureInterceptor(pub IdentityGate);

impl Interceptor for DisclosureInterceptor {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.0.admit(&request)?;
        Ok(request)
    }
}

/// UNAUTHENTICATED, with the refusal's reason.
fn refuse(error: AuthError) -> Status {
    error.to_status()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_identities_admit_no_one() {
        let gate = IdentityGate::new(
            "cpis.registry.v1.DisclosureService",
            &["spiffe://cpis/lookup".into(), String::new(), "  ".into()],
        );
        assert_eq!(&*gate.allowed, ["spiffe://cpis/lookup".to_owned()]);
    }
}
