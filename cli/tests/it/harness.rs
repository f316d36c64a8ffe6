//! Starts `cpis dev` in a temporary data directory and runs `cpis` commands against it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `cpis` binary under test.
pub fn cpis() -> &'static str {
    env!("CARGO_BIN_EXE_cpis")
}

/// A running dev stack; stopped (SIGKILL) when dropped unless stopped cleanly first.
pub struct DevStack {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    pub registry_url: String,
    pub lookup_url: String,
    /// The dev CA, when the public ports serve TLS (`--tls`).
    pub ca_cert: Option<String>,
    pub council_token: String,
    pub ed_token: String,
    pub gp_token: String,
    pub nhs111_token: String,
    pub stdout: PathBuf,
}

/// What a command printed and how it ended.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The stdout lines parsed as JSON objects.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

impl DevStack {
    /// Starts a dev stack in a new directory.
    pub fn start() -> Self {
        Self::start_in(tempfile::tempdir().expect("tempdir"))
    }

    /// Starts a dev stack on `dir` (which may hold an earlier run's data), on free ports.
    pub fn start_in(dir: tempfile::TempDir) -> Self {
        Self::start_on(dir, "127.0.0.1:0", "127.0.0.1:0")
    }

    /// Starts a dev stack on `dir` listening on the given addresses.
    pub fn start_on(dir: tempfile::TempDir, registry: &str, lookup: &str) -> Self {
        Self::start_with(dir, registry, lookup, &[])
    }

    /// Starts a dev stack on `dir` on free ports with `extra` arguments (`--tls`).
    pub fn start_in_with(dir: tempfile::TempDir, extra: &[&str]) -> Self {
        Self::start_with(dir, "127.0.0.1:0", "127.0.0.1:0", extra)
    }

    fn start_with(dir: tempfile::TempDir, registry: &str, lookup: &str, extra: &[&str]) -> Self {
        let ready = dir.path().join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let run = std::fs::read_dir(dir.path())
            .map(|d| d.count())
            .unwrap_or(0);
        let stdout = dir.path().join(format!("dev-{run}.out"));
        let stderr = dir.path().join(format!("dev-{run}.err"));
        // Output goes to files: a pipe nobody drains would block the server once it is full.
        let child = Command::new(cpis())
            .args([
                "dev",
                "--registry-listen",
                registry,
                "--lookup-listen",
                lookup,
                // A free port for the internal (mTLS) link too, so stacks run side by side.
                "--internal-listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--ready-file")
            .arg(&ready)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start cpis dev");
        let mut stack = Self {
            dir,
            child: Some(child),
            registry_url: String::new(),
            lookup_url: String::new(),
            ca_cert: None,
            council_token: String::new(),
            ed_token: String::new(),
            gp_token: String::new(),
            nhs111_token: String::new(),
            stdout,
        };
        let started = Instant::now();
        let body = loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                break text;
            }
            if let Some(status) = stack
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "cpis dev exited with {status}: {}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "cpis dev not ready within 60 s: {}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(25));
        };
        let ready: serde_json::Value = serde_json::from_str(&body).expect("ready file is JSON");
        let field = |name: &str| ready[name].as_str().expect(name).to_owned();
        stack.registry_url = field("registry_url");
        stack.lookup_url = field("lookup_url");
        stack.ca_cert = ready["ca_cert"].as_str().map(str::to_owned);
        stack.council_token = field("council_token");
        stack.ed_token = field("ed_token");
        stack.gp_token = field("gp_token");
        stack.nhs111_token = field("nhs111_token");
        stack
    }

    /// The data directory (signing key and database).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs `cpis ARGS` with the stack's addresses in the environment.
    pub fn run(&self, args: &[&str]) -> Output {
        self.spawn(args).finish()
    }

    /// Starts `cpis ARGS` with the stack's addresses in the environment, without waiting.
    pub fn spawn(&self, args: &[&str]) -> Running {
        let mut env = vec![
            ("CPIS_REGISTRY_URL", self.registry_url.as_str()),
            ("CPIS_LOOKUP_URL", self.lookup_url.as_str()),
        ];
        if let Some(ca) = &self.ca_cert {
            env.push(("CPIS_CA_CERT", ca.as_str()));
        }
        spawn_in(self.dir.path(), args, &env)
    }

    /// Runs a council command with the DEV01 token.
    pub fn council(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--token", &self.council_token]);
        self.run(&all)
    }

    /// Looks a child up as the ED clinician (unscheduled) and returns the JSON answer.
    pub fn ed_lookup(&self, nhs_number: &str) -> serde_json::Value {
        let out = self.run(&["lookup", nhs_number, "--json", "--token", &self.ed_token]);
        assert_eq!(out.code, 0, "{out:?}");
        out.json_lines().pop().expect("one JSON answer")
    }

    /// Sends SIGINT (Ctrl-C) and waits for a clean exit; returns the exit code.
    pub fn interrupt(&mut self) -> i32 {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .expect("kill -INT");
        assert!(status.success());
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code().unwrap_or(-1);
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "cpis dev did not stop within 20 s of Ctrl-C"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// What the stack printed on stdout (the guide).
    pub fn guide(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Stops the stack cleanly and hands back its directory for a second start.
    pub fn restartable(mut self) -> tempfile::TempDir {
        assert_eq!(self.interrupt(), 0, "cpis dev exits 0 on Ctrl-C");
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }
}

impl Drop for DevStack {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Under the suite's privacy check, the stack's log lines (its stderr) are kept for it.
        if let Some(logs) = std::env::var_os(cpis_testkit::logs::LOG_DIR_ENV) {
            static STACKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let stack = STACKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let runs = std::fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .flatten();
            for run in runs.filter(|r| r.file_name().to_string_lossy().ends_with(".err")) {
                let name = format!(
                    "cpis-dev-{}-{stack}-{}.log",
                    std::process::id(),
                    run.file_name().to_string_lossy()
                );
                let _ = std::fs::copy(run.path(), Path::new(&logs).join(name));
            }
        }
    }
}

/// Runs `cpis ARGS` in `dir` with extra environment; killed (and the test failed) after
/// `LIMIT`, so a command that hangs cannot hang the suite.
pub fn run_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    spawn_in(dir, args, env).finish()
}

/// The longest any one command may take.
const LIMIT: Duration = Duration::from_secs(300);

/// A command running in the background.
pub struct Running {
    child: Child,
    out: tempfile::NamedTempFile,
    err: tempfile::NamedTempFile,
    started: Instant,
}

impl Running {
    /// Waits for the command to end (at most `LIMIT`).
    pub fn finish(mut self) -> Output {
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if self.started.elapsed() > LIMIT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "cpis did not finish within {LIMIT:?}: {}",
                    std::fs::read_to_string(self.err.path()).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Output {
            code: status.code().unwrap_or(-1),
            stdout: std::fs::read_to_string(self.out.path()).unwrap_or_default(),
            stderr: std::fs::read_to_string(self.err.path()).unwrap_or_default(),
        }
    }
}

/// Starts `cpis ARGS` in `dir` without waiting.
pub fn spawn_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Running {
    let out = tempfile::NamedTempFile::new().expect("tempfile");
    let err = tempfile::NamedTempFile::new().expect("tempfile");
    let mut command = Command::new(cpis());
    command
        .args(args)
        .current_dir(dir)
        .env_remove("CPIS_COUNCIL_TOKEN")
        .env_remove("CPIS_NHS_TOKEN")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(out.reopen().expect("reopen"))
        .stderr(err.reopen().expect("reopen"));
    for (key, value) in env {
        command.env(key, value);
    }
    Running {
        child: command.spawn().expect("run cpis"),
        out,
        err,
        started: Instant::now(),
    }
}

/// A loopback address with a port that was free a moment ago (for a restart on the same port).
pub fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

/// The `i`-th valid test-range NHS number.
pub fn nhs(i: usize) -> String {
    cpis_testkit::nhs::nhs(i)
}
