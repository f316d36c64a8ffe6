//! The registry as a real child process (`registry-service serve`) on free loopback ports, with
//! the mutual-TLS internal port the lookup service's certificate reaches: for tests that kill,
//! restart or trace a real process rather than a server in the test's own runtime.

use std::path::Path;
use std::process::Command;

use crate::pki::{LOOKUP_IDENTITY, TestPki};
use crate::server::free_port;

/// A `registry-service serve` command, not yet spawned, and the ports it will listen on.
#[derive(Debug)]
pub struct RegistryCommand {
    /// The command: add `.env(..)`/`.stdout(..)` as the test needs, then spawn it.
    pub command: Command,
    /// The public port (CouncilService), plaintext on loopback.
    pub public: u16,
    /// The internal port (DisclosureService, OperatorService), mutual TLS.
    pub internal: u16,
}

impl RegistryCommand {
    /// `binary serve` on `database_url` (migrated at start), council tokens checked against
    /// the keys in `jwks`, the internal port serving `pki`'s server certificate and admitting
    /// the lookup service's; the admin port on a free port too (tests run side by side, and
    /// the default admin port is one per host).
    pub fn new(binary: &Path, database_url: &str, jwks: &Path, pki: &TestPki) -> Self {
        let (public, internal) = (free_port(), free_port());
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .env("CPIS_REGISTRY_LISTEN", format!("127.0.0.1:{public}"))
            .env("CPIS_INTERNAL_LISTEN", format!("127.0.0.1:{internal}"))
            .env("CPIS_ADMIN_LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("CPIS_DATABASE_URL", database_url)
            .env("CPIS_JWKS_FILE", jwks)
            .env("CPIS_MIGRATE_ON_START", "true")
            .env("CPIS_INTERNAL_TLS_CERT", &pki.server.cert)
            .env("CPIS_INTERNAL_TLS_KEY", &pki.server.key)
            .env("CPIS_INTERNAL_CLIENT_CA", pki.ca_path())
            .env("CPIS_DISCLOSURE_IDENTITIES", LOOKUP_IDENTITY);
        Self {
            command,
            public,
            internal,
        }
    }

    /// The public port's URL.
    pub fn public_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.public)
    }
}
