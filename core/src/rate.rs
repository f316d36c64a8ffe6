//! Rate limits per caller: a sustained rate and a burst for each key (a user, an organisation, a
//! council), by governor's keyed GCRA limiter. A call over its caller's rate is refused at once
//! with RESOURCE_EXHAUSTED, reason RATE_LIMITED, and a `google.rpc.RetryInfo` saying when the
//! caller may try again; other callers are untouched. Limits are per replica: with N replicas
//! behind a balancer a caller gets up to N times its rate, which is the bound's purpose (keeping
//! one caller from taking a replica), not an exact quota.

use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cpis_proto::cpis::common::v1::ErrorReason;
use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock as _};
use tonic::{Code, Status};

/// A rate: `count` calls per `per`, with bursts up to `burst` calls at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Calls per period.
    pub count: NonZeroU32,
    /// The period.
    pub per: Duration,
    /// Calls allowed at once after a quiet spell.
    pub burst: NonZeroU32,
}

impl Rate {
    /// A rate no caller reaches (tests and benchmarks driving thousands of calls as one caller).
    pub const UNLIMITED: Self = Self {
        count: NonZeroU32::MAX,
        per: Duration::from_secs(1),
        burst: NonZeroU32::MAX,
    };
}

impl FromStr for Rate {
    type Err = String;

    /// "5/s", "300/min" or "1000/h", optionally followed by ",burst=N" (default: the count).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let usage = || {
            format!(
                "{text:?}: expected COUNT/s, /min or /h, optionally ,burst=N (for example 5/s,burst=30)"
            )
        };
        let (rate, burst) = match text.split_once(',') {
            Some((rate, burst)) => (rate.trim(), Some(burst.trim())),
            None => (text.trim(), None),
        };
        let (count, unit) = rate.split_once('/').ok_or_else(usage)?;
        let count: NonZeroU32 = count.trim().parse().map_err(|_| usage())?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "min" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(usage()),
        };
        let burst = match burst {
            None => count,
            Some(burst) => burst
                .strip_prefix("burst=")
                .and_then(|n| n.trim().parse().ok())
                .ok_or_else(usage)?,
        };
        Ok(Self { count, per, burst })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            _ => "h",
        };
        write!(f, "{}/{unit},burst={}", self.count, self.burst)
    }
}

/// Checks between two prunings of callers not seen lately (memory stays bounded by the callers
/// of the last few minutes, not all callers ever).
const PRUNE_EVERY: u64 = 4096;

/// One limit: `rate` per key, for calls of one kind (named in refusals).
#[derive(Debug)]
pub struct RateLimit {
    /// The limit's name in metrics (`cpis_calls_rate_limited_total{limit}`).
    name: opentelemetry::KeyValue,
    what: &'static str,
    per: &'static str,
    rate: Rate,
    limiter: DefaultKeyedRateLimiter<String>,
    checks: AtomicU64,
    refusals: crate::log_budget::SharedBudget,
}

impl RateLimit {
    /// A limit of `rate` on `what` (for example "lookups") per `per` (for example "user"),
    /// called `name` in metrics (for example "lookup_per_user").
    pub fn new(name: &'static str, what: &'static str, per: &'static str, rate: Rate) -> Self {
        // A period divided by a count of at least one is at least a nanosecond for any
        // period we accept; a zero would make `with_period` refuse, so fall back to per second.
        let quota = Quota::with_period(rate.per / rate.count.get())
            .unwrap_or_else(|| Quota::per_second(rate.count))
            .allow_burst(rate.burst);
        Self {
            name: opentelemetry::KeyValue::new("limit", name),
            what,
            per,
            rate,
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            checks: AtomicU64::new(0),
            refusals: crate::log_budget::SharedBudget::default(),
        }
    }

    /// Counts a call by `key`: `Ok`, or the status refusing it (RESOURCE_EXHAUSTED
    /// RATE_LIMITED, with the wait in RetryInfo).
    pub fn check(&self, key: &str) -> Result<(), Status> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        match self.limiter.check_key(&key.to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                crate::metrics::metrics()
                    .calls_rate_limited
                    .add(1, std::slice::from_ref(&self.name));
                let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
                // Who (a staff or council identifier, never a child's), on the security log:
                // a caller at its limit may be sweeping; a few lines a second at most.
                self.refusals.allow(|suppressed| {
                    tracing::warn!(
                        target: "security",
                        what = self.what,
                        per = self.per,
                        caller = %crate::text::LogSafe(key),
                        suppressed,
                        "rate limit reached"
                    );
                });
                Err(crate::status::retry_later(
                    Code::ResourceExhausted,
                    ErrorReason::RateLimited,
                    format!(
                        "too many {} for this {} (at most {}); retry after the delay given",
                        self.what, self.per, self.rate
                    ),
                    wait.max(Duration::from_millis(1)),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed expectation is a failed test
    use super::*;

    #[test]
    fn rates_parse_in_words() {
        let rate: Rate = "5/s,burst=30".parse().expect("rate");
        assert_eq!(rate.count.get(), 5);
        assert_eq!(rate.per, Duration::from_secs(1));
        assert_eq!(rate.burst.get(), 30);
        assert_eq!(rate.to_string(), "5/s,burst=30");
        let rate: Rate = "300/min".parse().expect("rate");
        assert_eq!((rate.count.get(), rate.burst.get()), (300, 300));
        for bad in [
            "",
            "5",
            "0/s",
            "5/day",
            "5/s,burst=0",
            "5/s,bursts=3",
            "-1/s",
        ] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_caller_over_its_rate_is_refused_and_others_are_not() {
        let limit = RateLimit::new(
            "lookup_per_user",
            "lookups",
            "user",
            "1/h,burst=3".parse().expect("rate"),
        );
        for _ in 0..3 {
            limit.check("person:a").expect("within the burst");
        }
        let refused = limit.check("person:a").expect_err("over the burst");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert_eq!(
            crate::status::reason_of(&refused),
            Some(ErrorReason::RateLimited)
        );
        let wait = crate::status::retry_delay(&refused).expect("a retry delay");
        assert!(wait > Duration::from_secs(1000), "{wait:?}");
        limit
            .check("person:b")
            .expect("another caller is untouched");
    }
}
