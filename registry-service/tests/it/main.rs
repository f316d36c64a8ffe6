//! Integration tests of the registry: the real server on 127.0.0.1:0 through generated clients,
//! every behaviour on both SQLite and PostgreSQL (each test its own fresh database).
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed expectation is a failed test

mod access_history;
mod auth;
mod bulk;
mod contacts;
mod corrupt;
mod crash;
mod crowds;
mod dates;
mod deploy_manifests;
mod edges;
mod enumeration;
mod group_commit;
mod harness;
mod keys;
mod logs;
mod metrics;
mod nhs_oracle;
mod notifications;
mod paging;
mod protective_edge;
mod races;
mod records;
mod restart;
mod surface;
mod transport;
mod upload_edges;
mod upload_merge;
mod validation;
