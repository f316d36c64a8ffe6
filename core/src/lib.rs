//! What both CP-IS services share: server plumbing (health, reflection, graceful drain),
//! shutdown signals and structured logging.
#![forbid(unsafe_code)]

pub mod server;
pub mod shutdown;
pub mod telemetry;
