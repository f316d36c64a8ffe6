//! `cpis.registry.v1.DisclosureService`, called only by the lookup service (its interceptor
//! checks the service credential): one call that discloses the visible records for an NHS number
//! and records the access in one transaction (shared with concurrent lookups: group commit, see
//! `disclosure_queue`), unless the enumeration guard refuses it.

use std::sync::Arc;
use std::time::Instant;

use cpis_core::{accessor::ValidAccessor, nhs_number::NhsNumber, status::FieldViolation};
use cpis_proto::cpis::common::v1::{AccessMode, CouncilAlert, ErrorReason};
use cpis_proto::cpis::registry::v1::{
    DiscloseRequest, DiscloseResponse, disclosure_service_server::DisclosureService,
};
use tonic::{Request, Response, Status};

use super::Registry;
use super::convert::{council_to_wire, disclosed_plan, recent_access};
use crate::db::disclosure::{DisclosureRequest, Outcome};
use crate::db::enumeration::Throttled;
use crate::error::RegistryError;

/// Longest request id (the EPR's X-Request-ID), in bytes.
const MAX_REQUEST_ID: usize = 128;

/// The part of a caller's budget kept for the commit and the answer's way back: a fifth, at
/// least 2 ms and at most 100 ms.
fn commit_margin(budget: std::time::Duration) -> std::time::Duration {
    (budget / 5).clamp(
        std::time::Duration::from_millis(2),
        std::time::Duration::from_millis(100),
    )
}

/// Handler for `cpis.registry.v1.DisclosureService`.
#[derive(Clone, Debug)]
pub(crate) struct DisclosureApi(pub Arc<Registry>);

/// Validates a disclosure request, reporting every problem at once.
fn validate(
    body: DiscloseRequest,
) -> Result<(NhsNumber, ValidAccessor, AccessMode, String), RegistryError> {
    let mut violations = Vec::new();
    let nhs = NhsNumber::parse_field(&body.nhs_number, "nhs_number")
        .map_err(|v| violations.push(v))
        .ok();
    let accessor = match body.accessor {
        None => {
            violations.push(FieldViolation::new(
                "accessor",
                ErrorReason::FieldRequired,
                "is required",
            ));
            None
        }
        Some(wire) => ValidAccessor::try_from(wire)
            .map_err(|found| violations.extend(found.iter().map(|v| v.to_field_violation())))
            .ok(),
    };
    let mode = match AccessMode::try_from(body.access_mode) {
        Ok(AccessMode::Unspecified) | Err(_) => {
            violations.push(FieldViolation::new(
                "access_mode",
                ErrorReason::FieldRequired,
                "unscheduled or scheduled silent read",
            ));
            None
        }
        Ok(mode) => Some(mode),
    };
    if body.request_id.len() > MAX_REQUEST_ID {
        violations.push(FieldViolation::new(
            "request_id",
            ErrorReason::FieldTooLong,
            "must be at most 128 bytes",
        ));
    }
    match (nhs, accessor, mode, violations.is_empty()) {
        (Some(nhs), Some(accessor), Some(mode), true) => Ok((nhs, accessor, mode, body.request_id)),
        _ => Err(RegistryError::Invalid(violations)),
    }
}

#[tonic::async_trait]
impl DisclosureService for DisclosureApi {
    async fn disclose(
        &self,
        request: Request<DiscloseRequest>,
    ) -> Result<Response<DiscloseResponse>, Status> {
        // Commit only while the answer can still reach the caller: the caller's deadline less
        // a margin for the commit itself and the way back. Past it, roll back and say so.
        let deadline = cpis_core::deadline::remaining(request.metadata())
            .map(|budget| Instant::now() + budget.saturating_sub(commit_margin(budget)));
        let (nhs_number, accessor, mode, request_id) = validate(request.into_inner())?;
        let setting = accessor.care_setting();
        let registry = &self.0;
        let now = registry.clock.now_micros();
        let work = DisclosureRequest {
            nhs_number,
            accessor,
            mode,
            request_id,
            now,
            today: registry.clock.today(),
            deadline,
            limits: registry.enumeration,
        };
        let started = Instant::now();
        let written = registry.disclosures.disclose(work).await;
        let outcome = if written.is_ok() {
            "committed"
        } else {
            "failed"
        };
        cpis_core::metrics::metrics().disclosure_duration.record(
            started.elapsed().as_secs_f64(),
            &[cpis_core::metrics::KeyValue::new("outcome", outcome)],
        );
        let (outcome, notified) = written.map_err(RegistryError::access_not_recorded)?;
        let disclosure = match outcome {
            Outcome::Disclosed(disclosure) => disclosure,
            Outcome::Throttled(throttled) => return Err(refuse(&throttled, now).into()),
        };
        // Counts and council codes only: never the NHS number.
        tracing::info!(
            mode = mode.as_str_name(),
            setting = setting.as_str_name(),
            councils = disclosure.alerts.len(),
            notifications = notified,
            access_id = %disclosure.access_id,
            "disclosed"
        );
        Ok(Response::new(DiscloseResponse {
            alerts: disclosure
                .alerts
                .iter()
                .map(|(council, plans)| CouncilAlert {
                    local_authority: Some(council_to_wire(council, false)),
                    plans: plans.iter().map(disclosed_plan).collect(),
                })
                .collect(),
            recent_accesses: disclosure.recent.iter().map(recent_access).collect(),
            access_id: disclosure.access_id,
        }))
    }
}

/// The refusal of a throttled lookup, after the security events it raised (committed by now)
/// are logged: one line per crossing on target "security", with who, where, which threshold and
/// window, and never which child. Calls refused while a throttle is in force log nothing, so a
/// sweep cannot flood the log.
fn refuse(throttled: &Throttled, now: i64) -> RegistryError {
    use cpis_core::text::{LogOds, LogSafe};
    use cpis_proto::cpis::common::v1::accessor::Kind;
    use cpis_proto::cpis::registry::v1::ThrottledSubject;
    for event in &throttled.raised {
        count_security_event(event.kind);
        let accessor = event.accessor.as_ref();
        let (user, system) = match accessor.and_then(|a| a.kind.as_ref()) {
            Some(Kind::Person(p)) => (p.user_id.as_str(), ""),
            Some(Kind::System(s)) => (
                s.responsible_person
                    .as_ref()
                    .map_or("", |p| p.user_id.as_str()),
                s.system_id.as_str(),
            ),
            None => ("", ""),
        };
        let org = accessor
            .and_then(|a| a.organisation.as_ref())
            .map_or("", |o| o.ods_code.as_str());
        let setting = accessor.map_or(0, |a| a.care_setting);
        tracing::warn!(
            target: "security",
            event = "lookups_throttled",
            subject = ThrottledSubject::try_from(event.subject)
                .unwrap_or(ThrottledSubject::Unspecified)
                .as_str_name(),
            user = %LogSafe(user),
            system = %LogSafe(system),
            org = %LogOds(org),
            setting = cpis_proto::cpis::common::v1::CareSetting::try_from(setting)
                .unwrap_or_default()
                .as_str_name(),
            threshold = event.threshold,
            window_secs = event.window.as_ref().map_or(0, |w| w.seconds),
            event_id = %event.event_id,
            "enumeration threshold crossed; lookups throttled"
        );
    }
    let micros = u64::try_from(throttled.until.saturating_sub(now)).unwrap_or(0);
    // Whole seconds, rounded up: a caller that waits as told is let in.
    let retry_after = std::time::Duration::from_secs(micros.div_ceil(1_000_000).max(1));
    RegistryError::LookupsThrottled {
        retry_after,
        organisation: throttled.organisation,
    }
}

/// Counts a recorded security event by its kind's name (never who or which child) in
/// `cpis_security_events_total{kind}`.
fn count_security_event(kind: i32) {
    use cpis_proto::cpis::registry::v1::SecurityEventKind;
    let kind = match SecurityEventKind::try_from(kind) {
        Ok(SecurityEventKind::LookupsThrottled) => "lookups_throttled",
        _ => "unspecified",
    };
    cpis_core::metrics::metrics()
        .security_events
        .add(1, &[cpis_core::metrics::KeyValue::new("kind", kind)]);
}

/// Puts every security event kind's series at 0 before any event: Prometheus' increase() does
/// not count a series' first value, so the first event would otherwise never alert.
pub(crate) fn expose_security_event_counts() {
    cpis_core::metrics::metrics().security_events.add(
        0,
        &[cpis_core::metrics::KeyValue::new(
            "kind",
            "lookups_throttled",
        )],
    );
}
