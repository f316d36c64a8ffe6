//! Integration tests of the lookup service in front of a real registry (SQLite and PostgreSQL),
//! through generated clients.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed expectation is a failed test

mod disclosure;
mod edges;
mod enumeration;
mod faults;
mod harness;
mod keys;
mod metrics;
mod protective_edge;
mod roles;
mod seam;
mod surface;
mod traces;
mod transport;
mod visibility;
