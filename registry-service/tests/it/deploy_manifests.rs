//! The manifests in deploy/ cannot drift from the binaries: each overlay is rendered
//! (`kubectl kustomize`, through `scripts/manifest_containers.py`), and every container of ours
//! is started as the real binary with the manifest's command, arguments and environment — the
//! Secrets it mounts written as test files, listen addresses moved to free loopback ports, the
//! database, identity providers and collector replaced by test ones — and must reach SERVING
//! (gRPC health over TLS, and `/readyz` on the admin port). Every `CPIS_*` variable a manifest
//! sets must be one the binary reads, so a renamed flag or variable fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cpis_testkit::{
    TestServer,
    db::{Backend, TestDb},
    jwks::{JwksServer, jwks_of},
    pki::TestPki,
    server::health,
    stack::{council_signer, nhs_signer},
};
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test]
async fn the_dev_overlay_runs_the_real_binaries() {
    run_overlay("dev", None).await;
}

#[tokio::test]
async fn the_prod_overlay_runs_the_real_binaries() {
    let Some(db) = TestDb::create(Backend::Postgres) else {
        return;
    };
    run_overlay("prod", Some(db)).await;
}

/// One container of a rendered workload (scripts/manifest_containers.py's output).
#[derive(Debug, serde::Deserialize)]
struct Container {
    workload: String,
    kind: String,
    command: Vec<String>,
    args: Vec<String>,
    env: Vec<EnvVar>,
    mounts: Vec<Mount>,
}

#[derive(Debug, serde::Deserialize)]
struct EnvVar {
    name: String,
    value: Option<String>,
    secret: Option<String>,
    key: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct Mount {
    path: String,
    secret: Option<String>,
    #[serde(default)]
    items: BTreeMap<String, String>,
    claim: Option<String>,
    #[serde(default)]
    scratch: bool,
}

/// A started binary, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The rendered overlay's containers, or None when the tools are missing outside CI.
fn render(overlay: &str) -> Option<Vec<Container>> {
    let python = cpis_testkit::tools::require("deploy-venv/bin/python")?;
    let root = cpis_testkit::tools::repo_root();
    let output = Command::new(python)
        .arg(root.join("scripts/manifest_containers.py"))
        .arg(root.join("deploy/overlays").join(overlay))
        .output()
        .expect("run scripts/manifest_containers.py (needs kubectl)");
    assert!(
        output.status.success(),
        "rendering deploy/overlays/{overlay} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(serde_json::from_slice(&output.stdout).expect("containers JSON"))
}

/// The binary a manifest command names, as built for this test run.
fn binary(command: &str) -> Option<PathBuf> {
    let registry = PathBuf::from(env!("CARGO_BIN_EXE_registry-service"));
    match command {
        "/usr/local/bin/registry-service" => Some(registry),
        "/usr/local/bin/lookup-service" => {
            // A sibling workspace binary: `cargo test --workspace` (scripts/test.sh) builds it.
            let lookup = registry.with_file_name("lookup-service");
            assert!(
                lookup.exists(),
                "{} is missing: run the tests with `cargo test --workspace`",
                lookup.display()
            );
            Some(lookup)
        }
        _ => None,
    }
}

/// The environment variables `binary subcommand` reads (from its `--help`).
fn variables_read(binary: &Path, subcommand: &str) -> BTreeSet<String> {
    let help = Command::new(binary)
        .args([subcommand, "--help"])
        .output()
        .expect("run --help");
    assert!(help.status.success(), "{subcommand} --help failed");
    String::from_utf8_lossy(&help.stdout)
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .map(str::to_owned)
        .collect()
}

/// Writes the test stand-in of each Secret a manifest names, as the files its real issuer
/// (cert-manager, CloudNativePG, the operator) would put in it.
struct Secrets {
    pki: TestPki,
    jwks: Vec<u8>,
    dir: tempfile::TempDir,
}

impl Secrets {
    fn files(&self, secret: &str) -> Vec<(&'static str, Vec<u8>)> {
        let read = |path: &Path| std::fs::read(path).expect("read test PKI file");
        let tls = |pair: &cpis_testkit::pki::PemPair| {
            vec![
                ("tls.crt", read(&pair.cert)),
                ("tls.key", read(&pair.key)),
                ("ca.crt", self.pki.ca_pem().as_bytes().to_vec()),
            ]
        };
        match secret {
            // Server certificates (localhost and 127.0.0.1 stand in for the Service names).
            "registry-tls" | "lookup-tls" | "registry-internal-tls" => tls(&self.pki.server),
            // The lookup service's client identity, spiffe://cpis/lookup.
            "lookup-internal-tls" => tls(&self.pki.lookup),
            "council-jwks" | "nhs-jwks" => vec![("jwks.json", self.jwks.clone())],
            "cpis-db-ca" => vec![("ca.crt", self.pki.ca_pem().as_bytes().to_vec())],
            other => panic!(
                "the manifests mount Secret {other}, unknown to this test: add its stand-in here \
                 and say in deploy/README.md who creates it"
            ),
        }
    }

    /// A directory holding `secret`'s files (only `items`, renamed, when given).
    fn mount(&self, secret: &str, items: &BTreeMap<String, String>) -> PathBuf {
        let dir = tempfile::tempdir_in(self.dir.path())
            .expect("secret directory")
            .keep();
        for (key, bytes) in self.files(secret) {
            let name = if items.is_empty() {
                Some(key.to_owned())
            } else {
                items.get(key).cloned()
            };
            if let Some(name) = name {
                std::fs::write(dir.join(name), bytes).expect("write secret file");
            }
        }
        dir
    }

    /// The value of key `key` of Secret `secret`, for environment variables.
    fn value(secret: &str, key: &str) -> String {
        match (secret, key) {
            ("cpis-db-app", "username" | "password") => "cpis-test".to_owned(),
            other => panic!("the manifests read Secret key {other:?}, unknown to this test"),
        }
    }
}

/// Where the started services listen, as the test moved them.
#[derive(Default)]
struct Ports {
    registry_internal: Option<u16>,
}

async fn run_overlay(overlay: &str, db: Option<TestDb>) {
    let Some(containers) = render(overlay) else {
        return;
    };
    let council = council_signer();
    let nhs = nhs_signer();
    let pki = TestPki::new("deploy");
    let jwks_server = JwksServer::start_tls(&[&council, &nhs], &pki).await;
    let secrets = Secrets {
        jwks: jwks_of(&[&council, &nhs]),
        pki,
        dir: tempfile::tempdir().expect("secrets directory"),
    };
    let scratch = tempfile::tempdir().expect("volumes directory");
    // The collector is down in this test: serving must not depend on it.
    let collector = format!("http://127.0.0.1:{}", cpis_testkit::server::free_port());

    // Jobs (the migration) first, then the registry, then the lookup service that needs it.
    let order = |c: &Container| match (c.kind.as_str(), c.workload.as_str()) {
        ("Job", _) => 0,
        (_, "registry") => 1,
        _ => 2,
    };
    let mut ours: Vec<&Container> = containers
        .iter()
        .filter(|c| c.command.first().and_then(|c| binary(c)).is_some())
        .collect();
    ours.sort_by_key(|c| order(c));
    let names: Vec<&str> = ours.iter().map(|c| c.workload.as_str()).collect();
    assert!(
        names.contains(&"registry") && names.contains(&"lookup"),
        "deploy/overlays/{overlay} must run the registry and the lookup service: {names:?}"
    );

    let mut ports = Ports::default();
    let mut running = Vec::new();
    for container in ours {
        let program = binary(&container.command[0]).expect("one of ours");
        let subcommand = container.args.first().expect("a subcommand").clone();
        let known = variables_read(&program, &subcommand);

        // Mount paths -> test directories.
        let mut mounts: Vec<(String, PathBuf)> = Vec::new();
        for mount in &container.mounts {
            let dir = if let Some(secret) = &mount.secret {
                secrets.mount(secret, &mount.items)
            } else if mount.claim.is_some() || mount.scratch {
                tempfile::tempdir_in(scratch.path()).expect("volume").keep()
            } else {
                panic!("{}: unsupported mount {}", container.workload, mount.path);
            };
            mounts.push((mount.path.clone(), dir));
        }

        let mut env: Vec<(String, String)> = Vec::new();
        let mut listen: BTreeMap<String, u16> = BTreeMap::new();
        for var in &container.env {
            let mut value = match (&var.value, &var.secret, &var.key) {
                (Some(value), _, _) => value.clone(),
                (None, Some(secret), Some(key)) => Secrets::value(secret, key),
                _ => panic!("{}: {} has no value", container.workload, var.name),
            };
            // Kubernetes expands $(NAME) from variables defined before this one.
            for (name, earlier) in &env {
                value = value.replace(&format!("$({name})"), earlier);
            }
            if var.name.starts_with("CPIS_") {
                assert!(
                    known.contains(&var.name),
                    "deploy/overlays/{overlay}: {} sets {}, which `{} {subcommand}` does not read \
                     (renamed or removed?)",
                    container.workload,
                    var.name,
                    program.display()
                );
            }
            if var.name.ends_with("_LISTEN") {
                let port = cpis_testkit::server::free_port();
                listen.insert(var.name.clone(), port);
                value = format!("127.0.0.1:{port}");
            }
            // A path under a mount moves to the mount's test directory (once, and only at a
            // path boundary: /tmp must not also match what was already moved there).
            if let Some((rest, dir)) = mounts.iter().find_map(|(path, dir)| {
                let rest = value.strip_prefix(path.as_str())?;
                (rest.is_empty() || rest.starts_with('/')).then(|| (rest.to_owned(), dir))
            }) {
                value = format!("{}{rest}", dir.display());
            }
            match var.name.as_str() {
                "CPIS_DATABASE_URL" => {
                    value = db
                        .as_ref()
                        .expect("a database for an overlay that names one")
                        .url
                        .clone();
                }
                "OTEL_EXPORTER_OTLP_ENDPOINT" => value = collector.clone(),
                "CPIS_JWKS_URL" | "CPIS_LOOKUP_JWKS_URL" => {
                    value = jwks_server.url();
                    let ca = if var.name == "CPIS_JWKS_URL" {
                        "CPIS_JWKS_CA"
                    } else {
                        "CPIS_LOOKUP_JWKS_CA"
                    };
                    env.push((ca.to_owned(), secrets.pki.ca_path().display().to_string()));
                }
                "CPIS_REGISTRY_URL" => {
                    let port = ports
                        .registry_internal
                        .expect("the registry starts before the lookup service");
                    value = format!("https://localhost:{port}");
                }
                _ => {}
            }
            assert!(
                !value.contains("/etc/") && !value.contains("/var/lib/"),
                "{}: {}={value} names a path no volume mounts",
                container.workload,
                var.name
            );
            env.push((var.name.clone(), value));
        }

        let log = scratch.path().join(format!("{}.log", container.workload));
        let mut command = Command::new(&program);
        command
            .args(&container.args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(Stdio::from(
                std::fs::File::create(log.with_extension("err")).expect("log file"),
            ));
        let mut child = command.spawn().expect("start the binary");

        if container.kind == "Job" {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            let status = loop {
                if let Some(status) = child.try_wait().expect("wait") {
                    break status;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{} did not finish",
                    container.workload
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            assert!(
                status.success(),
                "{} failed: {}",
                container.workload,
                std::fs::read_to_string(log.with_extension("err")).unwrap_or_default()
            );
            continue;
        }
        let mut process = Running(child);

        // Every gRPC port it listens on reaches SERVING over TLS, and the admin port is ready.
        if let Some(port) = listen.get("CPIS_INTERNAL_LISTEN") {
            ports.registry_internal = Some(*port);
        }
        for (name, port) in &listen {
            let addr = ([127, 0, 0, 1], *port).into();
            if name == "CPIS_ADMIN_LISTEN" {
                wait_ready_http(addr, &container.workload, &mut process, &log).await;
                continue;
            }
            let identity = (name == "CPIS_INTERNAL_LISTEN").then_some(&secrets.pki.lookup);
            let server = TestServer::reach(addr, secrets.pki.client_tls(identity));
            wait_serving(&server, &container.workload, name, &mut process, &log).await;
        }
        running.push(process);
    }
    drop(running);
}

/// The process's output so far (its log lines and its standard error).
fn output_of(log: &Path) -> String {
    format!(
        "{}\n{}",
        std::fs::read_to_string(log).unwrap_or_default(),
        std::fs::read_to_string(log.with_extension("err")).unwrap_or_default()
    )
}

/// Fails at once when the process has exited (a refused flag, a bad setting), with its output.
fn still_running(process: &mut Running, workload: &str, log: &Path) {
    if let Ok(Some(status)) = process.0.try_wait() {
        panic!(
            "{workload} exited ({status}); its output:\n{}",
            output_of(log)
        );
    }
}

async fn wait_serving(
    server: &TestServer,
    workload: &str,
    port: &str,
    process: &mut Running,
    log: &Path,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        still_running(process, workload, log);
        if let Ok(channel) = server.try_channel().await
            && health(channel, "").await == Some(ServingStatus::Serving)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{workload} ({port}) did not reach SERVING; its output:\n{}",
            output_of(log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for `GET /readyz` to answer 200 (the platform's HTTP readiness probe).
async fn wait_ready_http(
    addr: std::net::SocketAddr,
    workload: &str,
    process: &mut Running,
    log: &Path,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        still_running(process, workload, log);
        let mut answer = String::new();
        if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
            let request =
                format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            if stream.write_all(request.as_bytes()).await.is_ok() {
                let _ = stream.read_to_string(&mut answer).await;
            }
        }
        if answer.starts_with("HTTP/1.1 200") {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{workload}: /readyz did not answer 200 (last: {:?}); its output:\n{}",
            answer.lines().next(),
            output_of(log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
