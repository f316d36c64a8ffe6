//! Log capture for tests that check what a server writes to its log: one process-wide subscriber
//! (installed by the first caller) writing every event at INFO and above twice, as the services
//! do, once as JSON lines and once as plain text lines, into buffers a test reads back. Servers
//! run on other threads, so capture is global: a test finds its own lines by something unique to
//! it (its request id).

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
}

/// Starts capturing (once per process) and returns the capture.
pub fn capture() -> Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let captured = Captured::default();
            let (json, text) = (captured.json.clone(), captured.text.clone());
            // The services' own JSON layer (`cpis_core::telemetry`), and text without colours.
            tracing_subscriber::registry()
                .with(EnvFilter::new("info"))
                .with(
                    fmt::layer()
                        .json()
                        .flatten_event(true)
                        .with_current_span(false)
                        .with_writer(move || json.clone()),
                )
                .with(
                    fmt::layer()
                        .with_ansi(false)
                        .with_writer(move || text.clone()),
                )
                .try_init()
                .expect("no other global subscriber in a test process that captures logs");
            // No panic hook here: a failing test's panic must reach the test harness's output,
            // not this capture (core's own tests cover the hook).
            captured
        })
        .clone()
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
