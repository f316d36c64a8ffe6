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

use crate::lookup::{ed_clinician, resident_kib, seed_children};

/// CPU seconds (or cores) of the registry, the lookup service and the benchmark's client.
#[derive(Clone, Copy)]
struct Cores([f64; 3]);

impl Cores {
    /// CPU seconds used between the reading `before` and this one.
    fn since(self, before: Self) -> Self {
        Self(std::array::from_fn(|i| self.0[i] - before.0[i]))
    }

    /// CPU seconds over `seconds` of wall time: the cores each kept busy.
    fn over(self, seconds: f64) -> Self {
        Self(self.0.map(|cpu| cpu / seconds))
    }

    /// The lookup service's.
    fn lookup(self) -> f64 {
        self.0[1]
    }
}

/// Lookups of the one caller whose latency is the unloaded latency.
const UNLOADED_CALLS: usize = 2_000;

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

/// A closed loop's figures: the served calls' rate and latency, and what else happened.
struct ClosedLoop {
    rate: f64,
    served: usize,
    p99: Duration,
    refused: usize,
    failed: usize,
}

/// `callers` callers each serving `calls / callers` lookups one after another; a caller refused
/// OVERLOADED tries the same call again a millisecond later.
async fn closed_loop<F, Fut>(calls: usize, callers: usize, lookup_one: F) -> ClosedLoop
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Outcome> + Send,
{
    let per_caller = calls / callers;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..callers {
        let lookup_one = lookup_one.clone();
        tasks.spawn(async move {
            let (mut served, mut refused, mut failed) = (Vec::new(), 0, 0);
            for i in 0..per_caller {
                loop {
                    match lookup_one(c * per_caller + i).await {
                        Outcome::Served(latency) => served.push(latency),
                        Outcome::Refused(_) => {
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            continue;
                        }
                        Outcome::Failed => failed += 1,
                    }
                    break;
                }
            }
            (served, refused, failed)
        });
    }
    let (mut served, mut refused, mut failed) = (Vec::new(), 0, 0);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((s, r, f)) => {
                served.extend(s);
                refused += r;
                failed += f;
            }
            Err(_) => failed += per_caller,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    served.sort_unstable();
    ClosedLoop {
        rate: served.len() as f64 / elapsed,
        served: served.len(),
        p99: percentile(&served, 0.99),
        refused,
        failed,
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

/// One run's figures, for the table of several bounds (`print_trade_off`).
pub struct Run {
    engine: String,
    bound: String,
    sustained: f64,
    served_in_flood: f64,
    unloaded_p99: Duration,
    full_load_p99: Duration,
    admitted_p99: Duration,
    refused_p99: Duration,
}

/// What each bound trades, one row a run: the throughput it sustains and serves in the flood,
/// against its admitted calls' p99 over the unloaded p99 (its own run's, and the median of the
/// engine's runs in this sweep: one run's unloaded p99 moves by up to half from run to run, and
/// every ratio moves with it) and over the full-load p99.
pub fn print_trade_off(runs: &[Run]) {
    let median_unloaded = |engine: &str| {
        let mut p99s: Vec<Duration> = runs
            .iter()
            .filter(|r| r.engine == engine)
            .map(|r| r.unloaded_p99)
            .collect();
        p99s.sort_unstable();
        p99s.get(p99s.len() / 2).copied().unwrap_or_default()
    };
    println!(
        "| engine | bound | full load /s | served in the flood /s | unloaded p99 (run, engine's median) | full-load p99 | admitted p99 (× run's unloaded, × median unloaded, × full load) | refused p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for run in runs {
        let ratio = |d: Duration, of: Duration| d.as_secs_f64() / of.as_secs_f64().max(1e-9);
        let median = median_unloaded(&run.engine);
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2} ms, {:.2} ms | {:.2} ms | {:.2} ms ({:.2}×, {:.2}×, {:.2}×) | {:.2} ms |",
            run.engine,
            run.bound,
            run.sustained,
            run.served_in_flood,
            ms(run.unloaded_p99),
            ms(median),
            ms(run.full_load_p99),
            ms(run.admitted_p99),
            ratio(run.admitted_p99, run.unloaded_p99),
            ratio(run.admitted_p99, median),
            ratio(run.admitted_p99, run.full_load_p99),
            ms(run.refused_p99),
        );
    }
}

/// Runs the scenario on one engine and prints the figures. `processes`: the services run as
/// the release binaries in processes of their own (as in production: the flood's client does not
/// share their runtime, so a refusal's latency is the server's, not this process's queue).
pub async fn run(
    backend: Backend,
    factor: f64,
    seconds: u64,
    (max_in_flight, min_in_flight): (Option<u32>, Option<u32>),
    processes: bool,
) -> anyhow::Result<Run> {
    let limit = max_in_flight.unwrap_or(cpis_core::server::DEFAULT_MAX_IN_FLIGHT);
    let mut builder = Stack::builder(backend)
        // One clinician sweeps every child here: this measures admission, not the enumeration
        // guard (which would stop the sweep at its threshold).
        .registry(|config| {
            config.enumeration_user_per_hour = 0;
            config.enumeration_user_per_day = 0;
            config.enumeration_organisation_per_hour = 0;
        });
    if !processes {
        builder = builder.lookup(move |config| {
            config.server.max_in_flight = limit;
            config.min_in_flight = min_in_flight;
        });
    }
    let mut stack = builder.start().await.context("database unavailable")?;
    let numbers = Arc::new(seed_children(&stack).await?);
    let token = ed_clinician(&stack)?;
    let services = if processes {
        stack
            .stop_registry()
            .await
            .map_err(|e| anyhow::anyhow!("stop the seeding registry: {e}"))?;
        let mut admission = vec![("CPIS_MAX_IN_FLIGHT", limit.to_string())];
        admission.extend(min_in_flight.map(|floor| ("CPIS_MIN_IN_FLIGHT", floor.to_string())));
        Some(crate::processes::Services::start(&stack, false, &admission).await?)
    } else {
        None
    };
    // The lookup service's resident memory, in KiB: its own process's, or this one's.
    let lookup_rss = || match &services {
        Some(services) => i64::try_from(services.memory().1.resident_kib).unwrap_or(i64::MAX),
        None => resident_kib(),
    };
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(match &services {
            Some(services) => services.lookup.channel().await,
            None => stack.lookup_server().channel().await,
        });
    }
    let channels = Arc::new(channels);
    let lookup_one = {
        let (channels, token, numbers) = (channels.clone(), token.clone(), numbers.clone());
        move |i: usize| {
            let channel = channels[i % channels.len()].clone();
            let nhs = numbers[i % numbers.len()].clone();
            lookup(channel, token.clone(), nhs)
        }
    };
    // Full load: as many callers as the service admits at most (its --max-in-flight), each
    // calling again as soon as it is answered. An adaptive bound may admit fewer: a refused
    // caller tries again a millisecond later, and the throughput is of the served.
    let callers = usize::try_from(limit).unwrap_or(16);
    // The CPU seconds so far of the registry, the lookup service and this client (processes
    // only; `None` in-process, where the services share this process): on a machine of two
    // cores, the flood's own client competes with the services.
    let all_cpu = || {
        services.as_ref().map(|s| {
            let (registry, lookup) = s.cpu();
            Cores([registry, lookup, crate::processes::cpu_seconds(None)])
        })
    };
    // 2,000 calls, so the p99 is the 20th slowest: with 500 (the 5th) it moved between runs
    // by up to twice, and every ratio below is over it.
    let unloaded = closed_loop(UNLOADED_CALLS, 1, lookup_one.clone()).await;
    let cpu_before_full = all_cpu();
    let sustained = closed_loop(callers * 250, callers, lookup_one.clone()).await;
    // The lookup service's CPU seconds at full load.
    let cpu_full = all_cpu()
        .zip(cpu_before_full)
        .map(|(after, before)| after.since(before).lookup());
    anyhow::ensure!(
        unloaded.failed == 0 && sustained.failed == 0,
        "lookups failed before the flood ({} unloaded, {} sustained)",
        unloaded.failed,
        sustained.failed
    );

    // The flood: calls started on a fixed schedule at `factor` times the sustained rate,
    // whatever the answers (open loop: callers that do not wait for each other).
    let offered = sustained.rate * factor;
    let interval = Duration::from_secs_f64(1.0 / offered);
    let rss_before = lookup_rss();
    let cpu_before_flood = all_cpu();
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
    let rss_peak = lookup_rss();
    let (mut served, mut refused, mut failed) = (Vec::new(), Vec::new(), 0_usize);
    while let Some(outcome) = calls.join_next().await {
        match outcome {
            Ok(Outcome::Served(latency)) => served.push(latency),
            Ok(Outcome::Refused(latency)) => refused.push(latency),
            Ok(Outcome::Failed) | Err(_) => failed += 1,
        }
    }
    let flood_ended = Instant::now();
    let cpu_in_flood = all_cpu()
        .zip(cpu_before_flood)
        .map(|(after, before)| after.since(before));
    let flood_secs = flood_ended.duration_since(started).as_secs_f64();
    // The lookup service's CPU seconds in the flood, and each process's cores.
    let cpu_flood = cpu_in_flood.map(Cores::lookup);
    let cores_in_flood = cpu_in_flood.map(|cpu| cpu.over(flood_secs));
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
    // Full load again: an adaptive bound must have grown back to serve it.
    let after = closed_loop(callers * 100, callers, lookup_one.clone()).await;
    anyhow::ensure!(
        after.failed == 0,
        "{} lookups failed after the flood",
        after.failed
    );
    served.sort_unstable();
    refused.sort_unstable();
    let admitted_p99 = percentile(&served, 0.99);
    let engine = format!("{backend:?}").to_lowercase();
    let mode = if processes { "processes" } else { "in-process" };
    // A floor at or above the ceiling leaves the service a fixed bound.
    let bound = min_in_flight.filter(|&floor| floor < limit).map_or_else(
        || format!("fixed bound {limit}"),
        |floor| format!("adaptive bound {floor} to {limit}"),
    );
    println!(
        "overload {engine} ({mode}, {bound}): sustained {:.0}/s ({callers} callers, p99 {:.2} ms, {} refused and retried); unloaded (1 caller) p99 {:.2} ms",
        sustained.rate,
        ms(sustained.p99),
        sustained.refused,
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
    // What a refusal costs the lookup service: the flood's CPU less what its served calls cost
    // at full load, over the refused (an estimate: it takes a served call to cost the same in
    // the flood). Only where nothing was refused at full load (a fixed bound), or the full
    // load's CPU is partly refusals too, and something was refused in the flood.
    let per_call = |cpu: f64, calls: usize| cpu / calls.max(1) as f64 * 1e6;
    let cpu_figures = match (cpu_full, cpu_flood) {
        (Some(full), Some(flood)) => {
            let flood_us = per_call(flood, served.len() + refused.len());
            let refusal_us = (sustained.refused == 0 && !refused.is_empty()).then(|| {
                let served_us = per_call(full, sustained.served);
                (
                    served_us,
                    (flood - served_us * 1e-6 * served.len() as f64) / refused.len().max(1) as f64
                        * 1e6,
                )
            });
            match refusal_us {
                Some((served_us, refused_us)) => println!(
                    "  lookup-service CPU: {served_us:.0} µs a call at full load; in the flood {flood_us:.0} µs a call, about {refused_us:.0} µs a refusal"
                ),
                None => println!("  lookup-service CPU: in the flood {flood_us:.0} µs a call"),
            }
            refusal_us
        }
        _ => None,
    };
    if let Some(Cores([registry, lookup, client])) = cores_in_flood {
        println!(
            "  cores busy in the flood: lookup service {lookup:.2}, registry {registry:.2}, the flood's client {client:.2}"
        );
    }
    println!(
        "  full load after the flood: {:.0}/s ({:.2}x the sustained rate before it)",
        after.rate,
        after.rate / sustained.rate.max(1e-9)
    );
    println!(
        "{}",
        serde_json::json!({
            "scenario": "overload", "engine": engine, "processes": processes, "max_in_flight": limit, "min_in_flight": min_in_flight,
            "sustained_per_s": sustained.rate.round(), "unloaded_p99_ms": ms(unloaded.p99),
            "offered_per_s": (i as f64 / flood_secs).round(), "served_per_s": (served.len() as f64 / flood_secs).round(),
            "admitted_p99_ms": ms(admitted_p99), "full_load_p99_ms": ms(sustained.p99),
            "admitted_p99_to_full_load": admitted_p99.as_secs_f64() / sustained.p99.as_secs_f64().max(1e-9),
            "admitted_p99_to_unloaded": admitted_p99.as_secs_f64() / unloaded.p99.as_secs_f64().max(1e-9),
            "refused": refused.len(), "refused_p99_ms": ms(percentile(&refused, 0.99)),
            "failed": failed, "memory_mb": (rss_peak - rss_before) as f64 / 1024.0,
            "recovery_ms": ms(recovered), "after_per_s": after.rate.round(),
            "after_to_sustained": after.rate / sustained.rate.max(1e-9),
            "lookup_cpu_us_per_call_full_load": cpu_figures.map(|(served, _)| served),
            "lookup_cpu_us_per_refusal": cpu_figures.map(|(_, refused)| refused),
            "cores_in_flood": cores_in_flood.map(|Cores([registry, lookup, client])| serde_json::json!({
                "registry": registry, "lookup_service": lookup, "client": client
            }))
        })
    );
    anyhow::ensure!(failed == 0, "{failed} calls failed other than OVERLOADED");
    Ok(Run {
        engine,
        bound,
        sustained: sustained.rate,
        served_in_flood: served.len() as f64 / flood_secs,
        unloaded_p99: unloaded.p99,
        full_load_p99: sustained.p99,
        admitted_p99,
        refused_p99: percentile(&refused, 0.99),
    })
}
