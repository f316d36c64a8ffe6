//! Overload: the lookup service driven well past what it sustains. Measured in one run: the
//! unloaded latency (one caller), the sustained throughput (callers in a closed loop), then an
//! open-loop flood at a multiple of that throughput for a few seconds. Reported: what the
//! admitted calls' p99 is against the unloaded p99, how fast refusals come back, whether
//! anything failed other than RESOURCE_EXHAUSTED OVERLOADED, the process's memory growth, and how
//! long after the flood a lookup is served at unloaded speed again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cpis_core::status::reason_of;
use cpis_proto::cpis::common::v1::{AccessMode, ErrorReason};
use cpis_proto::cpis::lookup::v1::{
    LookupChildRequest, lookup_service_client::LookupServiceClient,
};
use cpis_testkit::{Stack, db::Backend};
use tonic::{Request, metadata::MetadataValue, transport::Channel};

use crate::lookup::{drive, ed_clinician, resident_kib, seed_children};

/// What became of one call of the flood.
enum Outcome {
    Served(Duration),
    Refused(Duration),
    Failed,
}

/// One lookup of `nhs` over `channel`: served, refused for overload, or failed otherwise.
async fn lookup(
    channel: Channel,
    token: MetadataValue<tonic::metadata::Ascii>,
    nhs: String,
) -> Outcome {
    let mut request = Request::new(LookupChildRequest {
        nhs_number: nhs,
        access_mode: AccessMode::Unscheduled as i32,
    });
    request.metadata_mut().insert("authorization", token);
    let started = Instant::now();
    match LookupServiceClient::new(channel)
        .lookup_child(request)
        .await
    {
        Ok(answer) if !answer.get_ref().alerts.is_empty() => Outcome::Served(started.elapsed()),
        Err(status) if reason_of(&status) == Some(ErrorReason::Overloaded) => {
            Outcome::Refused(started.elapsed())
        }
        _ => Outcome::Failed,
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs the scenario on one engine and prints the figures.
pub async fn run(
    backend: Backend,
    factor: f64,
    seconds: u64,
    max_in_flight: Option<u32>,
) -> anyhow::Result<()> {
    let limit = max_in_flight.unwrap_or(cpis_core::server::DEFAULT_MAX_IN_FLIGHT);
    let stack = Stack::builder(backend)
        // One clinician sweeps every child here: this measures admission, not the enumeration
        // guard (which would stop the sweep at its threshold).
        .registry(|config| {
            config.enumeration_user_per_hour = 0;
            config.enumeration_user_per_day = 0;
            config.enumeration_organisation_per_hour = 0;
        })
        .lookup(move |config| config.server.max_in_flight = limit)
        .start()
        .await
        .context("database unavailable")?;
    let numbers = Arc::new(seed_children(&stack).await?);
    let token = ed_clinician(&stack)?;
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(stack.lookup_server().channel().await);
    }
    let channels = Arc::new(channels);
    let op = {
        let (channels, token, numbers) = (channels.clone(), token.clone(), numbers.clone());
        move |i: usize| {
            let channel = channels[i % channels.len()].clone();
            let nhs = numbers[i % numbers.len()].clone();
            let token = token.clone();
            async move { matches!(lookup(channel, token, nhs).await, Outcome::Served(_)) }
        }
    };
    // Full load: as many callers as the service admits at once (its --max-in-flight), each
    // calling again as soon as it is answered.
    let callers = usize::try_from(limit).unwrap_or(16);
    let unloaded = drive(500, 1, op.clone()).await;
    let sustained = drive(callers * 250, callers, op.clone()).await;
    anyhow::ensure!(
        unloaded.errors == 0 && sustained.errors == 0,
        "lookups failed before the flood ({} unloaded, {} sustained): raise --max-in-flight",
        unloaded.errors,
        sustained.errors
    );

    // The flood: calls started on a fixed schedule at `factor` times the sustained rate,
    // whatever the answers (open loop: callers that do not wait for each other).
    let offered = sustained.rate * factor;
    let interval = Duration::from_secs_f64(1.0 / offered);
    let rss_before = resident_kib();
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut i = 0_usize;
    while started.elapsed() < Duration::from_secs(seconds) {
        ticks.tick().await;
        let channel = channels[i % channels.len()].clone();
        let nhs = numbers[i % numbers.len()].clone();
        calls.spawn(lookup(channel, token.clone(), nhs));
        i += 1;
    }
    let rss_peak = resident_kib();
    let (mut served, mut refused, mut failed) = (Vec::new(), Vec::new(), 0_usize);
    while let Some(outcome) = calls.join_next().await {
        match outcome {
            Ok(Outcome::Served(latency)) => served.push(latency),
            Ok(Outcome::Refused(latency)) => refused.push(latency),
            Ok(Outcome::Failed) | Err(_) => failed += 1,
        }
    }
    let flood_ended = Instant::now();
    let flood_secs = flood_ended.duration_since(started).as_secs_f64();
    // Recovery: from the end of the flood until a lookup is served within twice the unloaded
    // p99 again.
    let recovered = loop {
        let channel = channels[0].clone();
        if let Outcome::Served(latency) = lookup(channel, token.clone(), numbers[0].clone()).await
            && latency <= unloaded.p99 * 2
        {
            break flood_ended.elapsed();
        }
        if flood_ended.elapsed() > Duration::from_secs(30) {
            anyhow::bail!("not back to unloaded latency 30 s after the flood");
        }
    };
    served.sort_unstable();
    refused.sort_unstable();
    let admitted_p99 = percentile(&served, 0.99);
    let engine = format!("{backend:?}").to_lowercase();
    println!(
        "overload {engine} (max in flight {limit}): sustained {:.0}/s ({callers} callers, p99 {:.2} ms); unloaded (1 caller) p99 {:.2} ms",
        sustained.rate,
        ms(sustained.p99),
        ms(unloaded.p99)
    );
    println!(
        "  flood {:.0}/s offered ({factor}x) for {seconds} s: served {:.0}/s, admitted p50 {:.2} ms p99 {:.2} ms ({:.2}x the full-load p99, {:.2}x the unloaded p99); refused {} (p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms); other failures {failed}; memory {:+.1} MB; normal again {:.0} ms after",
        i as f64 / flood_secs,
        served.len() as f64 / flood_secs,
        ms(percentile(&served, 0.5)),
        ms(admitted_p99),
        admitted_p99.as_secs_f64() / sustained.p99.as_secs_f64().max(1e-9),
        admitted_p99.as_secs_f64() / unloaded.p99.as_secs_f64().max(1e-9),
        refused.len(),
        ms(percentile(&refused, 0.5)),
        ms(percentile(&refused, 0.99)),
        ms(refused.last().copied().unwrap_or_default()),
        (rss_peak - rss_before) as f64 / 1024.0,
        ms(recovered)
    );
    println!(
        "{}",
        serde_json::json!({
            "scenario": "overload", "engine": engine, "max_in_flight": limit,
            "sustained_per_s": sustained.rate.round(), "unloaded_p99_ms": ms(unloaded.p99),
            "offered_per_s": (i as f64 / flood_secs).round(), "served_per_s": (served.len() as f64 / flood_secs).round(),
            "admitted_p99_ms": ms(admitted_p99), "full_load_p99_ms": ms(sustained.p99),
            "admitted_p99_to_full_load": admitted_p99.as_secs_f64() / sustained.p99.as_secs_f64().max(1e-9),
            "admitted_p99_to_unloaded": admitted_p99.as_secs_f64() / unloaded.p99.as_secs_f64().max(1e-9),
            "refused": refused.len(), "refused_p99_ms": ms(percentile(&refused, 0.99)),
            "failed": failed, "memory_mb": (rss_peak - rss_before) as f64 / 1024.0,
            "recovery_ms": ms(recovered)
        })
    );
    anyhow::ensure!(failed == 0, "{failed} calls failed other than OVERLOADED");
    Ok(())
}
