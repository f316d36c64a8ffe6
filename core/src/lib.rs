//! What both CP-IS services share: the validated seam (NHS number, ODS code, accessor), gRPC status building, server plumbing (health, reflection, graceful drain, panics answered INTERNAL),
//! shutdown signals and structured logging.
#![forbid(unsafe_code)]

pub mod accessor;
pub mod auth;
pub mod config;
pub mod deadline;
pub mod nhs_number;
pub mod ods;
pub mod panics;
pub mod server;
pub mod shutdown;
pub mod status;
pub mod telemetry;
