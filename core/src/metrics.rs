//! The process's metrics: one OpenTelemetry meter provider, read as Prometheus text for the
//! admin port's `/metrics` and, when the standard `OTEL_*` environment asks, pushed over
//! OTLP/gRPC; and every instrument the services record, built once (`metrics().rpc_calls`).
//!
//! Labels carry service, method and code names, council ODS codes and fixed words only: never
//! an NHS number, a name, a date of birth, a case id or a token.

use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

/// Label pairs, for call sites (so the services need no direct OpenTelemetry dependency).
pub use opentelemetry::KeyValue;
use opentelemetry::metrics::{
    Counter, Gauge, Histogram, Meter, MeterProvider as _, ObservableGauge, UpDownCounter,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;

/// Bucket bounds in seconds for call and transaction durations: 0.5 ms to 30 s (a call
/// timeout's order), about three per decade.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How long flushing the OTLP exporter may hold up a process on its way out.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The name the process reports as `service.name` (set by [`init`]; "cpis" when a test or tool
/// records metrics without it).
static SERVICE: OnceLock<&'static str> = OnceLock::new();

struct Telemetry {
    provider: SdkMeterProvider,
    registry: prometheus::Registry,
    metrics: Metrics,
}

static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();

/// Sets this process's service name and builds the meter provider (with its OTLP reader when
/// the environment asks for one). Call it once, early in `main`, inside the tokio runtime (the
/// OTLP channel's worker runs on it). Later calls change nothing.
pub fn init(service: &'static str) {
    let _ = SERVICE.set(service);
    let _ = telemetry();
}

/// The instruments. Built on first use, so tests and tools record without calling [`init`].
pub fn metrics() -> &'static Metrics {
    &telemetry().metrics
}

/// The current values as Prometheus text exposition (format 0.0.4).
pub fn prometheus_text() -> String {
    use prometheus::Encoder as _;
    let families = telemetry().registry.gather();
    let mut text = Vec::new();
    // Encoding gathered families into a Vec cannot fail on I/O; a malformed family would be a
    // defect of the exporter, and an empty page is the honest answer then.
    if let Err(error) = prometheus::TextEncoder::new().encode(&families, &mut text) {
        tracing::warn!(%error, "metrics could not be encoded");
    }
    String::from_utf8(text).unwrap_or_default()
}

/// Flushes and stops the exporters, waiting at most [`SHUTDOWN_TIMEOUT`]: the last OTLP push
/// of a process that is going away.
pub async fn shutdown() {
    let Some(telemetry) = TELEMETRY.get() else {
        return;
    };
    let provider = telemetry.provider.clone();
    // The SDK's shutdown blocks its caller while the exporter's thread finishes.
    let stopping =
        tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT));
    match tokio::time::timeout(SHUTDOWN_TIMEOUT, stopping).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => tracing::warn!(%error, "metrics exporter did not shut down cleanly"),
        Ok(Err(error)) => tracing::warn!(%error, "metrics shutdown failed"),
        Err(_) => tracing::warn!("metrics exporter still flushing; abandoned"),
    }
}

fn telemetry() -> &'static Telemetry {
    TELEMETRY.get_or_init(|| build(&OtlpSettings::from_env(|name| std::env::var(name).ok())))
}

/// Whether and how to push over OTLP, from the standard OpenTelemetry environment variables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct OtlpSettings {
    /// Push metrics over OTLP/gRPC (the exporter reads the endpoint itself).
    enabled: bool,
    /// `OTEL_METRIC_EXPORT_INTERVAL` (milliseconds), when set and valid.
    interval: Option<Duration>,
}

impl OtlpSettings {
    /// OTLP is on when an endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`), `OTEL_METRICS_EXPORTER` is not `none` and
    /// `OTEL_SDK_DISABLED` is not `true`.
    fn from_env(var: impl Fn(&str) -> Option<String>) -> Self {
        let set = |name: &str| var(name).is_some_and(|v| !v.trim().is_empty());
        let endpoint =
            set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
        let exporter_off = var("OTEL_METRICS_EXPORTER")
            .is_some_and(|v| v.split(',').all(|e| e.trim().eq_ignore_ascii_case("none")));
        let sdk_off =
            var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let interval = var("OTEL_METRIC_EXPORT_INTERVAL")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        Self {
            enabled: endpoint && !exporter_off && !sdk_off,
            interval,
        }
    }
}

fn build(otlp: &OtlpSettings) -> Telemetry {
    let service = SERVICE.get().copied().unwrap_or("cpis");
    let resource = Resource::builder()
        .with_service_name(service)
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", instance_id()),
        ])
        .build();
    let registry = prometheus::Registry::new();
    let mut builder = SdkMeterProvider::builder().with_resource(resource);
    // Names as written below, exactly: no unit suffix added (the names carry theirs), counters
    // get `_total`, and no per-series scope labels.
    match opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .without_units()
        .scope_info_enabled(false)
        .build()
    {
        Ok(exporter) => builder = builder.with_reader(exporter),
        Err(error) => tracing::warn!(%error, "prometheus exporter unavailable; /metrics is empty"),
    }
    if otlp.enabled
        && let Some(reader) = otlp_reader(otlp.interval)
    {
        builder = builder.with_reader(reader);
    }
    let provider = builder.build();
    let meter = provider.meter("cpis");
    let metrics = Metrics::new(&meter);
    Telemetry {
        provider,
        registry,
        metrics,
    }
}

/// The OTLP/gRPC push reader, or `None` (logged) when it cannot be built: the channel needs a
/// tokio runtime, and a bad endpoint must not stop the service (metrics stay scrapeable).
fn otlp_reader(
    interval: Option<Duration>,
) -> Option<opentelemetry_sdk::metrics::PeriodicReader<opentelemetry_otlp::MetricExporter>> {
    use opentelemetry_otlp::WithExportConfig as _;
    if tokio::runtime::Handle::try_current().is_err() {
        tracing::warn!("OTLP metrics need a tokio runtime at start-up; not exporting");
        return None;
    }
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_timeout(Duration::from_secs(10))
        .build();
    match exporter {
        Ok(exporter) => {
            let mut reader = opentelemetry_sdk::metrics::PeriodicReader::builder(exporter);
            if let Some(interval) = interval {
                reader = reader.with_interval(interval);
            }
            tracing::info!("exporting metrics over OTLP");
            Some(reader.build())
        }
        Err(error) => {
            tracing::warn!(%error, "OTLP metrics exporter unavailable; not exporting");
            None
        }
    }
}

/// This process among the service's replicas: the pod's host name where there is one, with the
/// process id (two processes on one host stay apart).
fn instance_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    format!("{host}:{}", std::process::id())
}

/// A database pool's connections at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolConnections {
    /// Checked out by work in progress.
    pub in_use: u64,
    /// Open and waiting for work.
    pub idle: u64,
    /// The pool's bound.
    pub max: u64,
}

type PoolProbe = Box<dyn Fn() -> Option<PoolConnections> + Send + Sync>;

/// The pools the gauges read at each collection; a probe answering `None` (its pool is gone)
/// is dropped.
static POOLS: Mutex<Vec<PoolProbe>> = Mutex::new(Vec::new());

/// Reports a pool's connections in `cpis_db_pool_connections` and
/// `cpis_db_pool_max_connections` until `probe` answers `None`. Read at collection time (a
/// scrape or an OTLP push), not per call; several pools in one process (tests) add up.
pub fn watch_pool(probe: impl Fn() -> Option<PoolConnections> + Send + Sync + 'static) {
    // The counters alerts watch exist from the start at 0: Prometheus' increase() does not see
    // a series' first value, so a first timeout would otherwise never alert.
    let m = metrics();
    m.db_pool_waits.add(0, &[]);
    m.db_pool_timeouts.add(0, &[]);
    POOLS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Box::new(probe));
}

fn pool_total() -> PoolConnections {
    let mut pools = POOLS.lock().unwrap_or_else(PoisonError::into_inner);
    let mut total = PoolConnections::default();
    pools.retain(|probe| match probe() {
        Some(pool) => {
            total.in_use += pool.in_use;
            total.idle += pool.idle;
            total.max += pool.max;
            true
        }
        None => false,
    });
    total
}

/// Every instrument, created once (the hot path only records). Prometheus names are given
/// beside each; label keys are `&'static str`.
pub struct Metrics {
    /// `cpis_rpc_server_calls_total{rpc_service, rpc_method, grpc_code}`: finished calls.
    pub rpc_calls: Counter<u64>,
    /// `cpis_rpc_server_duration_seconds{rpc_service, rpc_method, grpc_code}`: from the call's
    /// arrival to the end of its answer (a stream's last message and status).
    pub rpc_duration: Histogram<f64>,
    /// `cpis_db_pool_waits_total`: checkouts that found no idle connection and waited (for one
    /// to come back or a new one to open).
    pub db_pool_waits: Counter<u64>,
    /// `cpis_db_pool_wait_seconds`: how long those checkouts waited.
    pub db_pool_wait: Histogram<f64>,
    /// `cpis_db_pool_timeouts_total`: checkouts that gave up (the call answered UNAVAILABLE).
    pub db_pool_timeouts: Counter<u64>,
    /// `cpis_disclosure_transaction_duration_seconds{outcome="committed"|"failed"}`.
    pub disclosure_duration: Histogram<f64>,
    /// `cpis_disclosure_batch_size`: disclosures committed together in one transaction.
    pub disclosure_batch_size: Histogram<u64>,
    /// `cpis_upload_records_total{council, outcome="accepted"|"rejected"}`.
    pub upload_records: Counter<u64>,
    /// `cpis_notification_backlog{council}`: notifications issued and not yet acknowledged.
    pub notification_backlog: Gauge<i64>,
    /// `cpis_notification_lag_seconds{council}`: age of the oldest unacknowledged notification
    /// (0 when none).
    pub notification_lag: Gauge<f64>,
    /// `cpis_notification_subscribers{council}`: notification streams open now.
    pub notification_subscribers: UpDownCounter<i64>,
    /// `cpis_calls_shed_total{rpc_service}`: calls refused OVERLOADED at --max-in-flight.
    pub calls_shed: Counter<u64>,
    /// `cpis_admission_limit`: the bound on calls in progress now (the lookup service's moves
    /// with latency when given --min-in-flight).
    pub admission_limit: Gauge<u64>,
    /// `cpis_calls_rate_limited_total{limit}`: calls refused RATE_LIMITED, by limit name.
    pub calls_rate_limited: Counter<u64>,
    /// `cpis_security_events_total{kind}`: security events recorded, by kind.
    pub security_events: Counter<u64>,
    /// `cpis_lookups_total{setting, outcome="alert"|"no_alert"|"refused"}`: lookups answered.
    pub lookups: Counter<u64>,
    /// `cpis_enumeration_rows_pruned_total`: rows of the enumeration guard's last-seen table
    /// deleted once no window could count them.
    pub enumeration_rows_pruned: Counter<u64>,
    // Read at collection time from the watched pools; held so their callbacks stay registered.
    _pool_connections: ObservableGauge<u64>,
    _pool_max: ObservableGauge<u64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    fn new(meter: &Meter) -> Self {
        let seconds = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build()
        };
        let counter = |name: &'static str, description: &'static str| {
            meter
                .u64_counter(name)
                .with_description(description)
                .build()
        };
        Self {
            rpc_calls: counter(
                "cpis_rpc_server_calls",
                "Finished gRPC calls, by service, method and status code.",
            ),
            rpc_duration: seconds(
                "cpis_rpc_server_duration_seconds",
                "gRPC call duration to the end of the answer, by service, method and status code.",
            ),
            db_pool_waits: counter(
                "cpis_db_pool_waits",
                "Database checkouts that found no idle connection and waited.",
            ),
            db_pool_wait: seconds(
                "cpis_db_pool_wait_seconds",
                "How long database checkouts that waited waited.",
            ),
            db_pool_timeouts: counter(
                "cpis_db_pool_timeouts",
                "Database checkouts that gave up waiting (answered UNAVAILABLE).",
            ),
            disclosure_duration: seconds(
                "cpis_disclosure_transaction_duration_seconds",
                "Disclose-and-record transaction duration, by outcome.",
            ),
            disclosure_batch_size: meter
                .u64_histogram("cpis_disclosure_batch_size")
                .with_description(
                    "Disclosures committed together in one transaction (group commit).",
                )
                .with_boundaries(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0])
                .build(),
            upload_records: counter(
                "cpis_upload_records",
                "Uploaded records, by council and outcome (accepted or rejected).",
            ),
            notification_backlog: meter
                .i64_gauge("cpis_notification_backlog")
                .with_description("Notifications issued and not yet acknowledged, by council.")
                .build(),
            notification_lag: meter
                .f64_gauge("cpis_notification_lag_seconds")
                .with_unit("s")
                .with_description(
                    "Age of the oldest unacknowledged notification, by council (0 when none).",
                )
                .build(),
            notification_subscribers: meter
                .i64_up_down_counter("cpis_notification_subscribers")
                .with_description("Open notification streams, by council.")
                .build(),
            calls_shed: counter(
                "cpis_calls_shed",
                "Calls refused OVERLOADED at the bound on calls in progress, by service.",
            ),
            admission_limit: meter
                .u64_gauge("cpis_admission_limit")
                .with_description(
                    "The bound on calls in progress now (adaptive with the lookup service's --min-in-flight).",
                )
                .build(),
            calls_rate_limited: counter(
                "cpis_calls_rate_limited",
                "Calls refused RATE_LIMITED, by limit.",
            ),
            security_events: counter("cpis_security_events", "Security events recorded, by kind."),
            lookups: counter(
                "cpis_lookups",
                "Lookups answered, by care setting and outcome (alert, no_alert, refused).",
            ),
            enumeration_rows_pruned: counter(
                "cpis_enumeration_rows_pruned",
                "Rows of the enumeration guard's last-seen table deleted once no window counts them.",
            ),
            _pool_connections: meter
                .u64_observable_gauge("cpis_db_pool_connections")
                .with_description("Database pool connections, by state (in_use, idle).")
                .with_callback(|observer| {
                    let total = pool_total();
                    observer.observe(total.in_use, &[KeyValue::new("state", "in_use")]);
                    observer.observe(total.idle, &[KeyValue::new("state", "idle")]);
                })
                .build(),
            _pool_max: meter
                .u64_observable_gauge("cpis_db_pool_max_connections")
                .with_description("The database pool's bound on connections.")
                .with_callback(|observer| observer.observe(pool_total().max, &[]))
                .build(),
        }
    }
}

/// The name of a gRPC status code as the specification spells it, for the `grpc_code` label.
pub use crate::status::code_name;

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed expectation is a failed test
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn otlp_follows_the_standard_environment() {
        assert!(!OtlpSettings::from_env(env(&[])).enabled);
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317");
        assert!(OtlpSettings::from_env(env(&[endpoint])).enabled);
        let metrics_only = (
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            "http://127.0.0.1:4317",
        );
        assert!(OtlpSettings::from_env(env(&[metrics_only])).enabled);
        assert!(
            !OtlpSettings::from_env(env(&[endpoint, ("OTEL_METRICS_EXPORTER", "none")])).enabled
        );
        assert!(!OtlpSettings::from_env(env(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")])).enabled);
        assert!(OtlpSettings::from_env(env(&[endpoint, ("OTEL_SDK_DISABLED", "false")])).enabled);
        let interval = OtlpSettings::from_env(env(&[("OTEL_METRIC_EXPORT_INTERVAL", "2500")]));
        assert_eq!(interval.interval, Some(Duration::from_millis(2500)));
        let bad = OtlpSettings::from_env(env(&[("OTEL_METRIC_EXPORT_INTERVAL", "soon")]));
        assert_eq!(bad.interval, None);
    }

    /// With the environment asking for OTLP, building wires the push reader beside the
    /// Prometheus one and still renders text; nothing needs to listen at the endpoint.
    #[tokio::test]
    async fn building_with_otlp_configured_works() {
        let telemetry = build(&OtlpSettings {
            enabled: true,
            interval: Some(Duration::from_secs(3600)),
        });
        telemetry
            .metrics
            .rpc_calls
            .add(1, &[KeyValue::new("rpc_service", "otlp.Test")]);
        use prometheus::Encoder as _;
        let mut text = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&telemetry.registry.gather(), &mut text)
            .expect("encode");
        let text = String::from_utf8(text).expect("utf-8");
        assert!(
            text.contains("cpis_rpc_server_calls_total{rpc_service=\"otlp.Test\"} 1"),
            "{text}"
        );
        let provider = telemetry.provider.clone();
        tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(Duration::from_secs(1)))
            .await
            .expect("shutdown task")
            .ok();
    }

    /// The Prometheus names are exactly the documented ones (the dashboard and alerts use them).
    #[test]
    fn names_render_as_documented() {
        let telemetry = build(&OtlpSettings::default());
        let m = &telemetry.metrics;
        let council = [KeyValue::new("council", "E09000001")];
        m.rpc_calls.add(1, &[]);
        m.rpc_duration.record(0.001, &[]);
        m.db_pool_waits.add(1, &[]);
        m.db_pool_wait.record(0.001, &[]);
        m.db_pool_timeouts.add(1, &[]);
        m.disclosure_duration.record(0.001, &[]);
        m.disclosure_batch_size.record(1, &[]);
        m.upload_records.add(1, &council);
        m.notification_backlog.record(1, &council);
        m.notification_lag.record(1.0, &council);
        m.notification_subscribers.add(1, &council);
        m.calls_shed.add(1, &[]);
        m.admission_limit.record(16, &[]);
        m.calls_rate_limited.add(1, &[]);
        m.security_events.add(1, &[]);
        m.lookups.add(1, &[]);
        m.enumeration_rows_pruned.add(1, &[]);
        let families: Vec<String> = telemetry
            .registry
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        for name in [
            "cpis_rpc_server_calls_total",
            "cpis_rpc_server_duration_seconds",
            "cpis_db_pool_connections",
            "cpis_db_pool_max_connections",
            "cpis_db_pool_waits_total",
            "cpis_db_pool_wait_seconds",
            "cpis_db_pool_timeouts_total",
            "cpis_disclosure_transaction_duration_seconds",
            "cpis_disclosure_batch_size",
            "cpis_upload_records_total",
            "cpis_notification_backlog",
            "cpis_notification_lag_seconds",
            "cpis_notification_subscribers",
            "cpis_calls_shed_total",
            "cpis_admission_limit",
            "cpis_calls_rate_limited_total",
            "cpis_security_events_total",
            "cpis_lookups_total",
            "cpis_enumeration_rows_pruned_total",
        ] {
            assert!(
                families.iter().any(|f| f == name),
                "{name} missing: {families:?}"
            );
        }
    }
}
