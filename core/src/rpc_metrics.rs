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
    known: HashMap<String, ([KeyValue; 2], KnownMethod)>,
    unknown: Option<[KeyValue; 2]>,
}

impl Paths {
    /// The labels of a call to `path`, and its method when this server serves one there.
    fn resolve(&self, path: &str) -> ([KeyValue; 2], Option<&KnownMethod>) {
        match self.known.get(path) {
            Some((labels, named)) => (labels.clone(), Some(named)),
            None => (self.unknown.clone().unwrap_or_else(unknown_labels), None),
        }
    }
}

/// A call's method when its path is one this server serves, put in the request's extensions
/// for the layers below (the request span is named by it): a path no method has is caller text
/// (any URI reaches a server, `/Patient/9990000018` included) and is never a span name, a
/// metric label or a log field.
#[derive(Clone, Debug)]
pub struct KnownMethod {
    /// `/package.Service/Method`.
    pub path: Arc<str>,
    /// `package.Service`.
    pub service: Arc<str>,
    /// `Method`.
    pub method: Arc<str>,
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
                        let path = format!("/{full}/{}", method.name());
                        let named = KnownMethod {
                            path: path.as_str().into(),
                            service: full.as_str().into(),
                            method: method.name().into(),
                        };
                        known.insert(path, (labels, named));
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

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // One look-up of the path: the labels, and the method for the layers below.
        let (labels, named) = self.paths.resolve(request.uri().path());
        if let Some(named) = named {
            request.extensions_mut().insert(named.clone());
        }
        let call = Call {
            start: Instant::now(),
            labels,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed expectation is a failed test
    use super::*;
    use http_body_util::BodyExt as _;
    use hyper::body::Bytes;

    /// A call labelled with a service of its own, so this test reads only its own series.
    fn call(service: &'static str) -> Call {
        Call {
            start: Instant::now(),
            labels: [
                KeyValue::new("rpc_service", service),
                KeyValue::new("rpc_method", "Test"),
            ],
        }
    }

    fn count(service: &str, code: &str) -> bool {
        crate::metrics::prometheus_text().lines().any(|line| {
            line.starts_with("cpis_rpc_server_calls_total{")
                && line.contains(&format!("grpc_code=\"{code}\""))
                && line.contains(&format!("rpc_service=\"{service}\""))
                && line.ends_with(" 1")
        })
    }

    type Frames = http_body_util::StreamBody<
        futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>>,
    >;

    fn body(frames: Vec<Frame<Bytes>>) -> Frames {
        http_body_util::StreamBody::new(futures::stream::iter(
            frames.into_iter().map(Ok).collect::<Vec<_>>(),
        ))
    }

    #[tokio::test]
    async fn the_code_comes_from_the_trailers_after_the_messages() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("5"));
        let answer = Measured {
            inner: body(vec![
                Frame::data(Bytes::from_static(b"message")),
                Frame::trailers(trailers),
            ]),
            call: Some(call("test.Trailers")),
            code: None,
        };
        answer.collect().await.expect("body");
        assert!(count("test.Trailers", "NOT_FOUND"));
    }

    #[tokio::test]
    async fn a_trailers_only_answer_keeps_its_header_code() {
        let answer = Measured {
            inner: body(Vec::new()),
            call: Some(call("test.TrailersOnly")),
            code: Some(Code::PermissionDenied),
        };
        answer.collect().await.expect("body");
        assert!(count("test.TrailersOnly", "PERMISSION_DENIED"));
    }

    #[test]
    fn an_answer_dropped_before_its_end_is_cancelled() {
        let answer = Measured {
            inner: body(vec![Frame::data(Bytes::from_static(b"message"))]),
            call: Some(call("test.Dropped")),
            code: None,
        };
        drop(answer);
        assert!(count("test.Dropped", "CANCELLED"));
    }

    #[test]
    fn unknown_paths_are_one_label_set() {
        let layer = RpcMetricsLayer::new(
            &["grpc.health.v1.Health"],
            &[tonic_health::pb::FILE_DESCRIPTOR_SET],
        );
        let known = layer.paths.resolve("/grpc.health.v1.Health/Check").0;
        assert_eq!(known[0].value.as_str(), "grpc.health.v1.Health");
        assert_eq!(known[1].value.as_str(), "Check");
        for invented in ["/grpc.health.v1.Health/Nope", "/x.Y/Z", "/9990000018"] {
            let labels = layer.paths.resolve(invented).0;
            assert_eq!(labels[0].value.as_str(), "unknown");
            assert_eq!(labels[1].value.as_str(), "unknown");
        }
    }
}
