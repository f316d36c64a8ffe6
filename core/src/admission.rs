//! Admission control at the edge of each server: a bound on the calls being worked on at once
//! (server-wide, across connections), with the excess refused at once rather than queued, and a
//! default time limit on each call.
//!
//! - **Load shedding in front of a concurrency limit.** A call takes one of `max_in_flight`
//!   permits for as long as its handler runs (until its answer's headers are ready: a
//!   server-streaming call such as a notification stream gives its permit back once the stream
//!   is handed over). A call that finds none free is answered at once RESOURCE_EXHAUSTED,
//!   reason OVERLOADED, with a `google.rpc.RetryInfo` delay: admitted work stays bounded, so its
//!   latency holds, and the refused learn in microseconds rather than after a queue's wait.
//! - **A default timeout.** A call runs at most `default_timeout` (or its caller's shorter
//!   `grpc-timeout`); past it, DEADLINE_EXCEEDED.
//! - **Exempt**: health and reflection (a prober must see an overloaded server as alive, or it
//!   would be restarted exactly when it is busiest), and the long-lived calls a service names
//!   (uploads, notification streams), which have bounds of their own (idle timeouts, subscriber
//!   caps, one upload per batch id) and would otherwise hold permits for minutes.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use cpis_proto::cpis::common::v1::ErrorReason;
use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tonic::Code;

/// The admission settings of one server.
#[derive(Clone, Debug)]
pub struct AdmissionLimits {
    /// Most calls worked on at once, server-wide.
    pub max_in_flight: usize,
    /// The longest a call may run when its caller set no shorter deadline.
    pub default_timeout: Duration,
    /// The retry delay suggested to a refused caller.
    pub retry_after: Duration,
    /// gRPC paths (`/package.Service/Method`) exempt from both bounds: long-lived streams.
    pub long_lived: Arc<[String]>,
}

/// Paths never refused nor timed out here: health and reflection.
const ALWAYS_ADMITTED: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// The layer (see the module).
#[derive(Clone, Debug)]
pub struct AdmissionLayer {
    permits: Arc<Semaphore>,
    limits: AdmissionLimits,
}

impl AdmissionLayer {
    /// Admission under `limits`.
    pub fn new(limits: AdmissionLimits) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            limits,
        }
    }
}

impl<S> tower::Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Admission {
            inner,
            permits: self.permits.clone(),
            limits: self.limits.clone(),
        }
    }
}

/// The service [`AdmissionLayer`] wraps around a server's routes.
#[derive(Clone, Debug)]
pub struct Admission<S> {
    inner: S,
    permits: Arc<Semaphore>,
    limits: AdmissionLimits,
}

impl<S, B> tower::Service<http::Request<B>> for Admission<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // tonic's routes are always ready; the bound is the permits, taken per call.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let exempt = ALWAYS_ADMITTED.iter().any(|p| path.starts_with(p))
            || self.limits.long_lived.iter().any(|p| p == path);
        if exempt {
            let future = self.inner.call(request);
            return Box::pin(future);
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            let retry_after = self.limits.retry_after;
            tracing::debug!(path, "overloaded: call refused");
            return Box::pin(async move { Ok(overloaded(retry_after)) });
        };
        let limit = self.limits.default_timeout;
        let future = self.inner.call(request);
        Box::pin(async move {
            let answer = tokio::time::timeout(limit, future).await;
            drop(permit);
            match answer {
                Ok(response) => response,
                Err(_) => Ok(timed_out(limit)),
            }
        })
    }
}

/// Marks an answer refused for overload, for the metrics layer above to count it as shed
/// (`cpis_calls_shed_total`) under the service it knows the caller asked for.
#[derive(Clone, Copy, Debug)]
pub struct Shed;

/// RESOURCE_EXHAUSTED OVERLOADED, retry after `delay`.
fn overloaded(delay: Duration) -> http::Response<tonic::body::Body> {
    let mut response = crate::status::retry_later(
        Code::ResourceExhausted,
        ErrorReason::Overloaded,
        "the server is at its limit of calls in progress; retry after the delay given",
        delay,
    )
    .into_http();
    response.extensions_mut().insert(Shed);
    response
}

/// DEADLINE_EXCEEDED at the server's own limit.
fn timed_out(limit: Duration) -> http::Response<tonic::body::Body> {
    tonic::Status::deadline_exceeded(format!(
        "the call ran past the server's limit of {}",
        humantime::format_duration(limit)
    ))
    .into_http()
}
