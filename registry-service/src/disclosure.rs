//! The registry's internal disclosure service, called only by the lookup service: one call that
//! discloses the visible records for an NHS number and records the access in one transaction.
//! The caller must present the lookup service's credential.

use std::time::Instant;

use cpis_core::status::FieldViolation;
use cpis_proto::cpis::common::v1::{
    AccessMode, Accessor, CareSetting, ErrorReason, accessor::Kind,
};
use cpis_proto::cpis::registry::v1::{
    DiscloseRequest, DiscloseResponse, disclosure_service_server::DisclosureService,
};
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};
use tonic::{Request, Response, Status};

use crate::clock::Clock;
use crate::db::Database;
use crate::disclosure_store::{DisclosureRequest, disclose};
use crate::error::RegistryError;
use crate::record::{is_ods_code, parse_nhs_number};
use crate::wakeups::Wakeups;

/// Handler for `cpis.registry.v1.DisclosureService`.
#[derive(Clone)]
pub struct DisclosureApi {
    db: Database,
    clock: Clock,
    /// SHA-256 of the lookup service's token; `None` refuses every caller.
    credential: Option<[u8; 32]>,
    wakeups: Wakeups,
}

impl std::fmt::Debug for DisclosureApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DisclosureApi")
            .field("configured", &self.credential.is_some())
            .finish()
    }
}

impl DisclosureApi {
    /// Creates the handler; `token` is the lookup service's credential.
    pub fn new(db: Database, clock: Clock, token: Option<&SecretString>, wakeups: Wakeups) -> Self {
        let credential = token.map(|t| Sha256::digest(t.expose_secret().as_bytes()).into());
        Self {
            db,
            clock,
            credential,
            wakeups,
        }
    }

    /// Only the lookup service may call. Comparing digests keeps the comparison's timing
    /// independent of how much of the secret a guess got right.
    fn authenticate(&self, request: &Request<DiscloseRequest>) -> Result<(), RegistryError> {
        use cpis_core::auth::AuthError;
        let expected = self.credential.ok_or_else(|| {
            AuthError::Invalid("the disclosure service has no caller configured".into())
        })?;
        let presented = request
            .metadata()
            .get("authorization")
            .ok_or(AuthError::Missing)?;
        let token = presented
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| AuthError::Invalid("not a bearer credential".into()))?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if digest != expected {
            tracing::warn!(target: "security", "disclosure refused: unknown service credential");
            return Err(AuthError::Invalid("unknown service credential".into()).into());
        }
        Ok(())
    }
}

fn validate_accessor(accessor: Option<&Accessor>) -> Vec<FieldViolation> {
    let mut violations = Vec::new();
    let mut need = |ok: bool, field: &str, reason: ErrorReason, what: &str| {
        if !ok {
            violations.push(FieldViolation::new(field, reason, what));
        }
    };
    let Some(accessor) = accessor else {
        need(false, "accessor", ErrorReason::FieldRequired, "is required");
        return violations;
    };
    match &accessor.kind {
        Some(Kind::Person(p)) => {
            need(
                !p.user_id.is_empty() && p.user_id.len() <= 64,
                "accessor.person.user_id",
                ErrorReason::FieldRequired,
                "is required (at most 64 characters)",
            );
            need(
                p.name.len() <= 200,
                "accessor.person.name",
                ErrorReason::FieldTooLong,
                "must be at most 200 characters",
            );
        }
        Some(Kind::System(s)) => {
            need(
                !s.system_id.is_empty() && s.system_id.len() <= 64,
                "accessor.system.system_id",
                ErrorReason::FieldRequired,
                "is required (at most 64 characters)",
            );
            need(
                s.responsible_person
                    .as_ref()
                    .is_some_and(|p| !p.user_id.is_empty()),
                "accessor.system.responsible_person",
                ErrorReason::FieldRequired,
                "a named responsible person is required",
            );
        }
        None => need(
            false,
            "accessor.kind",
            ErrorReason::FieldRequired,
            "a person or a system is required",
        ),
    }
    need(
        accessor
            .organisation
            .as_ref()
            .is_some_and(|o| is_ods_code(&o.ods_code)),
        "accessor.organisation.ods_code",
        ErrorReason::FieldFormat,
        "must be an ODS code (3 to 10 upper-case letters and digits)",
    );
    need(
        matches!(CareSetting::try_from(accessor.care_setting), Ok(s) if s != CareSetting::Unspecified),
        "accessor.care_setting",
        ErrorReason::FieldRequired,
        "a known care setting is required",
    );
    violations
}

#[tonic::async_trait]
impl DisclosureService for DisclosureApi {
    #[tracing::instrument(skip_all, fields(rpc = "Disclose"))]
    async fn disclose(
        &self,
        request: Request<DiscloseRequest>,
    ) -> Result<Response<DiscloseResponse>, Status> {
        self.authenticate(&request)?;
        let deadline =
            cpis_core::deadline::remaining(request.metadata()).map(|d| Instant::now() + d);
        let body = request.into_inner();
        let mut violations = Vec::new();
        let nhs = parse_nhs_number(&body.nhs_number, "nhs_number")
            .map_err(|v| violations.push(v))
            .ok();
        violations.extend(validate_accessor(body.accessor.as_ref()));
        let mode = match AccessMode::try_from(body.access_mode) {
            Ok(AccessMode::Unspecified) | Err(_) => {
                violations.push(FieldViolation::new(
                    "access_mode",
                    ErrorReason::FieldRequired,
                    "unscheduled or scheduled silent read",
                ));
                AccessMode::Unspecified
            }
            Ok(mode) => mode,
        };
        if body.request_id.len() > 128 {
            violations.push(FieldViolation::new(
                "request_id",
                ErrorReason::FieldTooLong,
                "must be at most 128 characters",
            ));
        }
        let (Some(nhs), Some(accessor), true) = (nhs, body.accessor, violations.is_empty()) else {
            return Err(RegistryError::Invalid(violations).into());
        };
        let setting = accessor.care_setting;
        let work = DisclosureRequest {
            nhs_number: nhs.to_string(),
            accessor,
            mode,
            request_id: body.request_id,
            now: self.clock.now_micros(),
            today: self.clock.today(),
            deadline,
        };
        let disclosure = self
            .db
            .run(move |conn| disclose(conn, work))
            .await
            .map_err(|e| match e {
                // The access could not be recorded: nothing is disclosed, and the caller may retry.
                RegistryError::Database(_)
                | RegistryError::Unavailable
                | RegistryError::Internal(_) => {
                    tracing::error!(error = %e, "access not recorded; nothing disclosed");
                    cpis_core::status::with_reason(
                        tonic::Code::Unavailable,
                        ErrorReason::AccessNotRecorded,
                        "the access could not be recorded, so nothing was disclosed; retry",
                    )
                }
                other => other.into(),
            })?;
        // Committed: wake this replica's subscribers now (other replicas hear the NOTIFY).
        for (ods_code, _) in &disclosure.notifications {
            self.wakeups.wake(ods_code);
        }
        // Counts and the council codes only: never the NHS number.
        tracing::info!(
            mode = mode.as_str_name(),
            setting,
            councils = disclosure.alerts.len(),
            notifications = disclosure.notifications.len(),
            access_id = %disclosure.access_id,
            "disclosed"
        );
        Ok(Response::new(DiscloseResponse {
            alerts: disclosure.alerts,
            recent_accesses: disclosure.recent,
            access_id: disclosure.access_id,
        }))
    }
}
