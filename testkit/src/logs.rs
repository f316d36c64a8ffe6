//! Log capture for tests that check what a server writes to its log: one process-wide subscriber
//! (installed by the first caller) writing every event at INFO and above twice, as the services
//! do, once as JSON lines and once as plain text lines, into buffers a test reads back. Servers
//! run on other threads, so capture is global: a test finds its own lines by something unique to
//! it (its request id).
//!
//! Under the whole-suite privacy check (`scripts/test.sh`), every test process that starts a
//! server captures from the start ([`capture_for_suite`]): its JSON lines are also appended to
//! `$CPIS_TEST_LOG_DIR/<pid>.jsonl`, and its spans go to the OTLP collector the standard
//! `OTEL_*` environment names, as a service's would (`cpis_core::telemetry`).

use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// What every server in this process has logged so far.
#[derive(Clone, Default)]
pub struct Captured {
    json: Buffer,
    text: Buffer,
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn lines_with(&self, needle: &str) -> Vec<String> {
        let bytes = self.0.lock().unwrap();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|line| line.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    fn contains(&self, needle: &str) -> bool {
        let bytes = self.0.lock().unwrap();
        String::from_utf8_lossy(&bytes).contains(needle)
    }
}

impl Captured {
    /// The JSON lines mentioning `needle`, in order.
    pub fn json_lines_with(&self, needle: &str) -> Vec<String> {
        self.json.lines_with(needle)
    }

    /// The text lines mentioning `needle`, in order.
    pub fn text_lines_with(&self, needle: &str) -> Vec<String> {
        self.text.lines_with(needle)
    }

    /// Whether `needle` appears anywhere in either log.
    pub fn contains(&self, needle: &str) -> bool {
        self.json.contains(needle) || self.text.contains(needle)
    }

    /// Waits (at most 2 s) until `found` finds what it looks for in the capture: log lines are
    /// written after the answer may have left. Panics naming `what` if it never appears.
    pub async fn wait_for<T>(&self, what: &str, found: impl Fn(&Self) -> Option<T>) -> T {
        for _ in 0..100 {
            if let Some(it) = found(self) {
                return it;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("no log line: {what}");
    }
}

/// The environment variable naming the directory the suite's log lines are copied to.
pub const LOG_DIR_ENV: &str = "CPIS_TEST_LOG_DIR";

/// Starts capturing (once per process) and returns the capture.
pub fn capture() -> Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let captured = Captured::default();
            let (json, text) = (captured.json.clone(), captured.text.clone());
            // Traces as the services export them, when the environment asks (the suite's
            // privacy check); the provider lives as long as the process.
            let traces = cpis_core::telemetry::traces_from_env("cpis-tests");
            let file = suite_log_file();
            // The services' own JSON layer (`cpis_core::telemetry`), and text without colours.
            let subscriber = tracing_subscriber::registry()
                .with(EnvFilter::new("info"))
                .with(traces.as_ref().map(cpis_core::telemetry::otel_layer))
                .with(cpis_core::telemetry::json_layer(move || json.clone()))
                .with(file.map(cpis_core::telemetry::json_layer))
                .with(
                    fmt::layer()
                        .with_ansi(false)
                        .with_writer(move || text.clone()),
                );
            assert!(
                cpis_core::telemetry::install_global(subscriber),
                "no other global subscriber in a test process that captures logs"
            );
            // The layer's tracer keeps the provider (never shut down): spans are exported as
            // they end, within the batch delay the suite sets.
            drop(traces);
            // No panic hook here: a failing test's panic must reach the test harness's output,
            // not this capture (core's own tests cover the hook).
            captured
        })
        .clone()
}

/// Under the suite's privacy check (`$CPIS_TEST_LOG_DIR` set), starts capturing so everything
/// this process's servers log and trace is kept for the check; otherwise does nothing.
pub fn capture_for_suite() {
    if std::env::var_os(LOG_DIR_ENV).is_some() {
        capture();
    }
}

/// Where a binary a test starts should write its log lines: a new file in `$CPIS_TEST_LOG_DIR`
/// (scanned by the suite's privacy check) when set, else nowhere.
pub fn child_output(name: &str) -> std::process::Stdio {
    match std::env::var_os(LOG_DIR_ENV) {
        Some(dir) => create(&child_log_in(std::path::Path::new(&dir), name)).into(),
        None => std::process::Stdio::null(),
    }
}

/// A new file for the log lines of a binary a test starts and reads back: in
/// `$CPIS_TEST_LOG_DIR` (so the suite's privacy check scans it too) when set, else in `dir`.
pub fn child_log_file(name: &str, dir: &std::path::Path) -> (std::fs::File, std::path::PathBuf) {
    let path = match std::env::var_os(LOG_DIR_ENV) {
        Some(logs) => child_log_in(std::path::Path::new(&logs), name),
        None => child_log_in(dir, name),
    };
    (create(&path), path)
}

/// A file name for binary `name`'s log, unique within the directory.
fn child_log_in(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.join(format!("{name}-{}-{n}.log", std::process::id()))
}

fn create(path: &std::path::Path) -> std::fs::File {
    std::fs::File::create(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()))
}

/// This process's file of JSON lines in `$CPIS_TEST_LOG_DIR`, if set.
fn suite_log_file() -> Option<SharedFile> {
    let dir = std::env::var_os(LOG_DIR_ENV)?;
    let path = std::path::Path::new(&dir).join(format!("{}.jsonl", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    Some(SharedFile(Arc::new(Mutex::new(file))))
}

/// An append-only file written line by line from any thread.
#[derive(Clone)]
struct SharedFile(Arc<Mutex<std::fs::File>>);

impl<'a> fmt::MakeWriter<'a> for SharedFile {
    type Writer = SharedFile;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl std::io::Write for SharedFile {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().write(bytes)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap().flush()
    }
}

/// The request ids of the spans a captured JSON log line was written in.
pub fn span_request_ids(line: &serde_json::Value) -> Vec<&str> {
    line["spans"]
        .as_array()
        .map(|spans| {
            spans
                .iter()
                .filter_map(|s| s["request_id"].as_str())
                .collect()
        })
        .unwrap_or_default()
}
