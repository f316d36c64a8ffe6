//! Test-only helpers shared by every crate's integration tests: boot a real server on an
//! ephemeral loopback port, reach it through generated clients (health, reflection), and locate
//! the third-party tools (Python client tooling, grpcurl) that `scripts/tools.sh` installs.
#![forbid(unsafe_code)]
#![allow(clippy::expect_used, clippy::unwrap_used)] // test support: a failed expectation is a failed test

pub mod db;
pub mod nhs;
pub mod server;
pub mod tools;

pub use server::TestServer;
