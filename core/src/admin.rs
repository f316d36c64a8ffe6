//! The admin HTTP port (`--admin-listen`): `GET /metrics` (Prometheus text), `GET /livez` (200
//! while the process serves) and `GET /readyz` (200 only while every gRPC port of the server
//! reports SERVING, the same readiness as `grpc.health.v1`; 503 before, while a dependency is
//! down and while draining), for scrapers and platforms that probe over HTTP.
//!
//! Plaintext HTTP/1.1 with small bounds (few connections, short timeouts, tiny requests): bind
//! it to the pod network or loopback, never a public address. It carries no child data.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

/// Most admin connections open at once; a newcomer beyond it closes the oldest open one, so
/// connections that hold on (silent, or never reading their answer) cannot keep the kubelet's
/// probes, which connect anew each time, from being answered.
const MAX_CONNECTIONS: usize = 32;
/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest one admin connection stays open: one request, answered in milliseconds.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(10);
/// Largest request head the admin port reads (a scrape's is a few hundred bytes).
const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// The prometheus text exposition's content type.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a server is ready: each of its gRPC ports holds a part, and the server is ready
/// when it has parts and every part is SERVING. Cheap to clone (one shared state).
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    parts: Arc<Mutex<Vec<bool>>>,
}

impl Readiness {
    /// A new part, not ready until it says so (one per gRPC port, from `server::serve_grpc`).
    pub fn part(&self) -> ReadinessPart {
        let mut parts = self.parts.lock().unwrap_or_else(PoisonError::into_inner);
        parts.push(false);
        ReadinessPart {
            parts: self.parts.clone(),
            index: parts.len() - 1,
        }
    }

    /// True when there is at least one part and all are ready.
    pub fn ready(&self) -> bool {
        let parts = self.parts.lock().unwrap_or_else(PoisonError::into_inner);
        !parts.is_empty() && parts.iter().all(|ready| *ready)
    }
}

/// One port's share of a [`Readiness`].
#[derive(Debug)]
pub struct ReadinessPart {
    parts: Arc<Mutex<Vec<bool>>>,
    index: usize,
}

impl ReadinessPart {
    /// Records whether this port serves.
    pub fn set(&self, ready: bool) {
        let mut parts = self.parts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(part) = parts.get_mut(self.index) {
            *part = ready;
        }
    }
}

impl Drop for ReadinessPart {
    /// A port that stopped serving is not ready.
    fn drop(&mut self) {
        self.set(false);
    }
}

/// Serves the admin endpoints on `listener` (if any) until `shutdown` completes, then stops
/// accepting and closes its connections. Accept errors are logged and retried, never fatal: the
/// gRPC ports are what the service is for.
pub async fn serve(
    listener: Option<TcpListener>,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send,
) {
    let Some(listener) = listener else {
        shutdown.await;
        return;
    };
    match listener.local_addr() {
        Ok(addr) => tracing::info!(%addr, transport = "plaintext", "admin listening"),
        Err(error) => tracing::warn!(%error, "admin listener has no address"),
    }
    // Dropped on return: the open connections end with the server.
    let mut connections = tokio::task::JoinSet::new();
    // The open connections, oldest first.
    let mut open = std::collections::VecDeque::<tokio::task::AbortHandle>::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        // Reap finished connections so the set stays as small as the open ones.
        while connections.try_join_next().is_some() {}
        open.retain(|connection| !connection.is_finished());
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::debug!(%error, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if open.len() >= MAX_CONNECTIONS
            && let Some(oldest) = open.pop_front()
        {
            oldest.abort();
        }
        let readiness = readiness.clone();
        let connection = connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let readiness = readiness.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&request, &readiness)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_REQUEST_BYTES)
                // One request per connection: a client cannot queue answers it never reads.
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            // Cut a connection that outstays any scrape.
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
        });
        open.push_back(connection);
    }
}

/// The answer to one admin request.
fn answer<B>(request: &Request<B>, readiness: &Readiness) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match request.uri().path() {
        "/metrics" => {
            let mut response =
                Response::new(Full::new(Bytes::from(crate::metrics::prometheus_text())));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(METRICS_CONTENT_TYPE),
            );
            response
        }
        "/livez" => plain(StatusCode::OK, "ok\n"),
        "/readyz" if readiness.ready() => plain(StatusCode::OK, "ready\n"),
        "/readyz" => plain(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => plain(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)] // tests: a failed expectation is a failed test
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut answer = String::new();
        // One request per connection: the server closes after answering.
        stream.read_to_string(&mut answer).await.expect("read");
        answer
    }

    /// Connections that hold on (silent ones, and one that queues requests and never reads)
    /// cannot keep a probe from its answer.
    #[tokio::test]
    async fn probes_are_answered_while_connections_hold_on() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let readiness = Readiness::default();
        let part = readiness.part();
        part.set(true);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(Some(listener), readiness, async {
            let _ = stopped.await;
        }));
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS * 2 {
            held.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
        }
        let mut greedy = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let queued = "GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n".repeat(200);
        let _ = greedy.write_all(queued.as_bytes()).await;
        let answer = tokio::time::timeout(Duration::from_secs(1), get(addr, "/readyz"))
            .await
            .expect("a probe is answered within a second");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        drop((held, greedy));
        let _ = stop.send(());
        server.await.expect("admin server stops");
    }

    #[test]
    fn ready_only_when_every_part_is() {
        let readiness = Readiness::default();
        assert!(!readiness.ready(), "no ports: not ready");
        let public = readiness.part();
        let internal = readiness.part();
        public.set(true);
        assert!(!readiness.ready());
        internal.set(true);
        assert!(readiness.ready());
        drop(internal);
        assert!(!readiness.ready(), "a stopped port is not ready");
        drop(public);
    }
}
