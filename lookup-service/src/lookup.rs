//! The NHS-facing lookup: authenticate the caller, apply the role policy, validate the NHS
//! number, then make the single internal call that discloses and records the access, and return
//! the minimal answer.

use std::time::Duration;

use cpis_core::{nhs_number::NhsNumber, status::FieldViolation, text::LogOds};
use cpis_proto::cpis::common::v1::{AccessMode, CareSetting, ErrorReason};
use cpis_proto::cpis::lookup::v1::{
    LookupChildRequest, LookupChildResponse, lookup_service_server::LookupService,
};
use cpis_proto::cpis::registry::v1::{
    DiscloseRequest, disclosure_service_client::DisclosureServiceClient,
};
use tonic::{
    Code, Request, Response, Status,
    metadata::{MetadataMap, MetadataValue},
    transport::Channel,
};

use crate::auth::Authenticated;
use crate::error::LookupError;
use crate::policy::RolePolicy;

/// Handler for `cpis.lookup.v1.LookupService`, behind `auth::NhsAuth`.
#[derive(Clone)]
pub struct LookupApi {
    policy: RolePolicy,
    registry: DisclosureServiceClient<Channel>,
    registry_timeout: Duration,
}

impl std::fmt::Debug for LookupApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupApi")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl LookupApi {
    /// Creates the handler around a (lazily connecting) channel to the registry's internal port,
    /// on which this service presents its client certificate.
    pub fn new(policy: RolePolicy, registry: Channel, registry_timeout: Duration) -> Self {
        Self {
            policy,
            registry: DisclosureServiceClient::new(registry),
            registry_timeout,
        }
    }
}

/// The optional `x-request-id` as the caller sent it, for the access event: at most 128
/// printable ASCII characters, else refused (the contract). The request's log lines carry it
/// (or a generated one) through `cpis_core::request_id`.
fn request_id(metadata: &MetadataMap) -> Result<String, LookupError> {
    let Some(value) = metadata.get(cpis_core::request_id::HEADER) else {
        return Ok(String::new());
    };
    let text = value
        .to_str()
        .ok()
        .filter(|v| v.is_empty() || cpis_core::request_id::is_well_formed(v))
        .ok_or_else(|| {
            LookupError::Header(
                "x-request-id must be at most 128 printable ASCII characters".into(),
            )
        })?;
    Ok(text.to_owned())
}

#[tonic::async_trait]
impl LookupService for LookupApi {
    async fn lookup_child(
        &self,
        mut request: Request<LookupChildRequest>,
    ) -> Result<Response<LookupChildResponse>, Status> {
        let started = std::time::Instant::now();
        // Authenticated (and rate limited) by `auth::NhsAuth`; an unserved care setting is the
        // policy's call, below.
        let caller = match request.extensions_mut().remove::<Authenticated>() {
            Some(Authenticated::Caller(caller)) => Ok(*caller),
            Some(Authenticated::UnservedSetting { org }) => Err(org),
            None => {
                tracing::error!("a lookup reached the handler without its caller (wiring defect)");
                return Err(LookupError::Internal.into());
            }
        };
        let request_id = request_id(request.metadata())?;
        // The id this call logs under (the caller's, or generated): the registry logs the
        // disclosure under the same one.
        let log_id = request
            .extensions()
            .get::<cpis_core::request_id::RequestId>()
            .and_then(|id| MetadataValue::try_from(id.as_str()).ok());
        let deadline = cpis_core::deadline::remaining(request.metadata());
        let body = request.into_inner();

        let mode = match AccessMode::try_from(body.access_mode) {
            Ok(AccessMode::Unspecified) | Err(_) => {
                return Err(LookupError::from(FieldViolation::new(
                    "access_mode",
                    ErrorReason::FieldRequired,
                    "must be UNSCHEDULED or SCHEDULED_SILENT_READ",
                ))
                .into());
            }
            Ok(mode) => mode,
        };
        let (codes, setting, org) = match &caller {
            Ok(c) => (
                c.activity_codes.as_slice(),
                c.accessor.care_setting(),
                c.accessor.ods_code().as_str(),
            ),
            Err(org) => (&[][..], CareSetting::Unspecified, org.as_str()),
        };
        let decision =
            tracing::info_span!("policy").in_scope(|| self.policy.decide(codes, setting, mode));
        let (Ok(()), Ok(caller)) = (decision, caller.as_ref()) else {
            let why = decision
                .err()
                .unwrap_or("the care setting is not one CP-IS serves");
            // Who was refused and why, never which child.
            tracing::warn!(
                target: "security",
                org = %LogOds(org),
                setting = setting.as_str_name(),
                mode = mode.as_str_name(),
                why,
                "lookup refused"
            );
            count_lookup(setting, "refused");
            return Err(LookupError::AccessDenied(why).into());
        };
        let nhs =
            NhsNumber::parse_field(&body.nhs_number, "nhs_number").map_err(LookupError::from)?;

        let mut outbound = Request::new(DiscloseRequest {
            nhs_number: nhs.to_string(),
            accessor: Some(caller.accessor.as_wire().clone()),
            access_mode: mode as i32,
            request_id,
        });
        // Propagate the caller's deadline (never waiting longer than our own limit), so the
        // registry rolls back rather than records an access nobody will see. Keep a margin
        // (a tenth, at most 100 ms) so our answer reaches the caller before it gives up.
        // The caller's clock started when its request arrived: what is left is its deadline less
        // the time spent here so far, less the margin.
        let budget = deadline.map_or(self.registry_timeout, |d| {
            d.saturating_sub(started.elapsed())
                .saturating_sub((d / 10).min(Duration::from_millis(100)))
                .min(self.registry_timeout)
        });
        if budget.is_zero() {
            // Nothing was sent: this much is certain.
            return Err(LookupError::DeadlineExceeded.into());
        }
        outbound.set_timeout(budget);
        if let Some(id) = log_id {
            outbound
                .metadata_mut()
                .insert(cpis_core::request_id::HEADER, id);
        }
        // The registry's call span continues this call's trace (`traceparent`), as a child of
        // this call's own span (the current one: no span is entered between the call's and
        // here). A client span between them would show only what the gap between the two
        // already shows, and cost every lookup 10 to 15 µs of CPU with export on (README,
        // "Performance").
        cpis_core::telemetry::propagate::inject(&tracing::Span::current(), outbound.metadata_mut());
        let mut registry = self.registry.clone();
        let call = registry.disclose(outbound);
        let answer = match tokio::time::timeout(budget, call).await {
            // The call may have reached the registry and committed: say so, never "not recorded".
            Err(_) => {
                return Err(LookupError::OutcomeUnknown {
                    deadline: deadline.is_some(),
                }
                .into());
            }
            Ok(Err(status)) => return Err(map_registry_status(&status, deadline).into()),
            Ok(Ok(answer)) => answer.into_inner(),
        };
        tracing::info!(mode = mode.as_str_name(), councils = answer.alerts.len(), access_id = %answer.access_id, "lookup answered");
        count_lookup(
            setting,
            if answer.alerts.is_empty() {
                "no_alert"
            } else {
                "alert"
            },
        );
        Ok(Response::new(LookupChildResponse {
            alerts: answer.alerts,
            recent_accesses: answer.recent_accesses,
        }))
    }
}

/// Counts a lookup answered (`cpis_lookups_total{setting, outcome}`): the care setting's name
/// and whether it found an alert, or was refused by policy; never who or which child.
fn count_lookup(setting: CareSetting, outcome: &'static str) {
    use cpis_core::metrics::KeyValue;
    cpis_core::metrics::metrics().lookups.add(
        1,
        &[
            KeyValue::new("setting", setting.as_str_name()),
            KeyValue::new("outcome", outcome),
        ],
    );
}

/// The registry's answer as the NHS caller should see it. The caller's own faults
/// (INVALID_ARGUMENT) pass through with the registry's reason and field violations: they are
/// permanent, and retrying would fail forever; so does a throttled caller's RESOURCE_EXHAUSTED
/// (LOOKUPS_THROTTLED) with its retry delay. A registry that refuses this service
/// (UNAUTHENTICATED, PERMISSION_DENIED) or lacks the call (UNIMPLEMENTED) is a misconfiguration no
/// retry will cure: INTERNAL, logged for the operator. Everything else, including what a broken
/// connection looks like (INTERNAL or UNKNOWN from the transport), is "nothing disclosed; retry".
fn map_registry_status(status: &Status, deadline: Option<Duration>) -> LookupError {
    match status.code() {
        // The registry rolled the access back and says so: nothing was recorded.
        Code::DeadlineExceeded
            if cpis_core::status::reason_of(status) == Some(ErrorReason::AccessNotRecorded) =>
        {
            LookupError::DeadlineExceeded
        }
        // Cut off in transport (a timeout or cancellation on the way): the commit may have
        // happened.
        Code::DeadlineExceeded | Code::Cancelled => LookupError::OutcomeUnknown {
            deadline: deadline.is_some(),
        },
        // Rebuilt from code, message and details only: the registry's headers stay inside.
        // The enumeration guard's refusal is the caller's own too, and it is not "retry now":
        // its RetryInfo says how long to wait, so it reaches the clinician as the registry said.
        // So does the registry's overload refusal, made before anything was read or recorded.
        Code::InvalidArgument | Code::ResourceExhausted
            if status.code() == Code::InvalidArgument
                || matches!(
                    cpis_core::status::reason_of(status),
                    Some(ErrorReason::LookupsThrottled | ErrorReason::Overloaded)
                ) =>
        {
            LookupError::Registry(Status::with_details(
                status.code(),
                status.message(),
                status.details().to_vec().into(),
            ))
        }
        code @ (Code::Unauthenticated | Code::PermissionDenied | Code::Unimplemented) => {
            tracing::error!(code = ?code, "the registry refuses this lookup service; check its credential and address");
            LookupError::Internal
        }
        // The registry's own word that the commit's outcome is unknown.
        _ if cpis_core::status::reason_of(status) == Some(ErrorReason::AccessMayBeRecorded) => {
            LookupError::OutcomeUnknown {
                deadline: deadline.is_some(),
            }
        }
        // The registry's own answer (it carries a reason): as it says.
        Code::Unavailable if cpis_core::status::reason_of(status).is_some() => {
            LookupError::RegistryUnavailable(
                cpis_core::status::reason_of(status).unwrap_or(ErrorReason::BackendUnavailable),
            )
        }
        // The transport's: tonic reports a connection it could not make as UNAVAILABLE, so the
        // request was most likely never delivered.
        Code::Unavailable => LookupError::RegistryUnavailable(ErrorReason::BackendUnavailable),
        // Anything else without the registry's reason (a stream reset, a proxy cutting the
        // call) may have come after the request reached the registry.
        code => {
            tracing::warn!(code = ?code, "registry call cut off; the access may have been recorded");
            LookupError::OutcomeUnknown {
                deadline: deadline.is_some(),
            }
        }
    }
}
