//! Test-only helpers shared by every crate's integration tests and the benchmark: boot the
//! registry and lookup service together ([`Stack`]) or any server alone on an ephemeral loopback
//! port, reach them through generated clients (health, reflection) over plaintext or mutual TLS
//! (a throwaway PKI: [`pki`]), and locate the third-party
//! tools (Python client tooling, grpcurl) that `scripts/tools.sh` installs; capture what servers
//! log ([`logs`]).
#![forbid(unsafe_code)]
#![allow(clippy::expect_used, clippy::unwrap_used)] // test support: a failed expectation is a failed test

pub mod db;
pub mod fixtures;
pub mod jwks;
pub mod logs;
pub mod metrics;
pub mod nhs;
pub mod otlp;
pub mod pg_cluster;
pub mod pki;
pub mod process;
pub mod server;
pub mod stack;
pub mod sweep;
pub mod tools;

pub use server::TestServer;
pub use stack::{Stack, StackBuilder};
