//! The registry's domain: what councils record and what health may see, as validated types and
//! pure rules. Nothing here knows about gRPC or the database; `api` converts the wire into these
//! types and `db` stores them.

pub(crate) mod access;
pub(crate) mod contacts;
pub(crate) mod dates;
pub(crate) mod enumeration;
pub(crate) mod nhs_status;
pub(crate) mod record;
pub(crate) mod visibility;
