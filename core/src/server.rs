//! Runs a set of gRPC services the way every CP-IS server runs them: on a caller-bound listener
//! with TCP_NODELAY, beside gRPC health and reflection (v1 and v1alpha), and with a graceful
//! drain on shutdown (NOT_SERVING first, then stop accepting, then a bounded wait); a panicking
//! handler answers INTERNAL (`panics`); every call carries a request id (`request_id`); an
//! oversized message answers RESOURCE_EXHAUSTED (`limits`); silent and idle connections are
//! closed (`connection`); TLS, when configured, is ours (`tls`), and a non-loopback listener
//! refuses to start in plaintext unless told `--insecure-plaintext`.

use std::{future::Future, time::Duration};

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tonic::service::Routes;
use tonic::transport::{Server, server::TcpIncoming};
use tonic_health::{ServingStatus, server::HealthReporter};

/// The standard services every CP-IS server runs beside its own.
pub const STANDARD_SERVICES: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// HTTP/2 receive window of one stream (see `serve_grpc`).
const STREAM_WINDOW: u32 = 128 * 1024;
/// HTTP/2 receive window of a connection; h2 allows unread small frames half of it in overhead.
const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;

/// Drain and transport settings shared by both services' command lines.
#[derive(Clone, Debug, clap::Args)]
pub struct ServerOptions {
    /// After a shutdown signal, how long to keep answering (health NOT_SERVING) before refusing
    /// new connections, so load balancers stop routing here first. Keep it below the pod's
    /// terminationGracePeriodSeconds minus --shutdown-grace.
    #[arg(long, env = "CPIS_SHUTDOWN_DELAY", default_value = "0s", value_parser = crate::config::duration_within("0s", "10min"))]
    pub shutdown_delay: Duration,

    /// How long in-flight calls may take to finish once the server stops accepting; after this
    /// the remaining calls are cut off.
    #[arg(long, env = "CPIS_SHUTDOWN_GRACE", default_value = "10s", value_parser = crate::config::duration_within("0s", "10min"))]
    pub shutdown_grace: Duration,

    /// Most concurrent calls on one connection (HTTP/2 streams served at once).
    #[arg(long, env = "CPIS_MAX_CONCURRENT_STREAMS", default_value_t = 256)]
    pub max_concurrent_streams: u32,

    /// A connection that has not sent the HTTP/2 preface this long after it was accepted is
    /// closed (a client that connects and says nothing holds no socket for long).
    #[arg(long, env = "CPIS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = crate::config::duration_within("100ms", "5min"))]
    pub handshake_timeout: Duration,

    /// Most TLS handshakes in progress on one listener; a newcomer beyond it closes the oldest
    /// in progress (a real client finishes in milliseconds, so the oldest is almost always a
    /// connection that says nothing): silent connections cannot stop a listener accepting.
    #[arg(long, env = "CPIS_MAX_PENDING_HANDSHAKES", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_pending_handshakes: u32,

    /// Most TLS handshakes in progress from one source address; a newcomer beyond it closes
    /// that source's oldest. Behind a proxy that hides client addresses every client shares one
    /// source: raise it there.
    #[arg(long, env = "CPIS_MAX_PENDING_HANDSHAKES_PER_SOURCE", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_pending_handshakes_per_source: u32,

    /// A connection that has carried no call (none open, none started or finished) this long is
    /// closed; clients reconnect when they next call. An open stream (notifications) counts as
    /// a call, so it keeps its connection.
    #[arg(long, env = "CPIS_IDLE_TIMEOUT", default_value = "5m", value_parser = crate::config::duration_within("1s", "1d"))]
    pub idle_timeout: Duration,

    /// Most calls this server works on at once, across all connections; a call beyond it is
    /// refused at once with RESOURCE_EXHAUSTED (OVERLOADED) and a retry delay. Health,
    /// reflection and long-lived streams are not counted.
    #[arg(long, env = "CPIS_MAX_IN_FLIGHT", default_value_t = DEFAULT_MAX_IN_FLIGHT, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_in_flight: u32,

    /// The longest a call may run when its caller sets no shorter deadline (DEADLINE_EXCEEDED
    /// after it). Long-lived streams (uploads, notifications) have idle timeouts instead.
    #[arg(long, env = "CPIS_CALL_TIMEOUT", default_value = "30s", value_parser = crate::config::duration_within("100ms", "1h"))]
    pub call_timeout: Duration,

    /// `Some(floor)`: the bound on calls in progress adapts to their latency between `floor` and
    /// --max-in-flight (see `crate::admission`; set by the service: the lookup service's
    /// --min-in-flight). `None`: fixed at --max-in-flight.
    #[arg(skip)]
    pub adaptive_floor: Option<u32>,

    /// The calls (gRPC paths) of this service that are long-lived streams, exempt from
    /// --max-in-flight and --call-timeout (set by the service, not a flag).
    #[arg(skip)]
    pub long_lived_calls: Vec<String>,

    /// The longest a connection stays open before it is closed gracefully (set per listener by
    /// the service: the registry's internal port, so a revoked certificate's connection ends).
    #[arg(skip)]
    pub max_connection_age: Option<Duration>,

    /// Where this server's ports report whether they serve, for the admin port's `/readyz`
    /// (set by the service, not a flag; `None`: nobody asks).
    #[arg(skip)]
    pub readiness: Option<crate::admin::Readiness>,

    /// TLS certificate, reloading and the plaintext escape hatch.
    #[command(flatten)]
    pub tls: crate::tls::TlsOptions,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            shutdown_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(10),
            max_concurrent_streams: 256,
            handshake_timeout: Duration::from_secs(10),
            max_pending_handshakes: 1024,
            max_pending_handshakes_per_source: 64,
            max_connection_age: None,
            readiness: None,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            adaptive_floor: None,
            call_timeout: Duration::from_secs(30),
            long_lived_calls: Vec::new(),
            idle_timeout: Duration::from_secs(300),
            tls: crate::tls::TlsOptions::default(),
        }
    }
}

/// The default bound on calls in progress per server, for 2 cores: measured with
/// `cpis-bench overload` (README, "Performance"), 16 in progress gave the lookup service its
/// highest throughput on both engines; 32 only added queueing (SQLite: 2,182/s at p99 28 ms
/// against 2,400/s at p99 13 ms), and 8 cost SQLite 8 % of its throughput.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 16;

/// The retry delay suggested to a caller refused for overload: long enough for the calls in
/// progress to finish (milliseconds each), short enough that a clinician does not notice.
pub const OVERLOAD_RETRY_AFTER: Duration = Duration::from_millis(100);

impl ServerOptions {
    /// The admission bounds (see `crate::admission`).
    pub fn admission_limits(&self) -> crate::admission::AdmissionLimits {
        crate::admission::AdmissionLimits {
            max_in_flight: usize::try_from(self.max_in_flight).unwrap_or(usize::MAX),
            adaptive_floor: self
                .adaptive_floor
                .map(|f| usize::try_from(f).unwrap_or(usize::MAX)),
            default_timeout: self.call_timeout,
            retry_after: OVERLOAD_RETRY_AFTER,
            long_lived: self.long_lived_calls.clone().into(),
        }
    }

    /// The bounds on TLS handshakes in progress.
    pub fn handshake_limits(&self) -> crate::handshake::HandshakeLimits {
        let size = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
        crate::handshake::HandshakeLimits {
            total: size(self.max_pending_handshakes),
            per_source: size(self.max_pending_handshakes_per_source),
        }
    }
}

/// The part of the encoded descriptor set `encoded` that `services` need: the files defining
/// them and every file those import, directly or not, in the set's order.
pub fn descriptors_for(
    encoded: &[u8],
    services: &[&str],
) -> Result<prost_types::FileDescriptorSet, prost::DecodeError> {
    use prost::Message as _;
    let set = prost_types::FileDescriptorSet::decode(encoded)?;
    let defines = |file: &prost_types::FileDescriptorProto| {
        file.service.iter().any(|service| {
            let name = format!("{}.{}", file.package(), service.name());
            services.contains(&name.as_str())
        })
    };
    let mut wanted: std::collections::HashSet<&str> = set
        .file
        .iter()
        .filter(|file| defines(file))
        .map(|file| file.name())
        .collect();
    let mut queue: Vec<&str> = wanted.iter().copied().collect();
    while let Some(name) = queue.pop() {
        let Some(file) = set.file.iter().find(|f| f.name() == name) else {
            continue;
        };
        for dependency in &file.dependency {
            if wanted.insert(dependency.as_str()) {
                queue.push(dependency.as_str());
            }
        }
    }
    let file = set
        .file
        .iter()
        .filter(|f| wanted.contains(f.name()))
        .cloned()
        .collect();
    Ok(prost_types::FileDescriptorSet { file })
}

/// Why a server stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listener failed.
    #[error("listener: {0}")]
    Listener(#[from] std::io::Error),
    /// The descriptor set for reflection could not be loaded (a build defect).
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The contracts' descriptor set could not be read (a build defect).
    #[error("descriptor set: {0}")]
    Descriptors(String),
    /// The gRPC transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// TLS could not be set up, or a plaintext listener is not allowed here.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// Health status handle for a server's services, so readiness can follow dependencies.
#[derive(Clone)]
struct Health {
    reporter: HealthReporter,
    services: Vec<&'static str>,
    /// The same status for the admin port's `/readyz`.
    readiness: Option<std::sync::Arc<crate::admin::ReadinessPart>>,
}

impl Health {
    /// Marks the whole server ("") and each of its services with `status`. The whole server
    /// says SERVING last and NOT_SERVING first, so whoever sees it SERVING finds every service
    /// SERVING too.
    pub async fn set_all(&self, status: ServingStatus) {
        if status != ServingStatus::Serving {
            self.reporter.set_service_status("", status).await;
        }
        for name in &self.services {
            self.reporter.set_service_status(*name, status).await;
        }
        if status == ServingStatus::Serving {
            self.reporter.set_service_status("", status).await;
        }
        if let Some(part) = &self.readiness {
            part.set(status == ServingStatus::Serving);
        }
    }
}

/// Serves `routes` plus health and reflection on `listener` until `shutdown` completes, then
/// drains: health turns NOT_SERVING, the server keeps answering for `shutdown_delay`, stops
/// accepting, and waits up to `shutdown_grace` for in-flight calls.
///
/// `tls` (from [`crate::tls::acceptor`]) makes the listener TLS; without it a listener off
/// loopback is refused unless `options.tls.insecure_plaintext`.
///
/// `services` are the fully qualified names health reports on. `ready` runs after the listener
/// is up and before health turns SERVING (a service uses it to wait for its dependencies); if it
/// fails, the server stays NOT_SERVING and the error is returned. It may hand back a signal that
/// health then follows (false: NOT_SERVING, true: SERVING), so a dependency lost later shows.
pub async fn serve_grpc<R, E>(
    routes: Routes,
    services: &[&'static str],
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    options: &ServerOptions,
    ready: R,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), E>
where
    R: Future<Output = Result<Option<tokio::sync::watch::Receiver<bool>>, E>> + Send,
    E: From<ServeError>,
{
    let local_addr = listener.local_addr().map_err(ServeError::from)?;
    crate::tls::check_plaintext(local_addr, tls.is_some(), options.tls.insecure_plaintext)
        .map_err(ServeError::from)?;
    let scheme = if tls.is_some() { "tls" } else { "plaintext" };
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health = Health {
        reporter,
        services: services.to_vec(),
        readiness: options
            .readiness
            .as_ref()
            .map(|r| std::sync::Arc::new(r.part())),
    };
    health.set_all(ServingStatus::NotServing).await;

    // grpcurl and grpcio-reflection speak only v1alpha; newer clients use v1. Serve both, each
    // advertising exactly the services this server runs, and describing only their contract
    // files: the registry's public port cannot describe its internal services.
    let contracts = descriptors_for(cpis_proto::FILE_DESCRIPTOR_SET, services)
        .map_err(|e| ServeError::Descriptors(e.to_string()))?;
    let reflection = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_file_descriptor_set(contracts.clone())
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            );
        for name in services.iter().chain(STANDARD_SERVICES) {
            builder = builder.with_service_name(*name);
        }
        builder
    };
    let reflection_v1 = reflection().build_v1().map_err(ServeError::from)?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(ServeError::from)?;

    let served: Vec<&str> = services.iter().chain(STANDARD_SERVICES).copied().collect();
    let rpc_metrics = crate::rpc_metrics::RpcMetricsLayer::new(
        &served,
        &[
            cpis_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ],
    );
    let routes = routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);

    // Nagle's algorithm adds tens of milliseconds to small gRPC replies: turn it off.
    let incoming = crate::connection::guard(
        TcpIncoming::from(listener).with_nodelay(Some(true)),
        options.handshake_timeout,
        options.idle_timeout,
        tls,
        options.handshake_limits(),
    );
    let (stop_accepting, stop_accepting_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = Server::builder();
    if let Some(age) = options.max_connection_age {
        // At the age the connection is closed gracefully (GOAWAY): calls in flight finish.
        // (tonic's max_connection_age_grace would instead skip the graceful close and cut the
        // connection at age plus grace.)
        server = server.max_connection_age(age);
    }
    let server = server
        // Outermost: a call counts for its connection's idle timeout until its answer is sent.
        .layer(crate::connection::CallCountingLayer)
        // Next, above everything that can answer for the handlers (a panic's INTERNAL, an
        // overload refusal, an oversized message's RESOURCE_EXHAUSTED), so RED metrics count
        // the code the caller actually receives, timed to the end of the answer.
        .layer(rpc_metrics)
        // Next, so every log line of a call (a panic's too) carries its request id, and every
        // answer (a panic's INTERNAL too) echoes it.
        .layer(crate::request_id::RequestIdLayer)
        // Above the handlers that read the request: tonic's OUT_OF_RANGE for an oversized
        // message becomes RESOURCE_EXHAUSTED before the answer leaves.
        .layer(crate::limits::OversizedLayer)
        // Beneath only what cannot panic, so a panic anywhere lower (auth interceptors,
        // handlers) answers INTERNAL on that call alone and the connection keeps serving.
        .layer(crate::panics::catch_panics())
        // Above the routes and below the request id: a call refused for overload costs no
        // authentication or decoding, and its answer still echoes the request id.
        .layer(crate::admission::AdmissionLayer::new(
            options.admission_limits(),
        ))
        .max_concurrent_streams(Some(options.max_concurrent_streams))
        // Large enough for a token up to MAX_TOKEN_BYTES, refused in words by the verifier.
        .http2_max_header_list_size(Some(crate::limits::MAX_HEADER_LIST_BYTES))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        // Receive windows sized so a client streaming small messages as fast as it can (one
        // record per message) is slowed by flow control, never cut off: h2 refuses a connection
        // (GOAWAY ENHANCE_YOUR_CALM "too_many_data_frames") once unread small DATA frames cost
        // more than half the connection window in framing overhead, so a stream's window must
        // hold few enough small frames. 128 KiB holds ~3,000 records of ~45 bytes (about 0.6 MiB
        // of overhead) against a 2 MiB budget, still ~100,000 records/s at 10 ms round trips.
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, async {
            // A dropped sender also means stop.
            let _ = stop_accepting_rx.await;
        });
    tokio::pin!(server);

    tracing::info!(addr = %local_addr, transport = scheme, "listening");
    // Readiness: the server already accepts connections (so health can be asked) but reports
    // NOT_SERVING until its dependencies are ready.
    tokio::pin!(ready);
    tokio::pin!(shutdown);
    let mut follow = tokio::select! {
        result = &mut server => return result.map_err(|e| ServeError::from(e).into()),
        readiness = &mut ready => readiness?,
        () = &mut shutdown => {
            let _ = stop_accepting.send(());
            return drain(server, options.shutdown_grace).await;
        }
    };
    health.set_all(ServingStatus::Serving).await;
    tracing::info!(addr = %local_addr, "serving");

    loop {
        tokio::select! {
            result = &mut server => return result.map_err(|e| ServeError::from(e).into()),
            () = &mut shutdown => break,
            changed = async {
                match follow.as_mut() {
                    Some(signal) => signal.changed().await.map(|()| *signal.borrow_and_update()),
                    None => std::future::pending().await,
                }
            } => match changed {
                Ok(true) => {
                    tracing::info!("dependencies back: serving");
                    health.set_all(ServingStatus::Serving).await;
                }
                Ok(false) => {
                    tracing::warn!("a dependency is unreachable: not serving");
                    health.set_all(ServingStatus::NotServing).await;
                }
                // The signal's owner is gone: keep the last status.
                Err(_) => follow = None,
            },
        }
    }

    health.set_all(ServingStatus::NotServing).await;
    tracing::info!(
        delay_ms = options.shutdown_delay.as_millis() as u64,
        grace_ms = options.shutdown_grace.as_millis() as u64,
        "draining"
    );
    // Keep answering (as NOT_SERVING) so balancers notice before connections are refused.
    tokio::select! {
        result = &mut server => return result.map_err(|e| ServeError::from(e).into()),
        () = tokio::time::sleep(options.shutdown_delay) => {}
    }
    let _ = stop_accepting.send(());
    drain(server, options.shutdown_grace).await
}

/// Waits up to `grace` for in-flight calls after the server stopped accepting.
async fn drain<F, E>(server: F, grace: Duration) -> Result<(), E>
where
    F: Future<Output = Result<(), tonic::transport::Error>>,
    E: From<ServeError>,
{
    match tokio::time::timeout(grace, server).await {
        Ok(result) => {
            tracing::info!("stopped");
            result.map_err(|e| ServeError::from(e).into())
        }
        Err(_) => {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "drain grace expired; cutting off remaining calls"
            );
            Ok(())
        }
    }
}
