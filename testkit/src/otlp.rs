//! A real OTLP/gRPC receiver for tests (`tests/python/otlp_receiver.py`, the standard collector
//! protocol from PyPI's `opentelemetry-proto`), and the spans it received, read back from its
//! file of JSON lines.

use std::collections::HashMap;
use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A running receiver; stopped when dropped.
pub struct Receiver {
    child: Child,
    port: u16,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

/// One exported span, as the receiver got it.
#[derive(Clone, Debug)]
pub struct ExportedSpan {
    /// The resource's `service.name`.
    pub service: String,
    /// The resource's attributes (`service.name`, `service.version`, ...).
    pub resource: HashMap<String, String>,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits, or empty for a root span.
    pub parent_span_id: String,
    /// The span's name.
    pub name: String,
    /// `SPAN_KIND_SERVER`, `SPAN_KIND_CLIENT`, `SPAN_KIND_INTERNAL`, ...
    pub kind: String,
    /// Its attributes, each value as text.
    pub attributes: HashMap<String, String>,
    /// Its W3C trace state (empty when none).
    pub trace_state: String,
}

impl Receiver {
    /// Starts a receiver on a free loopback port. `None` when the Python tools are missing
    /// outside CI (the test is then skipped; in CI a missing tool fails it).
    pub fn start() -> Option<Self> {
        let python = crate::tools::python()?;
        let script = crate::tools::repo_root().join("tests/python/otlp_receiver.py");
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("otlp.jsonl");
        let mut child = Command::new(python)
            .arg(&script)
            .arg(&out)
            // A bound: a receiver a crashed test leaves behind goes away on its own.
            .args(["--max-seconds", "600"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start otlp_receiver.py");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("receiver stdout");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("receiver's port line");
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("receiver said {line:?}, not its port"));
        Some(Self {
            child,
            port,
            out,
            _dir: dir,
        })
    }

    /// The endpoint for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ExportedSpan> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line["signal"] == "traces")
            .flat_map(|line| spans_of(&line["request"]))
            .collect()
    }

    /// Waits (at most `limit`) until `done` holds for the spans received, and returns them.
    pub async fn wait_for(
        &self,
        limit: std::time::Duration,
        done: impl Fn(&[ExportedSpan]) -> bool,
    ) -> Vec<ExportedSpan> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let spans = self.spans();
            if done(&spans) || tokio::time::Instant::now() >= deadline {
                return spans;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Under the suite's privacy check, what this receiver got is checked too.
        if let Some(logs) = std::env::var_os(crate::logs::LOG_DIR_ENV) {
            static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let name = format!("otlp-{}-{n}.jsonl", std::process::id());
            let _ = std::fs::copy(&self.out, std::path::Path::new(&logs).join(name));
        }
    }
}

/// The spans of one `ExportTraceServiceRequest` in OTLP JSON (ids in hex).
fn spans_of(request: &serde_json::Value) -> Vec<ExportedSpan> {
    let mut found = Vec::new();
    for resource in request["resourceSpans"].as_array().into_iter().flatten() {
        let resource_attributes = attributes(&resource["resource"]["attributes"]);
        let service = resource_attributes
            .get("service.name")
            .cloned()
            .unwrap_or_default();
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                let text = |key: &str| span[key].as_str().unwrap_or_default().to_owned();
                found.push(ExportedSpan {
                    service: service.clone(),
                    resource: resource_attributes.clone(),
                    trace_id: text("traceId"),
                    span_id: text("spanId"),
                    parent_span_id: text("parentSpanId"),
                    name: text("name"),
                    kind: text("kind"),
                    attributes: attributes(&span["attributes"]),
                    trace_state: text("traceState"),
                });
            }
        }
    }
    found
}

/// OTLP key-value attributes as text (`stringValue`, `intValue`, ... whichever is set).
fn attributes(list: &serde_json::Value) -> HashMap<String, String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|kv| {
            let key = kv["key"].as_str()?.to_owned();
            let value = kv["value"].as_object()?.values().next()?;
            let value = value
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            Some((key, value))
        })
        .collect()
}

impl ExportedSpan {
    /// Whether `ancestor` is this span's parent, or its parent's, and so on, within `spans`.
    pub fn descends_from(&self, ancestor: &ExportedSpan, spans: &[ExportedSpan]) -> bool {
        let mut parent = self.parent_span_id.clone();
        // Bounded by the number of spans: a cycle (never expected) cannot loop forever.
        for _ in 0..=spans.len() {
            if parent.is_empty() {
                return false;
            }
            if parent == ancestor.span_id && self.trace_id == ancestor.trace_id {
                return true;
            }
            match spans
                .iter()
                .find(|s| s.span_id == parent && s.trace_id == self.trace_id)
            {
                Some(next) => parent = next.parent_span_id.clone(),
                None => return false,
            }
        }
        false
    }
}
