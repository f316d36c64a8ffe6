//! The services as separate processes, as they run in production: the binaries built beside this
//! benchmark's own (`target/release/registry-service` and `lookup-service` for a release
//! build) started on loopback ports against the database the in-process stack has seeded, so
//! that each one's memory (VmHWM and VmRSS from /proc) is its own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use cpis_testkit::{Stack, TestServer, server::free_port};

/// A process's memory, in KiB: its peak resident set (VmHWM) and its resident set now (VmRSS).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Memory {
    pub peak_kib: u64,
    pub resident_kib: u64,
}

impl Memory {
    /// Read from /proc (zero where /proc is not there).
    pub fn of(pid: u32) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Self {
            peak_kib: field("VmHWM:"),
            resident_kib: field("VmRSS:"),
        }
    }
}

/// CPU time (user and system) process `pid` has used, in seconds (/proc/PID/stat, at the usual
/// 100 ticks a second; zero where /proc is not there). `None`: this process.
pub(crate) fn cpu_seconds(pid: Option<u32>) -> f64 {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_owned(),
        |p| format!("/proc/{p}/stat"),
    );
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // After the command name (which may hold spaces) in parentheses: utime and stime are the
    // 12th and 13th fields.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// A registry and a lookup service running as child processes; both are killed on drop.
pub(crate) struct Services {
    registry_process: Child,
    lookup_process: Child,
    /// The lookup service's gRPC port (plaintext, loopback).
    pub lookup: TestServer,
    /// The registry's admin port (`/metrics`).
    pub registry_admin: std::net::SocketAddr,
    /// Key sets and logs.
    _dir: tempfile::TempDir,
}

impl Drop for Services {
    fn drop(&mut self) {
        for child in [&mut self.lookup_process, &mut self.registry_process] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The binary `name` beside this one.
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .map(|dir| dir.join(name))
        .context("the benchmark's own directory")?;
    anyhow::ensure!(
        path.exists(),
        "{} is missing: build it first (cargo build --release -p registry-service -p lookup-service)",
        path.display()
    );
    Ok(path)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, bytes)?;
    Ok(path)
}

impl Services {
    /// Starts both on `stack`'s database, keys and certificates (its own registry stopped
    /// already), each SERVING when this returns. `lookup_env`: settings of the lookup service
    /// over the benchmark's own (the overload scenario gives it its production admission bound).
    pub async fn start(
        stack: &Stack,
        enumeration_guard: bool,
        lookup_env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let council_keys = write(
            dir.path(),
            "council-jwks.json",
            &serde_json::to_vec(stack.council_signer.jwks())?,
        )?;
        let nhs_keys = write(
            dir.path(),
            "nhs-jwks.json",
            &serde_json::to_vec(stack.nhs_signer.jwks())?,
        )?;
        let pki = &stack.pki;
        let (public, internal, admin) = (free_port(), free_port(), free_port());
        // The benchmark opens up to 64 calls at once as one caller: no admission bound or rate
        // limit below that (production's defaults are per replica and far lower).
        let unlimited = "4294967295/s,burst=4294967295";
        let mut registry = Command::new(sibling("registry-service")?);
        registry
            .arg("serve")
            .env("CPIS_REGISTRY_LISTEN", format!("127.0.0.1:{public}"))
            .env("CPIS_INTERNAL_LISTEN", format!("127.0.0.1:{internal}"))
            .env("CPIS_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
            .env("CPIS_DATABASE_URL", &stack.db.url)
            .env("CPIS_JWKS_FILE", &council_keys)
            .env("CPIS_INTERNAL_TLS_CERT", &pki.server.cert)
            .env("CPIS_INTERNAL_TLS_KEY", &pki.server.key)
            .env("CPIS_INTERNAL_CLIENT_CA", pki.ca_path())
            .env(
                "CPIS_DISCLOSURE_IDENTITIES",
                cpis_testkit::pki::LOOKUP_IDENTITY,
            )
            .env("CPIS_MAX_IN_FLIGHT", "4096")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if !enumeration_guard {
            for name in [
                "CPIS_ENUMERATION_USER_PER_HOUR",
                "CPIS_ENUMERATION_USER_PER_DAY",
                "CPIS_ENUMERATION_SYSTEM_PER_HOUR",
                "CPIS_ENUMERATION_SYSTEM_PER_DAY",
                "CPIS_ENUMERATION_ORGANISATION_PER_HOUR",
            ] {
                registry.env(name, "0");
            }
        }
        let registry = registry.spawn().context("start registry-service")?;
        let registry_internal = TestServer::reach(
            ([127, 0, 0, 1], internal).into(),
            pki.client_tls(Some(&pki.lookup)),
        );
        let port = free_port();
        let mut lookup = Command::new(sibling("lookup-service")?);
        lookup
            .arg("serve")
            .env("CPIS_LOOKUP_LISTEN", format!("127.0.0.1:{port}"))
            .env("CPIS_ADMIN_LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("CPIS_REGISTRY_URL", registry_internal.url())
            .env("CPIS_REGISTRY_CA", pki.ca_path())
            .env("CPIS_REGISTRY_CLIENT_CERT", &pki.lookup.cert)
            .env("CPIS_REGISTRY_CLIENT_KEY", &pki.lookup.key)
            .env("CPIS_LOOKUP_JWKS_FILE", &nhs_keys)
            .env("CPIS_LOOKUP_RATE_PER_USER", unlimited)
            .env("CPIS_LOOKUP_RATE_PER_ORG", unlimited)
            .env("CPIS_MAX_IN_FLIGHT", "4096")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .envs(lookup_env.iter().map(|(name, value)| (name, value)));
        let lookup = lookup.spawn().context("start lookup-service")?;
        let services = Self {
            registry_process: registry,
            lookup_process: lookup,
            lookup: TestServer::attach(&format!("http://127.0.0.1:{port}")),
            registry_admin: ([127, 0, 0, 1], admin).into(),
            _dir: dir,
        };
        cpis_testkit::server::until_serving(&format!("http://127.0.0.1:{public}"), "registry")
            .await;
        registry_internal
            .wait_serving("", Duration::from_secs(30))
            .await;
        services
            .lookup
            .wait_serving("", Duration::from_secs(30))
            .await;
        Ok(services)
    }

    /// CPU seconds used so far by the registry and the lookup service.
    pub fn cpu(&self) -> (f64, f64) {
        (
            cpu_seconds(Some(self.registry_process.id())),
            cpu_seconds(Some(self.lookup_process.id())),
        )
    }

    /// The registry's group commit so far: disclosures and batches (its batch-size histogram).
    pub async fn batches(&self) -> Option<(f64, f64)> {
        let page = cpis_testkit::metrics::admin_get(self.registry_admin, "/metrics").await;
        // Prometheus text: `NAME{labels} VALUE` or `NAME VALUE`.
        let value = |name: &str| {
            page.body
                .lines()
                .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
        };
        // Not exported until the first batch.
        (page.status == 200).then(|| {
            (
                value("cpis_disclosure_batch_size_sum").unwrap_or(0.0),
                value("cpis_disclosure_batch_size_count").unwrap_or(0.0),
            )
        })
    }

    /// The registry's and the lookup service's memory now.
    pub fn memory(&self) -> (Memory, Memory) {
        (
            Memory::of(self.registry_process.id()),
            Memory::of(self.lookup_process.id()),
        )
    }
}
