//! Building gRPC statuses the way the contracts promise: a code, a generic or specific message,
//! a `google.rpc.ErrorInfo` (domain "cpis", reason from `cpis.common.v1.ErrorReason`) and, for
//! validation failures, a `google.rpc.BadRequest` naming each offending field.

use cpis_proto::cpis::common::v1::ErrorReason;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// One offending field of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field's path in the request, for example `record.date_of_birth`.
    pub field: String,
    /// The stable reason.
    pub reason: ErrorReason,
    /// A human-readable description, free of personal data.
    pub description: String,
}

impl FieldViolation {
    /// Creates a violation.
    pub fn new(
        field: impl Into<String>,
        reason: ErrorReason,
        description: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            reason,
            description: description.into(),
        }
    }
}

/// A status with an `ErrorInfo` carrying `reason`.
pub fn with_reason(code: Code, reason: ErrorReason, message: impl Into<String>) -> Status {
    let details = ErrorDetails::with_error_info(
        reason.as_info_reason(),
        cpis_proto::ERROR_DOMAIN,
        std::collections::HashMap::<String, String>::new(),
    );
    Status::with_error_details(code, message, details)
}

/// A status with an `ErrorInfo` carrying `reason` and a `google.rpc.RetryInfo` asking the
/// caller to wait `delay` before trying again (overload, rate limits, throttling).
pub fn retry_later(
    code: Code,
    reason: ErrorReason,
    message: impl Into<String>,
    delay: std::time::Duration,
) -> Status {
    let mut details = ErrorDetails::with_error_info(
        reason.as_info_reason(),
        cpis_proto::ERROR_DOMAIN,
        std::collections::HashMap::<String, String>::new(),
    );
    details.set_retry_info(Some(delay));
    Status::with_error_details(code, message, details)
}

/// The retry delay a status asks for (`google.rpc.RetryInfo`), if any.
pub fn retry_delay(status: &Status) -> Option<std::time::Duration> {
    status
        .get_error_details()
        .retry_info()
        .and_then(|info| info.retry_delay)
}

/// INVALID_ARGUMENT with a `BadRequest` listing every violation; the `ErrorInfo` reason is the
/// first violation's. The message names the fields so a person reading one line can act on it.
pub fn invalid_argument(violations: &[FieldViolation]) -> Status {
    let reason = violations
        .first()
        .map_or(ErrorReason::Unspecified, |v| v.reason);
    let mut details = ErrorDetails::with_error_info(
        reason.as_info_reason(),
        cpis_proto::ERROR_DOMAIN,
        std::collections::HashMap::<String, String>::new(),
    );
    for violation in violations {
        details.add_bad_request_violation(violation.field.clone(), violation.description.clone());
    }
    let message = violations
        .iter()
        .map(|v| {
            format!(
                "{}: {} ({})",
                v.field,
                v.description,
                v.reason.as_info_reason()
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// The `ErrorInfo` reason of a status, if it carries one from CP-IS.
pub fn reason_of(status: &Status) -> Option<ErrorReason> {
    let info = status.get_details_error_info()?;
    if info.domain != cpis_proto::ERROR_DOMAIN {
        return None;
    }
    ErrorReason::from_info_reason(&info.reason)
}

/// The fields named by a status's `BadRequest`, in order.
pub fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|br| br.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// The name of a gRPC status code as the specification spells it (`OK`, `RESOURCE_EXHAUSTED`):
/// the `grpc_code` metric label, and what `cpis` prints.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
