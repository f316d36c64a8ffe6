//! The registry's error type and its one closed mapping to gRPC status codes. Handlers return
//! `RegistryError`; only this file decides what a caller sees.

use cpis_core::{auth::AuthError, server::ServeError, status::FieldViolation};
use cpis_proto::cpis::common::v1::ErrorReason;
use tonic::{Code, Status};

/// Everything that can stop the registry or fail one of its calls.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The gRPC server itself failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// Bad configuration, reported at start-up.
    #[error("configuration: {0}")]
    Config(String),
    /// The database schema is behind the binary.
    #[error(
        "the database schema is behind this binary ({pending} pending migration(s)); run `registry-service migrate` first (or start with --migrate-on-start in development)"
    )]
    SchemaBehind {
        /// How many migrations are pending.
        pending: usize,
    },
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// The request is invalid.
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    /// The caller is not authenticated.
    #[error(transparent)]
    Unauthenticated(#[from] AuthError),
    /// The caller is known but not allowed.
    #[error("{message}")]
    PermissionDenied {
        /// Stable reason.
        reason: ErrorReason,
        /// Message for the caller.
        message: String,
    },
    /// Something the request names does not exist.
    #[error("{message}")]
    NotFound {
        /// Stable reason.
        reason: ErrorReason,
        /// Message for the caller.
        message: String,
    },
    /// The system is not in a state that allows the call.
    #[error("{message}")]
    FailedPrecondition {
        /// Stable reason.
        reason: ErrorReason,
        /// Message for the caller.
        message: String,
    },
    /// A sequence or position beyond what exists.
    #[error("{message}")]
    OutOfRange {
        /// Stable reason.
        reason: ErrorReason,
        /// Message for the caller.
        message: String,
    },
    /// Optimistic concurrency conflict.
    #[error("record version is {actual}, not the expected {expected}")]
    VersionConflict {
        /// What the caller expected.
        expected: i64,
        /// What is stored (0: no record).
        actual: i64,
    },
    /// The batch id was used for different content.
    #[error("batch id already used for a different set of records")]
    BatchIdReused,
    /// The batch stream is malformed.
    #[error("malformed batch: {0}")]
    BatchMalformed(String),
    /// The caller's deadline passed before the work could commit; nothing was recorded.
    #[error("deadline exceeded before the access could be recorded")]
    DeadlineExceeded,
    /// The database could not be reached in time (pool timeout, connection lost).
    #[error("database unavailable")]
    Unavailable,
    /// A database error that is not the caller's fault.
    #[error("database error: {}", describe_database_error(.0))]
    Database(#[from] diesel::result::Error),
    /// A defect; logged with context, answered generically.
    #[error("internal error: {0}")]
    Internal(String),
}

impl RegistryError {
    /// Shorthand for a refused cross-council access.
    pub fn wrong_council() -> Self {
        Self::PermissionDenied {
            reason: ErrorReason::WrongLocalAuthority,
            message: "the request names another council's data".into(),
        }
    }
}

impl From<RegistryError> for Status {
    fn from(error: RegistryError) -> Self {
        use cpis_core::status::{invalid_argument, with_reason};
        match error {
            RegistryError::Invalid(violations) => invalid_argument(&violations),
            RegistryError::Unauthenticated(auth) => auth.to_status(),
            RegistryError::PermissionDenied { reason, message } => {
                with_reason(Code::PermissionDenied, reason, message)
            }
            RegistryError::NotFound { reason, message } => {
                with_reason(Code::NotFound, reason, message)
            }
            RegistryError::FailedPrecondition { reason, message } => {
                with_reason(Code::FailedPrecondition, reason, message)
            }
            RegistryError::OutOfRange { reason, message } => {
                with_reason(Code::OutOfRange, reason, message)
            }
            e @ RegistryError::VersionConflict { .. } => {
                with_reason(Code::Aborted, ErrorReason::VersionConflict, e.to_string())
            }
            e @ RegistryError::BatchIdReused => with_reason(
                Code::AlreadyExists,
                ErrorReason::BatchIdReused,
                e.to_string(),
            ),
            e @ RegistryError::BatchMalformed(_) => with_reason(
                Code::InvalidArgument,
                ErrorReason::BatchMalformed,
                e.to_string(),
            ),
            e @ RegistryError::DeadlineExceeded => with_reason(
                Code::DeadlineExceeded,
                ErrorReason::AccessNotRecorded,
                e.to_string(),
            ),
            RegistryError::Unavailable => with_reason(
                Code::Unavailable,
                ErrorReason::BackendUnavailable,
                "the registry database is unavailable; retry",
            ),
            RegistryError::Database(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::ClosedConnection
                | diesel::result::DatabaseErrorKind::UnableToSendCommand,
                _,
            )) => with_reason(
                Code::Unavailable,
                ErrorReason::BackendUnavailable,
                "the registry database is unavailable; retry",
            ),
            other => {
                // Not the caller's fault and not for the caller to see: log it, answer generically.
                tracing::error!(error = %other, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

/// Describes a database error without its message text: PostgreSQL puts key values (NHS
/// numbers) into constraint messages, and those must never reach the logs.
fn describe_database_error(error: &diesel::result::Error) -> String {
    match error {
        diesel::result::Error::DatabaseError(kind, info) => format!(
            "{kind:?} (table {}, constraint {})",
            info.table_name().unwrap_or("?"),
            info.constraint_name().unwrap_or("?")
        ),
        diesel::result::Error::NotFound => "not found".into(),
        diesel::result::Error::DeserializationError(_) => "deserialization failed".into(),
        diesel::result::Error::SerializationError(_) => "serialization failed".into(),
        other => format!("{:?}", std::mem::discriminant(other)),
    }
}
