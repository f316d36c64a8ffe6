//! A real server on `127.0.0.1:0`, started through the service's own `serve` function, with
//! helpers to ask it for health and to list its services by reflection (v1 and v1alpha). A
//! server reached over TLS carries the client TLS settings (CA, client certificate) with it.

use std::{fmt::Display, future::Future, net::SocketAddr, pin::Pin, time::Duration};

use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tokio_stream::StreamExt as _;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// The shutdown future handed to a service's `serve`.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A running server and the means to stop it.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// How clients reach it over TLS; `None`: plaintext.
    pub tls: Option<ClientTlsConfig>,
    /// Its admin HTTP port (`/metrics`, `/livez`, `/readyz`), when the stack bound one.
    pub admin: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), String>>>,
}

impl TestServer {
    /// Binds `127.0.0.1:0`, spawns `serve(listener, shutdown)` and waits (at most 10 s) until
    /// health reports SERVING.
    pub async fn start<F, Fut, E>(serve: F) -> Self
    where
        F: FnOnce(TcpListener, Shutdown) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0)), serve).await
    }

    /// As [`TestServer::start`], on `addr`: a restarted server takes its predecessor's address
    /// so that clients (and a lookup service in front of it) keep reaching it.
    pub async fn start_at<F, Fut, E>(addr: SocketAddr, serve: F) -> Self
    where
        F: FnOnce(TcpListener, Shutdown) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        Self::start_tls_at(addr, None, serve).await
    }

    /// As [`TestServer::start_at`], for a server reached over TLS with `tls`.
    pub async fn start_tls_at<F, Fut, E>(
        addr: SocketAddr,
        tls: Option<ClientTlsConfig>,
        serve: F,
    ) -> Self
    where
        F: FnOnce(TcpListener, Shutdown) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        let mut server = Self::spawn_at(addr, serve).await;
        server.tls = tls;
        server.wait_serving("", Duration::from_secs(10)).await;
        server
    }

    /// Binds `127.0.0.1:0` and spawns `serve(listener, shutdown)` without waiting for health:
    /// for servers a test expects never to be ready.
    pub async fn spawn<F, Fut, E>(serve: F) -> Self
    where
        F: FnOnce(TcpListener, Shutdown) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        Self::spawn_at(SocketAddr::from(([127, 0, 0, 1], 0)), serve).await
    }

    async fn spawn_at<F, Fut, E>(addr: SocketAddr, serve: F) -> Self
    where
        F: FnOnce(TcpListener, Shutdown) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        // Under the suite's privacy check, what this server logs and traces is kept.
        crate::logs::capture_for_suite();
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown: Shutdown = Box::pin(async move {
            let _ = rx.await;
        });
        let fut = serve(listener, shutdown);
        let handle = tokio::spawn(async move { fut.await.map_err(|e| e.to_string()) });
        Self {
            addr,
            tls: None,
            admin: None,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// A handle on a TLS port at `addr` that another handle's server runs (the registry's
    /// internal port): it can be reached with `tls`, not stopped.
    pub fn reach(addr: SocketAddr, tls: ClientTlsConfig) -> Self {
        Self {
            addr,
            tls: Some(tls),
            admin: None,
            shutdown: None,
            handle: None,
        }
    }

    /// The same port reached with other TLS settings (another client certificate, CA...).
    pub fn with_tls(&self, tls: ClientTlsConfig) -> Self {
        Self::reach(self.addr, tls)
    }

    /// A handle on a server that runs elsewhere (another process): it can be reached, not
    /// stopped.
    pub fn attach(url: &str) -> Self {
        let addr = url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .parse()
            .expect("http://IP:PORT");
        Self {
            addr,
            tls: None,
            admin: None,
            shutdown: None,
            handle: None,
        }
    }

    /// `http://127.0.0.1:PORT`, or `https://` when reached over TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// An endpoint for the server, with its TLS settings.
    pub fn endpoint(&self) -> Endpoint {
        let endpoint = Endpoint::from_shared(self.url()).expect("endpoint");
        match &self.tls {
            Some(tls) => endpoint.tls_config(tls.clone()).expect("client TLS"),
            None => endpoint,
        }
    }

    /// A connected channel to the server.
    pub async fn channel(&self) -> Channel {
        self.try_channel().await.expect("connect to test server")
    }

    /// A channel to the server, or why it could not connect (a refused TLS handshake...).
    pub async fn try_channel(&self) -> Result<Channel, tonic::transport::Error> {
        self.endpoint()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
    }

    /// Polls health for `service` until SERVING; panics after `limit`.
    pub async fn wait_serving(&self, service: &str, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let channel = self.endpoint().connect().await;
            if let Ok(channel) = channel
                && health(channel, service).await == Some(ServingStatus::Serving)
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "server at {} not SERVING within {limit:?}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends the shutdown signal without waiting for the server to stop.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Signals shutdown and waits for `serve` to return; returns its result.
    pub async fn stop(mut self) -> Result<(), String> {
        self.begin_shutdown();
        let handle = self.handle.take().expect("server handle");
        tokio::time::timeout(Duration::from_secs(30), handle)
            .await
            .expect("server stopped within 30 s")
            .expect("server task did not panic")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.begin_shutdown();
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

/// A loopback port for a process a test starts, which binds it a moment later. A port from
/// `bind(127.0.0.1:0)` comes from the kernel's ephemeral range, where another test's connection
/// or `bind(0)` can take it before the process binds it ("address in use", seen in CI): these
/// come from below that range (20000-31999; Linux's starts at 32768), from a place of this
/// process's own (by pid), moving on at each call, each checked free.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let start = std::process::id().wrapping_mul(211) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let Ok(port) = u16::try_from(LOW + (start + n) % SPAN) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0 to find a free port")
        .port()
}

/// Waits (at most 30 s) until the plaintext server at `url` (a process a test started)
/// answers its health check SERVING; panics naming `what` otherwise.
pub async fn until_serving(url: &str, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(channel) = Endpoint::from_shared(url.to_owned())
            .expect("url")
            .connect()
            .await
            && health(channel, "").await == Some(ServingStatus::Serving)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asks the standard `grpc.health.v1.Health/Check` for `service` ("" is the whole server).
/// `None` when the call fails.
pub async fn health(channel: Channel, service: &str) -> Option<ServingStatus> {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(response.into_inner().status).ok()
}

/// Defines a function listing a server's services through one version of gRPC reflection (the
/// two versions' generated types differ only in their module).
macro_rules! list_services {
    ($(#[$doc:meta])* $name:ident, $version:ident) => {
        $(#[$doc])*
        pub async fn $name(channel: Channel) -> Vec<String> {
            use tonic_reflection::pb::$version::{
                ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest,
                server_reflection_response::MessageResponse,
            };
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut stream = ServerReflectionClient::new(channel)
                .server_reflection_info(tokio_stream::once(request))
                .await
                .expect("reflection call")
                .into_inner();
            let response = stream
                .next()
                .await
                .expect("a reflection answer")
                .expect("reflection ok");
            match response.message_response {
                Some(MessageResponse::ListServicesResponse(list)) => {
                    list.service.into_iter().map(|s| s.name).collect()
                }
                other => panic!("unexpected reflection answer {other:?}"),
            }
        }
    };
}

list_services!(
    /// Lists the server's services through reflection v1.
    list_services_v1,
    v1
);
list_services!(
    /// Lists the server's services through reflection v1alpha (what grpcurl speaks).
    list_services_v1alpha,
    v1alpha
);

/// Whether the server's reflection (v1alpha, as grpcurl's `describe` asks) describes `symbol`,
/// a fully qualified service or message name.
pub async fn reflection_describes(channel: Channel, symbol: &str) -> bool {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(symbol.to_owned())),
    };
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("reflection call")
        .into_inner();
    match stream.next().await.expect("a reflection answer") {
        Ok(response) => matches!(
            response.message_response,
            Some(MessageResponse::FileDescriptorResponse(_))
        ),
        Err(status) if status.code() == tonic::Code::NotFound => false,
        Err(status) => panic!("reflection failed: {status:?}"),
    }
}

/// Checks what every CP-IS server must offer through generated Rust clients: health SERVING for
/// the server and each of `services`, and reflection v1 and v1alpha listing them all (plus
/// health and reflection themselves).
pub async fn assert_standard_surface(server: &TestServer, services: &[&str]) {
    let channel = server.channel().await;
    assert_eq!(
        health(channel.clone(), "").await,
        Some(ServingStatus::Serving)
    );
    for service in services {
        assert_eq!(
            health(channel.clone(), service).await,
            Some(ServingStatus::Serving),
            "health of {service}"
        );
    }
    assert_eq!(
        health(channel.clone(), "cpis.no.such.Service").await,
        None,
        "health of an unknown service must be NOT_FOUND"
    );
    for listed in [
        list_services_v1(channel.clone()).await,
        list_services_v1alpha(channel.clone()).await,
    ] {
        let mut expected: Vec<&str> = services.to_vec();
        expected.extend_from_slice(cpis_core::server::STANDARD_SERVICES);
        let mut listed = listed;
        listed.sort();
        expected.sort_unstable();
        assert_eq!(
            listed, expected,
            "reflection must list exactly the served services"
        );
    }
}

/// Asserts that `serve` (a server given a plaintext listener on a non-loopback address, without
/// `--insecure-plaintext`) refuses within 10 s, naming the flag that would allow it.
pub async fn assert_refuses_public_plaintext<E: Display>(
    serve: impl Future<Output = Result<(), E>>,
) {
    let refused = tokio::time::timeout(Duration::from_secs(10), serve)
        .await
        .expect("refused at once")
        .expect_err("plaintext on 0.0.0.0 is refused");
    let refused = refused.to_string();
    assert!(refused.contains("--insecure-plaintext"), "{refused}");
}

/// The `x-request-id` a server echoed in `metadata` (panics when there is none).
pub fn echoed_request_id(metadata: &tonic::metadata::MetadataMap) -> String {
    metadata
        .get("x-request-id")
        .expect("x-request-id echoed")
        .to_str()
        .expect("an ASCII request id")
        .to_owned()
}
