//! RED metrics per RPC: a tower layer counting every finished gRPC call and timing it to the
//! end of its answer, labelled with the service, the method and the status code's name
//! (`cpis_rpc_server_calls_total`, `cpis_rpc_server_duration_seconds`).
//!
//! The code is read where gRPC puts it: the `grpc-status` header of a trailers-only answer (a
//! refusal before any message: overload, authentication, validation), else the trailers after
//! the last message. An answer dropped before its end (the caller went away, the connection
//! broke) counts as CANCELLED. Only the paths this server serves become labels; anything else
//! is `unknown`, so a caller cannot grow the label sets by inventing paths.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use opentelemetry::KeyValue;
use tonic::Code;

/// The label pairs (`rpc_service`, `rpc_method`) of each served path, built once per server.
#[derive(Debug, Default)]
struct Paths {
    known: HashMap<String, [KeyValue; 2]>,
    unknown: Option<[KeyValue; 2]>,
}

impl Paths {
    fn labels(&self, path: &str) -> [KeyValue; 2] {
        match self.known.get(path) {
            Some(labels) => labels.clone(),
            None => self.unknown.clone().unwrap_or_else(unknown_labels),
        }
    }
}

fn unknown_labels() -> [KeyValue; 2] {
    [
        KeyValue::new("rpc_service", "unknown"),
        KeyValue::new("rpc_method", "unknown"),
    ]
}

/// The layer (see the module); `services` are the fully qualified services whose methods get
/// their own labels, found in the encoded descriptor sets `descriptors`.
#[derive(Clone, Debug)]
pub struct RpcMetricsLayer {
    paths: Arc<Paths>,
}

impl RpcMetricsLayer {
    /// Labels for every method of `services` described in `descriptors` (encoded
    /// `FileDescriptorSet`s); a set that does not decode is skipped (its calls read `unknown`).
    pub fn new(services: &[&str], descriptors: &[&[u8]]) -> Self {
        use prost::Message as _;
        let mut known = HashMap::new();
        for encoded in descriptors {
            let Ok(set) = prost_types::FileDescriptorSet::decode(*encoded) else {
                continue;
            };
            for file in &set.file {
                for service in &file.service {
                    let full = format!("{}.{}", file.package(), service.name());
                    if !services.contains(&full.as_str()) {
                        continue;
                    }
                    for method in &service.method {
                        let labels = [
                            KeyValue::new("rpc_service", full.clone()),
                            KeyValue::new("rpc_method", method.name().to_owned()),
                        ];
                        known.insert(format!("/{full}/{}", method.name()), labels);
                    }
                }
            }
        }
        Self {
            paths: Arc::new(Paths {
                known,
                unknown: Some(unknown_labels()),
            }),
        }
    }
}

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics {
            inner,
            paths: self.paths.clone(),
        }
    }
}

/// The service [`RpcMetricsLayer`] wraps around a server's routes.
#[derive(Clone, Debug)]
pub struct RpcMetrics<S> {
    inner: S,
    paths: Arc<Paths>,
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Measured<R>>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = Call {
            start: Instant::now(),
            labels: self.paths.labels(request.uri().path()),
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            match future.await {
                Ok(response) => {
                    // A trailers-only answer carries its status in the headers.
                    let code = response.headers().get("grpc-status").map(status_code);
                    if response
                        .extensions()
                        .get::<crate::admission::Shed>()
                        .is_some()
                    {
                        let [service, _] = &call.labels;
                        crate::metrics::metrics()
                            .calls_shed
                            .add(1, std::slice::from_ref(service));
                    }
                    Ok(response.map(|inner| Measured {
                        inner,
                        call: Some(call),
                        code,
                    }))
                }
                Err(error) => {
                    // The transport resets the stream: the caller sees no status at all.
                    call.finish(Code::Unknown);
                    Err(error)
                }
            }
        })
    }
}

fn status_code(value: &http::HeaderValue) -> Code {
    Code::from_bytes(value.as_bytes())
}

/// One call being answered: when it arrived and its labels.
#[derive(Debug)]
struct Call {
    start: Instant,
    labels: [KeyValue; 2],
}

impl Call {
    fn finish(self, code: Code) {
        let [service, method] = self.labels;
        let labels = [
            service,
            method,
            KeyValue::new("grpc_code", crate::metrics::code_name(code)),
        ];
        let metrics = crate::metrics::metrics();
        metrics.rpc_calls.add(1, &labels);
        metrics
            .rpc_duration
            .record(self.start.elapsed().as_secs_f64(), &labels);
    }
}

/// An answer's body that records its call when the answer ends (status read from the headers
/// or the trailers) or is dropped unfinished (CANCELLED).
#[derive(Debug)]
pub struct Measured<B> {
    inner: B,
    call: Option<Call>,
    code: Option<Code>,
}

impl<B> Measured<B> {
    fn finish(&mut self, code: Code) {
        if let Some(call) = self.call.take() {
            call.finish(code);
        }
    }
}

impl<B> Drop for Measured<B> {
    fn drop(&mut self) {
        // Ended before its status was read: a trailers-only answer dropped once sent still has
        // its code; otherwise the caller or the connection went away.
        let code = self.code.unwrap_or(Code::Cancelled);
        self.finish(code);
    }
}

impl<B: Body + Unpin> Body for Measured<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(status) = frame.trailers_ref().and_then(|t| t.get("grpc-status")) {
                    let code = status_code(status);
                    self.finish(code);
                }
            }
            Poll::Ready(None) => {
                let code = self.code.unwrap_or(Code::Unknown);
                self.finish(code);
            }
            Poll::Ready(Some(Err(_))) => self.finish(Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
