//! The lookup service's error type and its one closed mapping to gRPC status codes.

use cpis_core::server::ServeError;

/// Everything that can stop the lookup service or fail one of its calls.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The gRPC server itself failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
}
