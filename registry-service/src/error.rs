//! The registry's error type and its one closed mapping to gRPC status codes. Every layer returns
//! `RegistryError` in domain terms (a record not found, a number inactive, the database down);
//! only this file decides which code, reason and message a caller sees.

use cpis_core::{auth::AuthError, server::ServeError, status::FieldViolation};
use cpis_proto::cpis::common::v1::{ErrorReason, InactiveReason};
use tonic::{Code, Status};

use crate::domain::nhs_status::Inactive;

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
    /// The request names another council's data.
    #[error("the request names another council's data")]
    WrongCouncil,
    /// The credential lacks the scope the call needs.
    #[error("the credential lacks scope \"{0}\"")]
    ScopeMissing(&'static str),
    /// The council has set no contact details.
    #[error("no contact details have been set for this council")]
    ContactsNotSet,
    /// A write needs the council's contact details first.
    #[error("set the council's contact details (SetContactDetails) before storing records")]
    ContactsRequired,
    /// The council holds no record for the NHS number.
    #[error("the council holds no record for this NHS number")]
    RecordNotFound,
    /// No completed batch with this id.
    #[error("no completed batch with this id")]
    BatchNotFound,
    /// The NHS number is inactive (or superseded): it takes no more records.
    #[error("{}", Inactive::from(.reason).message())]
    NhsNumberInactive {
        /// Why the number is inactive.
        reason: cpis_proto::cpis::common::v1::InactiveReason,
        /// The number to use instead (superseded only).
        replacement: Option<String>,
    },
    /// A notification sequence beyond what was issued.
    #[error("that sequence number has not been issued yet")]
    SequenceNotIssued,
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
    /// Another upload of the batch id is running.
    #[error(
        "another upload of this batch id is in progress; nothing of this one was applied; retry after it completes"
    )]
    BatchInProgress,
    /// The upload stream sent nothing for too long.
    #[error(
        "no message arrived for {0:?}; chunks already committed stay committed; resend the batch with the same id to complete it"
    )]
    BatchStalled(std::time::Duration),
    /// The upload stream itself failed (the client cancelled, or sent a message that does not
    /// decode or is too large): its status is the answer.
    #[error("upload stream: {}", .0.message())]
    Stream(Box<Status>),
    /// The batch stream is malformed.
    #[error("malformed batch: {0}")]
    BatchMalformed(String),
    /// A notification subscriber stopped reading.
    #[error("the subscriber is not reading; reconnect from the last acknowledged sequence")]
    SubscriberTooSlow,
    /// The council's or the server's subscriber limit is reached.
    #[error("too many notification subscribers; close one or retry later")]
    TooManySubscribers,
    /// The server is draining.
    #[error("the registry is shutting down; reconnect from the last acknowledged sequence")]
    ShuttingDown,
    /// The enumeration guard refuses the lookup: the caller (or its whole organisation) looked
    /// up more distinct NHS numbers in a window than its threshold allows.
    #[error(
        "{} looked up more distinct children than a care setting does in the window; lookups are refused for {}s (suspected enumeration; a security event was raised)",
        if *.organisation { "this organisation has" } else { "this caller has" },
        .retry_after.as_secs()
    )]
    LookupsThrottled {
        /// Until the window lets the caller in again.
        retry_after: std::time::Duration,
        /// Whether the whole organisation is throttled.
        organisation: bool,
    },
    /// The caller's deadline passed before the work could commit; nothing was recorded.
    #[error("deadline exceeded before the access could be recorded")]
    DeadlineExceeded,
    /// A disclosure's commit failed after it was sent: the access may have been recorded.
    #[error("the commit's outcome is unknown")]
    OutcomeUnknown,
    /// A disclosure whose access could not be recorded: nothing was disclosed.
    #[error("access not recorded: {0}")]
    AccessNotRecorded(Box<RegistryError>),
    /// The database could not be reached in time (pool timeout, connection lost).
    #[error("database unavailable")]
    Unavailable,
    /// A database error that is not the caller's fault.
    #[error("database error: {}", describe_database_error(.0))]
    Database(#[from] diesel::result::Error),
    /// A stored row that does not decode (named by table and row key, never by its data).
    #[error("corrupt row in {table} ({key})")]
    CorruptRow {
        /// The table.
        table: &'static str,
        /// The row's key (an id or sequence; never child data).
        key: String,
    },
    /// A defect; logged with context, answered generically.
    #[error("internal error: {0}")]
    Internal(String),
}

impl RegistryError {
    /// One invalid field.
    pub fn invalid(
        field: impl Into<String>,
        reason: ErrorReason,
        description: impl Into<String>,
    ) -> Self {
        Self::Invalid(vec![FieldViolation::new(field, reason, description)])
    }

    /// A required field is missing.
    pub fn required(field: impl Into<String>) -> Self {
        Self::invalid(field, ErrorReason::FieldRequired, "is required")
    }

    /// A page token this query did not issue.
    pub fn bad_page_token() -> Self {
        Self::invalid(
            "page_token",
            ErrorReason::PageTokenInvalid,
            "is not a token this query issued",
        )
    }

    /// A stored row that does not decode: logged here, once, by table and key (no data).
    pub fn corrupt(table: &'static str, key: impl ToString) -> Self {
        let key = key.to_string();
        tracing::error!(table, key = %key, "stored row does not decode");
        Self::CorruptRow { table, key }
    }

    /// Wraps a failure of the disclose-and-record transaction: when it is the infrastructure's
    /// (database, pool, defect), nothing was disclosed and the caller may retry; the caller's own
    /// faults pass through unchanged.
    pub fn access_not_recorded(self) -> Self {
        match self {
            e @ (Self::Database(_)
            | Self::Unavailable
            | Self::Internal(_)
            | Self::CorruptRow { .. }) => Self::AccessNotRecorded(Box::new(e)),
            other => other,
        }
    }

    /// The reason an inactive number is refused with: superseded (use the replacement) or
    /// inactive.
    pub(crate) fn reason_inactive(reason: InactiveReason) -> ErrorReason {
        if reason == InactiveReason::Superseded {
            ErrorReason::SupersededNhsNumber
        } else {
            ErrorReason::NhsNumberInactive
        }
    }

    /// True when the database connection was lost (the call may be retried).
    fn is_connection_lost(&self) -> bool {
        use diesel::result::{DatabaseErrorKind as K, Error as E};
        matches!(
            self,
            Self::Database(E::DatabaseError(
                K::ClosedConnection | K::UnableToSendCommand,
                _
            ))
        )
    }
}

impl From<Inactive> for RegistryError {
    fn from(inactive: Inactive) -> Self {
        Self::NhsNumberInactive {
            reason: inactive.reason,
            replacement: inactive.replacement,
        }
    }
}

impl From<FieldViolation> for RegistryError {
    fn from(violation: FieldViolation) -> Self {
        Self::Invalid(vec![violation])
    }
}

impl From<RegistryError> for Status {
    fn from(error: RegistryError) -> Self {
        use ErrorReason as R;
        use cpis_core::status::{invalid_argument, with_reason};
        let error = match error {
            RegistryError::Stream(status) => return *status,
            other => other,
        };
        let message = error.to_string();
        let (code, reason) = match &error {
            RegistryError::Invalid(violations) => return invalid_argument(violations),
            RegistryError::Unauthenticated(auth) => return auth.to_status(),
            RegistryError::WrongCouncil => (Code::PermissionDenied, R::WrongLocalAuthority),
            RegistryError::ScopeMissing(_) => (Code::PermissionDenied, R::ScopeMissing),
            RegistryError::ContactsNotSet => (Code::NotFound, R::ContactDetailsMissing),
            RegistryError::ContactsRequired => (Code::FailedPrecondition, R::ContactDetailsMissing),
            RegistryError::RecordNotFound => (Code::NotFound, R::RecordNotFound),
            RegistryError::BatchNotFound => (Code::NotFound, R::BatchNotFound),
            RegistryError::NhsNumberInactive {
                reason,
                replacement,
            } => {
                let reason = RegistryError::reason_inactive(*reason);
                let message = match replacement {
                    Some(replacement) => format!("{message} ({replacement})"),
                    None => message,
                };
                return with_reason(Code::FailedPrecondition, reason, message);
            }
            RegistryError::SequenceNotIssued => (Code::OutOfRange, R::SequenceNotIssued),
            RegistryError::VersionConflict { .. } => (Code::Aborted, R::VersionConflict),
            RegistryError::BatchIdReused => (Code::AlreadyExists, R::BatchIdReused),
            RegistryError::BatchMalformed(_) => (Code::InvalidArgument, R::BatchMalformed),
            RegistryError::BatchInProgress => (Code::Aborted, R::BatchInProgress),
            RegistryError::BatchStalled(_) => (Code::DeadlineExceeded, R::BatchStalled),
            RegistryError::SubscriberTooSlow => (Code::ResourceExhausted, R::SubscriberTooSlow),
            RegistryError::TooManySubscribers => (Code::ResourceExhausted, R::Overloaded),
            RegistryError::ShuttingDown => (Code::Unavailable, R::ShuttingDown),
            RegistryError::DeadlineExceeded => (Code::DeadlineExceeded, R::AccessNotRecorded),
            RegistryError::LookupsThrottled { retry_after, .. } => {
                return cpis_core::status::retry_later(
                    Code::ResourceExhausted,
                    R::LookupsThrottled,
                    message,
                    *retry_after,
                );
            }
            RegistryError::OutcomeUnknown => {
                return with_reason(
                    Code::Unavailable,
                    R::AccessMayBeRecorded,
                    "the access may have been recorded (its commit's outcome is unknown); nothing was disclosed",
                );
            }
            RegistryError::AccessNotRecorded(cause) => {
                tracing::error!(error = %cause, "access not recorded; nothing disclosed");
                return with_reason(
                    Code::Unavailable,
                    R::AccessNotRecorded,
                    "the access could not be recorded, so nothing was disclosed; retry",
                );
            }
            e if matches!(e, RegistryError::Unavailable) || e.is_connection_lost() => {
                return with_reason(
                    Code::Unavailable,
                    R::BackendUnavailable,
                    "the registry database is unavailable; retry",
                );
            }
            other => {
                // Not the caller's fault and not for the caller to see: log it, answer generically.
                tracing::error!(error = %other, "internal error");
                return with_reason(Code::Internal, R::Internal, "internal error");
            }
        };
        with_reason(code, reason, message)
    }
}

/// The SQLSTATE of a database error kind. diesel does not pass the engine's code on, but each
/// kind it names stands for one code (SQLite's equivalents are given PostgreSQL's codes, so logs
/// read the same on both engines); the rest are "?".
fn sqlstate(kind: &diesel::result::DatabaseErrorKind) -> &'static str {
    use diesel::result::DatabaseErrorKind as K;
    match kind {
        K::UniqueViolation => "23505",
        K::ForeignKeyViolation => "23503",
        K::NotNullViolation => "23502",
        K::CheckViolation => "23514",
        K::SerializationFailure => "40001",
        K::ReadOnlyTransaction => "25006",
        K::RestrictViolation => "23001",
        K::ExclusionViolation => "23P01",
        K::ClosedConnection | K::UnableToSendCommand => "08006",
        _ => "?",
    }
}

/// Describes a database error without its message text: PostgreSQL puts key values (NHS
/// numbers) into constraint messages, and those must never reach the logs.
fn describe_database_error(error: &diesel::result::Error) -> String {
    match error {
        diesel::result::Error::DatabaseError(kind, info) => format!(
            "{kind:?} (SQLSTATE {}, table {}, constraint {})",
            sqlstate(kind),
            info.table_name().unwrap_or("?"),
            info.constraint_name().unwrap_or("?")
        ),
        other => {
            use diesel::result::Error as E;
            match other {
                E::NotFound => "not found",
                E::DeserializationError(_) => "deserialization failed",
                E::SerializationError(_) => "serialization failed",
                E::InvalidCString(_) => "invalid C string",
                E::QueryBuilderError(_) => "query could not be built",
                E::RollbackErrorOnCommit { .. } => "rollback failed after a failed commit",
                E::RollbackTransaction => "transaction rolled back",
                E::AlreadyInTransaction => "already in a transaction",
                E::NotInTransaction => "not in a transaction",
                E::BrokenTransactionManager => "broken transaction manager",
                _ => "unnamed diesel error",
            }
            .into()
        }
    }
}

#[cfg(test)]
mod tests {
    use diesel::result::{DatabaseErrorKind, Error};

    use super::*;

    #[test]
    fn a_database_error_is_logged_by_code_and_never_by_its_text() {
        // PostgreSQL's message for a unique violation quotes the key: an NHS number here.
        let error = RegistryError::Database(Error::DatabaseError(
            DatabaseErrorKind::UniqueViolation,
            Box::new(String::from(
                "duplicate key value violates unique constraint: Key (nhs_number)=(9434765919)",
            )),
        ));
        let logged = error.to_string();
        assert!(logged.contains("SQLSTATE 23505"), "{logged}");
        assert!(!logged.contains("9434765919"), "{logged}");
        let unknown = RegistryError::Database(Error::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new(String::from("deadlock detected")),
        ));
        assert!(unknown.to_string().contains("SQLSTATE ?"), "{unknown}");
    }
}
