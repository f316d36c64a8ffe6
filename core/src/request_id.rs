//! The request id (`x-request-id`) every call carries through the logs: the caller's when it is
//! well formed (1 to 128 printable ASCII characters), else a generated one; put on a tracing
//! span around the whole call so every log line of the request names it, handed to handlers as a
//! request extension (the lookup service passes it on to the registry), and echoed in the
//! response metadata so a caller can quote it. The same span is the call's trace span (kind
//! server, named by the gRPC method, with the `rpc.*` attributes and the final
//! `rpc.grpc.status_code`), continuing the caller's trace when it sends a valid W3C
//! `traceparent` (see `telemetry::propagate`).

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::HeaderValue;
use tracing::Instrument as _;

/// The metadata key.
pub const HEADER: &str = "x-request-id";

/// Longest request id accepted from a caller, in characters (the contracts' bound).
pub const MAX_LEN: usize = 128;

/// The request id of a call, in its request extensions.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestId {
    id: String,
    /// Whether the caller sent this id (false: generated here).
    from_caller: bool,
}

impl RequestId {
    /// The caller's id if well formed.
    pub fn parse(value: &str) -> Option<Self> {
        is_well_formed(value).then(|| Self {
            id: value.to_owned(),
            from_caller: true,
        })
    }

    /// A new id (32 hex digits) that no one outside can predict and that tells nothing of how
    /// many calls came before it: SHA-256 of a 32-byte key drawn from the operating system once
    /// per process and a counter, cut to 16 bytes. Every call without an id of its own gets
    /// one, so it must be cheap: drawing 16 bytes from the OS and formatting each byte took
    /// about 2 % of the lookup service's CPU (a system call and 16 allocations a call; a
    /// refused call pays it too).
    pub fn generate() -> Self {
        use sha2::Digest as _;
        use std::sync::atomic::{AtomicU64, Ordering};
        static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let key = KEY.get_or_init(|| {
            use rand_core::RngCore as _;
            let mut key = [0_u8; 32];
            if rand_core::OsRng.try_fill_bytes(&mut key).is_err() {
                // No entropy (never seen in practice): the process's start time and id still
                // keep its ids apart from other processes'.
                let salt = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
                key = sha2::Sha256::digest(salt.as_bytes()).into();
            }
            key
        });
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let digest = sha2::Sha256::new()
            .chain_update(key)
            .chain_update(n.to_be_bytes())
            .finalize();
        // The digest's own hex (64 digits), cut to the first 16 bytes.
        let mut id = format!("{digest:x}");
        id.truncate(32);
        Self {
            id,
            from_caller: false,
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// Whether the caller sent it (false: generated because it was absent or malformed).
    pub fn from_caller(&self) -> bool {
        self.from_caller
    }

    /// The id of a call: the caller's when well formed, else a generated one.
    pub fn of(headers: &http::HeaderMap) -> Self {
        headers
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(Self::parse)
            .unwrap_or_else(Self::generate)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({})", self.id)
    }
}

/// The contracts' rule: 1 to 128 printable ASCII characters (no spaces, no controls), so the id
/// is safe in a log line and in metadata as it is.
pub fn is_well_formed(value: &str) -> bool {
    !value.is_empty() && value.len() <= MAX_LEN && value.bytes().all(|b| b.is_ascii_graphic())
}

/// The layer giving every call its request id, span and echoed header.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestIdLayer;

impl<S> tower::Layer<S> for RequestIdLayer {
    type Service = RequestIds<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIds { inner }
    }
}

/// The service [`RequestIdLayer`] wraps around a server's routes.
#[derive(Clone, Debug)]
pub struct RequestIds<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for RequestIds<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<StatusRecorded<R>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let id = RequestId::of(request.headers());
        // A method this server serves names the span (and the trace span); any other path is
        // caller text (`/Patient/9990000018`, endless made-up names) and is only "unknown".
        let known = request
            .extensions()
            .get::<crate::rpc_metrics::KnownMethod>()
            .cloned();
        let (path, service, method): (&str, &str, &str) = match &known {
            Some(known) => (&known.path, &known.service, &known.method),
            None => ("unknown", "unknown", "unknown"),
        };
        let span = tracing::info_span!(
            "request",
            request_id = %id,
            path = %path,
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        // Before anything is logged in the span (a line makes its trace ids final).
        crate::telemetry::propagate::continue_trace(&span, request.headers());
        if !id.from_caller() && request.headers().contains_key(HEADER) {
            tracing::info!(parent: &span, "malformed x-request-id replaced");
        }
        // Checked well formed or generated as hex, so always a valid header value.
        let echo = HeaderValue::from_str(id.as_str()).ok();
        request.extensions_mut().insert(id);
        // Interceptors run when the call is made, so it is made inside the span as well.
        let future = span.in_scope(|| self.inner.call(request));
        let body_span = span.clone();
        Box::pin(
            async move {
                let mut response = future.await?;
                if let Some(echo) = echo {
                    response.headers_mut().insert(HEADER, echo);
                }
                // A refusal before any message (trailers-only) has its status in the headers;
                // otherwise it comes in the trailers, at the end of the body.
                record_status(&body_span, response.headers());
                Ok(response.map(|body| StatusRecorded {
                    body,
                    span: body_span,
                }))
            }
            .instrument(span),
        )
    }
}

/// Records a `grpc-status` found in `headers` (headers or trailers) on the call's span.
fn record_status(span: &tracing::Span, headers: &http::HeaderMap) {
    if let Some(code) = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
    {
        span.record("rpc.grpc.status_code", code);
    }
}

pin_project_lite::pin_project! {
    /// A response body that records the call's gRPC status from its trailers, and keeps the
    /// call's span open until the answer has been sent (streams included).
    pub struct StatusRecorded<B> {
        #[pin]
        body: B,
        span: tracing::Span,
    }
}

impl<B: http_body::Body> http_body::Body for StatusRecorded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(trailers) = frame.trailers_ref()
        {
            record_status(this.span, trailers);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a failed expectation is a failed test

    use super::*;

    #[test]
    fn well_formed_ids_are_kept_and_others_replaced() {
        let mut headers = http::HeaderMap::new();
        assert!(!RequestId::of(&headers).from_caller());
        headers.insert(HEADER, HeaderValue::from_static("abc-123_X"));
        let kept = RequestId::of(&headers);
        assert!(kept.from_caller());
        assert_eq!(kept.as_str(), "abc-123_X");
        for bad in ["has space", "", &"x".repeat(MAX_LEN + 1)] {
            headers.insert(HEADER, HeaderValue::from_str(bad).unwrap());
            let replaced = RequestId::of(&headers);
            assert!(!replaced.from_caller(), "{bad:?}");
            assert_eq!(replaced.as_str().len(), 32);
            assert!(replaced.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_ne!(RequestId::generate(), RequestId::generate());
    }

    #[test]
    fn generated_ids_are_distinct_hex_and_not_sequential() {
        let ids: Vec<String> = (0..10_000)
            .map(|_| RequestId::generate().as_str().to_owned())
            .collect();
        assert!(
            ids.iter()
                .all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        );
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "no id repeats");
        // Consecutive ids share no prefix a caller could count with: each half differs.
        let alike = ids
            .windows(2)
            .filter(|pair| pair[0][..16] == pair[1][..16] || pair[0][16..] == pair[1][16..])
            .count();
        assert_eq!(alike, 0, "consecutive ids differ in both halves");
    }
}
