//! What both CP-IS services share: the validated seam (NHS number, ODS code, accessor, names),
//! gRPC status building, server plumbing (health, reflection, graceful drain, panics answered
//! INTERNAL, request ids, connection timeouts, TLS with reloading certificates), shutdown signals, structured logging and metrics (`metrics`, the admin HTTP port: `admin`) (caller
//! text escaped and bounded: `text`).
#![forbid(unsafe_code)]

pub mod accessor;
pub mod admin;
pub mod admission;
pub mod auth;
pub mod config;
pub mod connection;
pub mod deadline;
pub mod handshake;
pub mod keys;
pub mod limits;
pub mod log_budget;
pub mod metrics;
pub mod nhs_number;
pub mod ods;
pub mod panics;
pub mod rate;
pub mod request_id;
pub mod rpc_metrics;
pub mod server;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod text;
pub mod tls;
