//! A counting OTLP/gRPC sink for the telemetry benchmark: it accepts trace and metric exports,
//! decodes them (as any collector must) and counts the spans and metric points, nothing more.
//! It runs on its own thread in the benchmark's parent process, which is otherwise idle during a
//! round, so its CPU is the process's own and can be reported apart: in production the
//! collector runs on other machines, and a receiver that takes the services' cores here would
//! be counted as tracing's cost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    metrics_service_server::{MetricsService, MetricsServiceServer},
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use tonic::{Request, Response, Status};

/// What has arrived.
#[derive(Debug, Default)]
struct Counts {
    spans: AtomicU64,
    metric_exports: AtomicU64,
}

#[derive(Clone, Debug)]
struct Sink(Arc<Counts>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0
            .spans
            .fetch_add(u64::try_from(spans).unwrap_or(u64::MAX), Ordering::Relaxed);
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        _request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.0.metric_exports.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// The running sink: where it listens and what it has counted.
#[derive(Debug)]
pub struct OtlpSink {
    /// The port on 127.0.0.1.
    pub port: u16,
    counts: Arc<Counts>,
}

impl OtlpSink {
    /// Binds 127.0.0.1:0 and serves on a thread of its own (one-threaded runtime) until the
    /// process ends.
    pub fn start() -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let counts = Arc::new(Counts::default());
        let sink = Sink(counts.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("otlp-sink".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                    let served = tonic::transport::Server::builder()
                        .add_service(TraceServiceServer::new(sink.clone()))
                        .add_service(MetricsServiceServer::new(sink))
                        .serve_with_incoming(incoming)
                        .await;
                    if let Err(error) = served {
                        eprintln!("otlp sink stopped: {error}");
                    }
                });
            })?;
        Ok(Self { port, counts })
    }

    /// Spans received so far.
    pub fn spans(&self) -> u64 {
        self.counts.spans.load(Ordering::Relaxed)
    }

    /// Metric exports received so far.
    pub fn metric_exports(&self) -> u64 {
        self.counts.metric_exports.load(Ordering::Relaxed)
    }

    /// CPU time this process has used so far, in seconds: the sink's, as the rest of the
    /// process only waits for the round's child.
    pub fn cpu_seconds(&self) -> f64 {
        crate::processes::cpu_seconds(None)
    }
}
