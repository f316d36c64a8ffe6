//! Integration tests of the registry: the real server on 127.0.0.1:0, through generated clients.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed expectation is a failed test

mod harness;
mod surface;
