//! Admission control at the edge of each server: a bound on the calls being worked on at once
//! (server-wide, across connections), with the excess refused at once rather than queued, and a
//! default time limit on each call.
//!
//! - **Load shedding in front of a concurrency limit.** A call counts as in progress for as
//!   long as its handler runs (until its answer's headers are ready: a server-streaming call
//!   such as a notification stream stops counting once the stream is handed over). A call that
//!   finds the limit reached is answered at once RESOURCE_EXHAUSTED, reason OVERLOADED, with a
//!   `google.rpc.RetryInfo` delay: admitted work stays bounded, so its latency holds, and the
//!   refused learn in microseconds rather than after a queue's wait.
//! - **An adaptive limit, where the service is asked for one** (the lookup service's
//!   `--min-in-flight`). The fixed bound that gives the most throughput also lets calls queue for
//!   the CPU behind each other: on 2 cores, 16 lookups in progress took 3 to 14 times the
//!   unloaded p99 under a flood. The adaptive limit moves between a floor and `max_in_flight` by
//!   TCP Vegas' rule (the `tower-acc` crate's `Vegas`): it estimates the calls queued from each
//!   answered call's latency against the lowest latency seen lately, shrinks the limit when more
//!   than 3 queue and grows it when at most 1 does. Only calls answered OK teach it: a call cut
//!   off at its time limit teaches nothing, or a caller that never sent its request's body could
//!   shrink the bound for everyone. Under a flood the admitted then keep 1.8 to 3.2 times the
//!   unloaded p99 instead of 3 to 8, but fewer are served (about half: PostgreSQL's group commit
//!   needs many lookups in progress), hence not the default.
//!   The registry always keeps a fixed bound: its callers (lookup services) bound themselves, and
//!   a disclosure refused there would fail a lookup already admitted.
//! - **A default timeout.** A call runs at most `default_timeout` (or its caller's shorter
//!   `grpc-timeout`); past it, DEADLINE_EXCEEDED.
//! - **Exempt**: health and reflection (a prober must see an overloaded server as alive, or it
//!   would be restarted exactly when it is busiest), and the long-lived calls a service names
//!   (uploads, notification streams), which have bounds of their own (idle timeouts, subscriber
//!   caps, one upload per batch id) and would otherwise hold places for minutes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use cpis_proto::cpis::common::v1::ErrorReason;
use futures::future::BoxFuture;
use tonic::Code;
use tower_acc::Algorithm as _;

/// The admission settings of one server.
#[derive(Clone, Debug)]
pub struct AdmissionLimits {
    /// Most calls worked on at once, server-wide.
    pub max_in_flight: usize,
    /// `Some(floor)`: the limit adapts to the calls' latency between `floor` and
    /// `max_in_flight`; `None`: it stays at `max_in_flight`.
    pub adaptive_floor: Option<usize>,
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

/// The bound on calls in progress, shared by every connection of one server.
#[derive(Debug)]
struct Gate {
    in_flight: AtomicUsize,
    /// The limit now: `max_in_flight`, or the adaptive rule's latest answer within its bounds.
    limit: AtomicUsize,
    /// The adaptive rule, fed the latency of each call answered OK; `None`: a fixed limit.
    adaptive: Option<Mutex<tower_acc::Vegas>>,
    floor: usize,
    ceiling: usize,
}

impl Gate {
    fn new(limits: &AdmissionLimits) -> Self {
        let ceiling = limits.max_in_flight.max(1);
        let floor = limits
            .adaptive_floor
            .map_or(ceiling, |f| f.clamp(1, ceiling));
        let adaptive = limits.adaptive_floor.map(|_| {
            Mutex::new(
                tower_acc::Vegas::builder()
                    // Vegas' queue estimate: limit × (1 − lowest recent latency / latency),
                    // rounded up, so any latency above the lowest reads as at least 1. Grow at 1
                    // or less, hold at 2 or 3, shrink beyond. The crate's defaults (hold 3 to 6)
                    // left the admitted p99 at 3.4 to 3.8 times the unloaded p99 under a flood,
                    // no better than the fixed bound; these brought it to 1.8 to 3.2 times
                    // (`cpis-bench overload --min-in-flight 2`, README "Performance").
                    .threshold(|_| 1)
                    .alpha(|_| 2)
                    .beta(|_| 3)
                    .initial_limit(ceiling)
                    .max_limit(ceiling)
                    .build(),
            )
        });
        Self {
            in_flight: AtomicUsize::new(0),
            limit: AtomicUsize::new(ceiling),
            adaptive,
            floor,
            ceiling,
        }
    }

    /// A place for one more call, or `None` at the limit.
    fn admit(self: &Arc<Self>) -> Option<Ticket> {
        let limit = self.limit.load(Ordering::Relaxed);
        // Counted first, checked after: two calls racing for the last place cannot both win.
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= limit {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Ticket {
            gate: self.clone(),
            started: Instant::now(),
        })
    }

    /// Feeds an answered call's latency to the adaptive rule and applies its new limit.
    fn observe(&self, latency: Duration) {
        let Some(rule) = &self.adaptive else {
            return;
        };
        let in_flight = self.in_flight.load(Ordering::Acquire);
        let mut rule = rule.lock().unwrap_or_else(PoisonError::into_inner);
        rule.update(latency, in_flight, false, false);
        let limit = rule.max_concurrency().clamp(self.floor, self.ceiling);
        // Applied under the rule's lock, so two calls finishing at once cannot leave the older
        // answer in place.
        if self.limit.swap(limit, Ordering::Relaxed) != limit {
            crate::metrics::metrics()
                .admission_limit
                .record(u64::try_from(limit).unwrap_or(u64::MAX), &[]);
        }
    }

    /// The limit now (tests).
    #[cfg(test)]
    fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }
}

/// One admitted call's place; given back when dropped (answered, timed out or abandoned).
struct Ticket {
    gate: Arc<Gate>,
    started: Instant,
}

impl Ticket {
    /// The call was answered OK: its latency teaches the adaptive rule.
    fn answered(self) {
        self.gate.observe(self.started.elapsed());
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.gate.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The layer (see the module).
#[derive(Clone, Debug)]
pub struct AdmissionLayer {
    gate: Arc<Gate>,
    limits: AdmissionLimits,
}

impl AdmissionLayer {
    /// Admission under `limits`.
    pub fn new(limits: AdmissionLimits) -> Self {
        let gate = Arc::new(Gate::new(&limits));
        crate::metrics::metrics()
            .admission_limit
            .record(u64::try_from(gate.ceiling).unwrap_or(u64::MAX), &[]);
        Self { gate, limits }
    }
}

impl<S> tower::Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Admission {
            inner,
            gate: self.gate.clone(),
            limits: self.limits.clone(),
        }
    }
}

/// The service [`AdmissionLayer`] wraps around a server's routes.
#[derive(Clone, Debug)]
pub struct Admission<S> {
    inner: S,
    gate: Arc<Gate>,
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
        // tonic's routes are always ready; the bound is the gate, passed per call.
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
        let Some(ticket) = self.gate.admit() else {
            let retry_after = self.limits.retry_after;
            tracing::debug!(path, "overloaded: call refused");
            return Box::pin(async move { Ok(overloaded(retry_after)) });
        };
        let limit = self.limits.default_timeout;
        let future = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout(limit, future).await {
                Ok(Ok(response)) => {
                    // Only calls answered OK teach the adaptive rule the service's latency: an
                    // error answered at once (a refused token, a malformed number) would pass
                    // for an unloaded call. A gRPC error is answered trailers-only, its status
                    // in the headers; an OK answer's status comes in the trailers.
                    if !response.headers().contains_key("grpc-status") {
                        ticket.answered();
                    }
                    Ok(response)
                }
                Ok(Err(error)) => Err(error),
                // Teaches the adaptive rule nothing (see the module); the place is given back.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max_in_flight: usize, adaptive_floor: Option<usize>) -> Arc<Gate> {
        Arc::new(Gate::new(&AdmissionLimits {
            max_in_flight,
            adaptive_floor,
            default_timeout: Duration::from_secs(30),
            retry_after: Duration::from_millis(100),
            long_lived: Arc::new([]),
        }))
    }

    /// Up to 0.3 ms of noise, different from call to call, as real latencies have.
    fn jitter(n: usize) -> f64 {
        (n * 7919 % 300) as f64 / 1e3
    }

    /// Holds the gate full at its limit and finishes one call, as a flood would: a call takes
    /// `latency(limit)` plus noise, except every tenth, which ran alone (1 ms plus noise), as
    /// some do under real load.
    fn one_flooded_call(gate: &Arc<Gate>, n: usize, latency: impl Fn(usize) -> f64) {
        let held: Vec<Ticket> = std::iter::from_fn(|| gate.admit()).collect();
        assert_eq!(held.len(), gate.limit(), "admitted exactly up to the limit");
        let ms = if n.is_multiple_of(10) {
            1.0
        } else {
            latency(held.len())
        } + jitter(n);
        gate.observe(Duration::from_secs_f64(ms / 1e3));
    }

    /// Two cores: up to two calls run at once in 1 ms; more queue for the CPU.
    fn two_cores(in_flight: usize) -> f64 {
        (in_flight as f64 / 2.0).max(1.0)
    }

    #[test]
    fn a_fixed_gate_admits_up_to_its_limit_and_takes_places_back() {
        let gate = gate(3, None);
        let held: Vec<Ticket> = (0..3).filter_map(|_| gate.admit()).collect();
        assert_eq!(held.len(), 3);
        assert!(gate.admit().is_none(), "a fourth call is refused");
        drop(held);
        assert!(gate.admit().is_some(), "places come back when calls end");
        // Latency never moves a fixed limit.
        for _ in 0..100 {
            gate.observe(Duration::from_secs(1));
        }
        assert_eq!(gate.limit(), 3);
        assert_eq!(gate.in_flight.load(Ordering::Acquire), 0);
    }

    #[test]
    fn queueing_shrinks_an_adaptive_limit_towards_what_the_cores_run() {
        let gate = gate(16, Some(2));
        assert_eq!(gate.limit(), 16, "starts at the ceiling");
        for n in 0..2_000 {
            one_flooded_call(&gate, n, two_cores);
        }
        // The rule holds 2 or 3 calls queued beyond the two that run at once.
        let limit = gate.limit();
        assert!((3..=6).contains(&limit), "limit {limit}");
        assert_eq!(gate.in_flight.load(Ordering::Acquire), 0);
    }

    #[test]
    fn an_adaptive_limit_never_goes_below_its_floor() {
        let gate = gate(16, Some(8));
        // Every call queues behind all the others: the rule alone would go to 2 to 4.
        let mut lowest = usize::MAX;
        for n in 0..2_000 {
            one_flooded_call(&gate, n, |in_flight| in_flight as f64);
            lowest = lowest.min(gate.limit());
        }
        assert_eq!(lowest, 8, "held at the floor, never below");
    }

    #[test]
    fn an_adaptive_limit_grows_back_when_calls_stop_queueing() {
        let gate = gate(16, Some(2));
        for n in 0..2_000 {
            one_flooded_call(&gate, n, two_cores);
        }
        let shrunk = gate.limit();
        assert!(shrunk <= 6, "limit {shrunk}");
        // Every call now takes 1 ms give or take 0.1 ms, however many run at once.
        for n in 0..2_000 {
            let held: Vec<Ticket> = std::iter::from_fn(|| gate.admit()).collect();
            assert!(!held.is_empty());
            gate.observe(Duration::from_secs_f64((1.0 + jitter(n) / 3.0) / 1e3));
        }
        let grown = gate.limit();
        assert!(
            (12..=16).contains(&grown),
            "from {shrunk} back up to {grown}, near the ceiling and not above it"
        );
    }

    #[test]
    fn a_call_cut_off_at_its_time_limit_teaches_nothing() {
        // Only `Ticket::answered` feeds the rule: a ticket dropped unanswered (timed out,
        // abandoned, panicked) gives its place back and nothing else.
        let gate = gate(16, Some(2));
        for _ in 0..1_000 {
            let held: Vec<Ticket> = std::iter::from_fn(|| gate.admit()).collect();
            drop(held);
        }
        assert_eq!(gate.limit(), 16);
        assert_eq!(gate.in_flight.load(Ordering::Acquire), 0);
    }
}
