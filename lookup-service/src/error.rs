//! The lookup service's error type and its one closed mapping to gRPC status codes.

use cpis_core::{auth::AuthError, server::ServeError, status::FieldViolation};
use cpis_proto::cpis::common::v1::ErrorReason;
use tonic::{Code, Status};

/// Everything that can stop the lookup service or fail one of its calls.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The gRPC server itself failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// Bad configuration, reported at start-up.
    #[error("configuration: {0}")]
    Config(String),
    /// The request is invalid.
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    /// A request header is malformed.
    #[error("{0}")]
    Header(String),
    /// The caller is not authenticated.
    #[error(transparent)]
    Unauthenticated(#[from] AuthError),
    /// The role policy refuses the access.
    #[error("access denied: {0}")]
    AccessDenied(&'static str),
    /// The registry could not be reached or could not record the access.
    #[error("registry unavailable")]
    RegistryUnavailable(ErrorReason),
    /// The caller's deadline passed and the registry rolled the access back.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The registry's answer did not come back in time: the access may have been recorded.
    #[error("outcome unknown")]
    OutcomeUnknown {
        /// Whether the caller set a deadline (DEADLINE_EXCEEDED) or not (UNAVAILABLE).
        deadline: bool,
    },
    /// The registry refused the caller's own request (passed through as the registry said it).
    #[error("refused by the registry: {}", .0.message())]
    Registry(Status),
    /// A fault that is neither the caller's nor temporary (a misconfigured service credential,
    /// a defect).
    #[error("internal error")]
    Internal,
}

impl From<FieldViolation> for LookupError {
    fn from(violation: FieldViolation) -> Self {
        Self::Invalid(vec![violation])
    }
}

impl From<LookupError> for Status {
    fn from(error: LookupError) -> Self {
        use cpis_core::status::{invalid_argument, with_reason};
        match error {
            LookupError::Invalid(violations) => invalid_argument(&violations),
            LookupError::Header(message) => with_reason(
                Code::FailedPrecondition,
                ErrorReason::HeaderInvalid,
                message,
            ),
            LookupError::Unauthenticated(auth) => auth.to_status(),
            LookupError::AccessDenied(why) => {
                with_reason(Code::PermissionDenied, ErrorReason::AccessDenied, why)
            }
            LookupError::RegistryUnavailable(reason) => with_reason(
                Code::Unavailable,
                reason,
                "CP-IS could not record this access, so nothing was disclosed; retry",
            ),
            LookupError::DeadlineExceeded => with_reason(
                Code::DeadlineExceeded,
                ErrorReason::AccessNotRecorded,
                "the deadline passed before the access was recorded; nothing was disclosed",
            ),
            LookupError::OutcomeUnknown { deadline } => with_reason(
                if deadline {
                    Code::DeadlineExceeded
                } else {
                    Code::Unavailable
                },
                ErrorReason::AccessMayBeRecorded,
                "CP-IS did not answer in time: nothing was disclosed, but the access may have been recorded",
            ),
            LookupError::Registry(status) => status,
            LookupError::Internal => {
                with_reason(Code::Internal, ErrorReason::Internal, "internal error")
            }
            other @ (LookupError::Serve(_) | LookupError::Config(_)) => {
                tracing::error!(error = %other, "internal error");
                with_reason(Code::Internal, ErrorReason::Internal, "internal error")
            }
        }
    }
}
