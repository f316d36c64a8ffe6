//! Structured logging and tracing set-up shared by every binary. Filters come from `RUST_LOG`
//! (default `info`); the format is human-readable text or one JSON object per line. Traces are
//! exported over OTLP/gRPC when the standard OpenTelemetry environment asks for them
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, unless
//! `OTEL_TRACES_EXPORTER=none` or `OTEL_SDK_DISABLED=true`); otherwise no OpenTelemetry layer is
//! installed at all. With traces on, JSON log lines carry the `trace_id` and `span_id` of the span
//! they were written in, and calls carry W3C `traceparent` in and out (`propagate`).

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::{
    EnvFilter, Layer,
    fmt::{self, FmtContext, FormatEvent, FormatFields, format::Writer},
    prelude::*,
    registry::LookupSpan,
};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The longest a service's exit waits for its last spans to reach the collector: a collector
/// that is down must never hold a shutdown up.
pub const FLUSH_LIMIT: Duration = Duration::from_secs(3);

/// Spans that last a server's whole life (`lookup`, `registry`): they name the server in log
/// lines, but as trace spans they would make every call of the process one endless trace.
const LOG_ONLY_SPANS: &[&str] = &["lookup", "registry"];

/// Keeps the trace exporter running; dropping it flushes what is left (at most [`FLUSH_LIMIT`])
/// and stops it. Held by `main` (inside [`ServiceCli`]) so it drops when the service exits.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are being exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // Bounded: the batch processor gives up after the limit (collector down or slow).
            if let Err(error) = provider.shutdown_with_timeout(FLUSH_LIMIT) {
                tracing::warn!(%error, "trace export did not finish flushing");
            }
        }
    }
}

/// Installs the global subscriber. Safe to call more than once (later calls do nothing), so
/// tests and the all-in-one dev command can share it. No traces: see [`init_service`].
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    init(
        format,
        "info",
        std::io::stdout().is_terminal(),
        std::io::stdout,
        None,
    );
}

/// Logging as [`init_logging`], plus trace export as service `service` when the standard
/// OpenTelemetry environment asks for it (see the module). Keep the guard until the service
/// exits.
pub fn init_service(format: LogFormat, service: &'static str) -> TelemetryGuard {
    use std::io::IsTerminal as _;
    let provider = traces_from_env(service);
    init(
        format,
        "info",
        std::io::stdout().is_terminal(),
        std::io::stdout,
        provider.clone(),
    );
    TelemetryGuard { provider }
}

/// Logging to standard error at `default_level` (unless `RUST_LOG` says), plus trace export as
/// [`init_service`]: for a tool that runs servers in its own process (the benchmark) and prints
/// its results on standard output.
pub fn init_tool(format: LogFormat, service: &'static str, default_level: &str) -> TelemetryGuard {
    use std::io::IsTerminal as _;
    let provider = traces_from_env(service);
    init(
        format,
        default_level,
        std::io::stderr().is_terminal(),
        std::io::stderr,
        provider.clone(),
    );
    TelemetryGuard { provider }
}

/// The same for a command-line tool whose standard output is its result (a guide, a report,
/// JSON for scripts): logs go to standard error, at `default_level` unless `RUST_LOG` says.
pub fn init_cli_logging(format: LogFormat, default_level: &str) {
    use std::io::IsTerminal as _;
    init(
        format,
        default_level,
        std::io::stderr().is_terminal(),
        std::io::stderr,
        None,
    );
}

/// Colours only on a terminal: escape codes in a file or a log collector are noise.
fn init<W>(
    format: LogFormat,
    default_level: &str,
    ansi: bool,
    writer: W,
    traces: Option<SdkTracerProvider>,
) where
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let lines = match format {
        LogFormat::Text => fmt::layer()
            .with_target(true)
            .with_ansi(ansi)
            .with_writer(writer)
            .boxed(),
        LogFormat::Json => json_layer(writer).boxed(),
    };
    // RUST_LOG filters log lines only: a service logging at `warn` still exports its INFO spans
    // (each layer has its own filter, so spans nobody wants are never built).
    let subscriber = tracing_subscriber::registry()
        .with(traces.as_ref().map(otel_layer))
        .with(lines.with_filter(filter));
    // An already-installed subscriber is fine (tests, dev stack); nothing else can fail here.
    install_global(subscriber);
    // Panics then log as one event in the chosen format, not as plain-text lines.
    crate::panics::install_hook();
}

/// The JSON log layer every service writes (and tests capture): one flat object per line, the
/// spans it was written in, and the OpenTelemetry `trace_id`/`span_id` when traces are on.
pub fn json_layer<S, W>(writer: W) -> impl Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_writer(writer)
        .map_event_format(WithTraceIds)
}

/// The layer turning tracing spans into OpenTelemetry spans of `provider`: server-lifetime spans
/// and the transport crates' own spans (the exporter's calls among them) are left out.
pub fn otel_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let tracer = provider.tracer("cpis");
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // Source locations and thread names are not what an operator searches traces for.
        .with_location(false)
        .with_threads(false)
        // Busy/idle time would read the clock at every poll of every span's future.
        .with_tracked_inactivity(false)
        // Activation makes a span the OpenTelemetry "current" context at every poll of its
        // future (a clone and a thread-local push and pop each time). Nothing here reads that
        // context: propagation and log lines read the span's own (`propagate`, `WithTraceIds`).
        .with_context_activation(false)
        .with_filter(
            tracing_subscriber::filter::filter_fn(|meta| {
                // The services' spans are INFO; DEBUG and TRACE ones are libraries' detail.
                let wanted = *meta.level() <= tracing::Level::INFO;
                let log_only = meta.is_span() && LOG_ONLY_SPANS.contains(&meta.name());
                // Spans only: log lines are exported as log lines (they carry the trace and span
                // ids), not copied into every span as events.
                let event = meta.is_event();
                let transport = ["h2", "hyper", "tonic", "tower", "opentelemetry", "rustls"]
                    .iter()
                    .any(|t| meta.target().starts_with(t));
                wanted && !event && !log_only && !transport
            })
            // Nothing below INFO passes, so DEBUG and TRACE call sites need not ask (when the log
            // lines' filter does not want them either).
            .with_max_level_hint(tracing::Level::INFO),
        )
}

/// Installs `subscriber` as the process's subscriber (unless one is already), remembering it so
/// log lines can look up their span's trace ids.
pub fn install_global<S>(subscriber: S) -> bool
where
    S: Subscriber + Send + Sync + 'static,
{
    use tracing_subscriber::util::SubscriberInitExt as _;
    let dispatch = tracing::Dispatch::new(subscriber);
    let weak = dispatch.downgrade();
    let installed = dispatch.try_init().is_ok();
    if installed {
        let _ = GLOBAL.set(weak);
    }
    installed
}

/// The global subscriber, for reading a span's OpenTelemetry context while formatting a line
/// (the current dispatcher is not reachable from inside one of its own events).
static GLOBAL: OnceLock<tracing::dispatcher::WeakDispatch> = OnceLock::new();

/// A line format with the current span's `trace_id` and `span_id` appended to the JSON object
/// (nothing is added when the span has no OpenTelemetry context, i.e. traces are off).
pub struct WithTraceIds<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let ids = ctx.parent_span().and_then(|span| {
            let dispatch = GLOBAL.get()?.upgrade()?;
            let cx = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)?;
            let span = cx.span();
            let ids = span.span_context();
            ids.is_valid()
                .then(|| (ids.trace_id().to_string(), ids.span_id().to_string()))
        });
        let Some((trace_id, span_id)) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        // The JSON formatter writes one object and a newline: the ids go inside the object
        // (both are hex, so need no escaping).
        match line.trim_end().strip_suffix('}') {
            Some(object) => writeln!(
                writer,
                "{object},\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"
            ),
            None => writer.write_str(&line),
        }
    }
}

/// Whether the standard environment switches traces on (see the module).
pub fn traces_requested() -> bool {
    traces_requested_by(|name| std::env::var(name).ok())
}

/// [`traces_requested`] over any environment (`var` reads one variable).
fn traces_requested_by(var: impl Fn(&str) -> Option<String>) -> bool {
    let value = |name: &str| var(name).map(|v| v.trim().to_ascii_lowercase());
    let set = |name: &str| value(name).is_some_and(|v| !v.is_empty());
    let disabled = value("OTEL_SDK_DISABLED").is_some_and(|v| v == "true");
    let exporter_none = value("OTEL_TRACES_EXPORTER").is_some_and(|v| v == "none");
    !disabled
        && !exporter_none
        && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The tracer provider the environment asks for, or none (also when the exporter cannot be built:
/// traces are never a reason not to serve). Also installs the W3C trace-context propagator.
pub fn traces_from_env(service: &'static str) -> Option<SdkTracerProvider> {
    if !traces_requested() {
        return None;
    }
    let runtime = export_runtime()?;
    // The channel's background task lives on the export runtime, so it outlives whichever
    // runtime (a test's, `main`'s) asked for it.
    let exporter = {
        let _entered = runtime.enter();
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
    };
    let exporter = match exporter {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("OpenTelemetry: cannot build the OTLP span exporter ({error}); no traces");
            return None;
        }
    };
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    // The batch processor reads OTEL_BSP_*; the sampler comes from OTEL_TRACES_SAMPLER
    // (default parentbased_always_on).
    Some(
        SdkTracerProvider::builder()
            .with_resource(resource(service))
            .with_batch_exporter(BudgetedExporter {
                inner: std::sync::Arc::new(exporter),
                failures: crate::log_budget::SharedBudget::default(),
            })
            .build(),
    )
}

/// `service.name` (the binary's, unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` say
/// otherwise), `service.version` (this build's) and `service.instance.id` (new per process).
fn resource(service: &'static str) -> opentelemetry_sdk::Resource {
    use opentelemetry::KeyValue;
    use opentelemetry_sdk::resource::EnvResourceDetector;
    let mut builder = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name(service)
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", instance_id()),
        ])
        .with_detector(Box::new(EnvResourceDetector::new()));
    if let Ok(name) = std::env::var("OTEL_SERVICE_NAME")
        && !name.trim().is_empty()
    {
        builder = builder.with_service_name(name);
    }
    builder.build()
}

/// A random id for this process (32 hex digits).
fn instance_id() -> String {
    crate::request_id::RequestId::generate().to_string()
}

/// One small runtime of its own for the exporter's connection and calls: exports never take a
/// serving thread, and never depend on a runtime that may end first (a test's).
fn export_runtime() -> Option<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("otel-export")
                .enable_all()
                .build()
                .map_err(|e| eprintln!("OpenTelemetry: no export runtime ({e}); no traces"))
                .ok()
        })
        .as_ref()
}

/// The OTLP exporter run on the export runtime, its failures logged within a budget (a collector
/// that is down costs a few lines a second, never one per batch, and never a failed call).
#[derive(Debug)]
struct BudgetedExporter {
    inner: std::sync::Arc<opentelemetry_otlp::SpanExporter>,
    failures: crate::log_budget::SharedBudget,
}

impl opentelemetry_sdk::trace::SpanExporter for BudgetedExporter {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        let inner = self.inner.clone();
        let result = match export_runtime() {
            Some(runtime) => runtime
                .spawn(async move { inner.export(batch).await })
                .await
                .unwrap_or_else(|e| {
                    Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                        e.to_string(),
                    ))
                }),
            None => inner.export(batch).await,
        };
        if let Err(error) = &result {
            self.failures.allow(|suppressed| {
                tracing::warn!(%error, suppressed, "trace export failed; spans dropped");
            });
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        if let Some(inner) = std::sync::Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

/// W3C trace context in gRPC metadata and HTTP headers: read from a caller, written to a callee.
pub mod propagate {
    use opentelemetry::propagation::{Extractor, Injector};
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    /// A caller's headers, showing the propagator its `traceparent` only: `tracestate` is
    /// caller text (kilobytes of it) that would ride, unread by us, in every span exported.
    struct Headers<'a>(&'a http::HeaderMap);

    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            if !key.eq_ignore_ascii_case("traceparent") {
                return None;
            }
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent"]
        }
    }

    struct Metadata<'a>(&'a mut tonic::metadata::MetadataMap);

    impl Injector for Metadata<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(key), Ok(value)) = (
                tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
                tonic::metadata::MetadataValue::try_from(value),
            ) {
                self.0.insert(key, value);
            }
        }
    }

    /// Makes `span` a child of the caller's trace when `headers` carry a valid W3C
    /// `traceparent`; otherwise (absent or malformed) it starts a trace of its own. The caller
    /// names the trace and the parent span, nothing more: its `sampled` flag is not obeyed (a
    /// caller must not be able to keep its own lookups out of the traces) and its `tracestate`
    /// is dropped. Never fails; does nothing when traces are off.
    pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
        use opentelemetry::trace::{SpanContext, TraceContextExt as _, TraceFlags, TraceState};
        let extracted = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&Headers(headers))
        });
        let remote = extracted.span().span_context().clone();
        if !remote.is_valid() {
            return;
        }
        let parent = opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
            remote.trace_id(),
            remote.span_id(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ));
        // An error means no OpenTelemetry layer (traces off) or a disabled span: nothing to do.
        let _ = span.set_parent(parent);
    }

    /// Writes `span`'s trace context into outgoing `metadata`, so the callee's spans join the
    /// trace. Does nothing when traces are off.
    pub fn inject(span: &tracing::Span, metadata: &mut tonic::metadata::MetadataMap) {
        let cx = span.context();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&cx, &mut Metadata(metadata));
        });
    }
}

/// A service binary's command line: the logging flags every service takes, and its subcommands.
#[derive(Debug, clap::Parser)]
#[command(version)]
pub struct ServiceCli<C: clap::Subcommand> {
    /// Log line format.
    #[arg(long, env = "CPIS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: C,

    /// The trace exporter, flushed when this is dropped (at the end of `main`).
    #[arg(skip)]
    pub telemetry: TelemetryGuard,
}

impl<C: clap::Subcommand> ServiceCli<C> {
    /// Parses the process's arguments for binary `name` (described by `about`), exiting with
    /// clap's message and status on a usage error, and starts logging in the chosen format (and
    /// trace export as `name` when the OpenTelemetry environment asks).
    pub fn parse_and_init(name: &'static str, about: &'static str) -> Self {
        use clap::{CommandFactory as _, FromArgMatches as _};
        let matches = Self::command().name(name).about(about).get_matches();
        let mut cli = Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        cli.telemetry = init_service(cli.log_format, name);
        cli
    }
}

/// Binds `addr`, naming it in the error (for `main`).
pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requested(env: &[(&str, &str)]) -> bool {
        traces_requested_by(|name| {
            env.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn the_standard_environment_switches_traces() {
        const AT: &str = "http://collector:4317";
        assert!(!requested(&[]), "off unless asked");
        assert!(!requested(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]));
        assert!(requested(&[("OTEL_EXPORTER_OTLP_ENDPOINT", AT)]));
        assert!(requested(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", AT)]));
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_SDK_DISABLED", "TRUE"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            assert!(
                !requested(&[("OTEL_EXPORTER_OTLP_ENDPOINT", AT), off]),
                "{off:?}"
            );
        }
        assert!(requested(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", AT),
            ("OTEL_SDK_DISABLED", "false"),
            ("OTEL_TRACES_EXPORTER", "otlp"),
        ]));
    }
}
