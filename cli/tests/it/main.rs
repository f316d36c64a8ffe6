//! End-to-end tests of the `cpis` tool: each test starts the real dev stack (`cpis dev` as a
//! child process, both services on 127.0.0.1:0, SQLite in a fresh directory) and drives it with
//! the real `cpis` commands and the Python council example, as a person would.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed expectation is a failed test

mod commands;
mod dev_stack;
mod first_contact;
mod harness;
mod python_example;
mod readme;
mod upload;
