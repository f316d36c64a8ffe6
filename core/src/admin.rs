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

/// Most admin connections open at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 32;
/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest one admin connection stays open (a scrape takes milliseconds).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
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
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    // Dropped on return: the open connections end with the server.
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => return,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        // Reap finished connections so the set stays as small as the open ones.
        while connections.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::debug!(%error, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let readiness = readiness.clone();
        connections.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request| {
                let readiness = readiness.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&request, &readiness)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_REQUEST_BYTES)
                .keep_alive(true)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            // Cut a connection that outstays any scrape.
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
        });
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
    use super::*;

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
