//! What both CP-IS services share: the NHS number, gRPC status building, server plumbing (health, reflection, graceful drain),
//! shutdown signals and structured logging.
#![forbid(unsafe_code)]

pub mod auth;
pub mod deadline;
pub mod nhs_number;
pub mod server;
pub mod shutdown;
pub mod status;
pub mod telemetry;
