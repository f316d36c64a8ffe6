//! The registry's error type and its one closed mapping to gRPC status codes.

use cpis_core::server::ServeError;

/// Everything that can stop the registry or fail one of its calls.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The gRPC server itself failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
}
