//! What tracing costs: the lookup benchmark run with trace (and metric) export off and on,
//! alternated in one run (off, on, off, on, ...), each round in a child process of this
//! benchmark so the process-wide telemetry is installed or not exactly as a service's `main`
//! would. "On" exports over OTLP/gRPC at the default sampling (every trace) to a sink in this
//! process that only decodes and counts what arrives (`otlp_sink`), which also proves the spans
//! went out; its CPU is reported apart (in production the collector runs elsewhere).
//!
//! The machine's disk makes one round's throughput differ from the next by tens of percent, so
//! the cost is read from pairs of adjacent rounds (off then on, then on then off, so a drift in
//! either direction cancels), as the median of the pairs' ratios; and beside throughput, as the
//! CPU time the process spends per lookup (services, clients and exporter: all in the child),
//! which the disk does not move.

use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use cpis_testkit::db::Backend;

/// One lookup round's result, from the child's JSON line.
#[derive(Debug, serde::Deserialize)]
struct Round {
    lookups_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    process_cpu_us_per_lookup: f64,
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Runs `rounds` pairs of lookup rounds (off and on, the order alternating) on `backend` and
/// prints the cost.
pub async fn run(
    backend: Backend,
    calls: usize,
    concurrency: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    let receiver = crate::otlp_sink::OtlpSink::start()?;
    let engine = format!("{backend:?}").to_lowercase();
    let exe = std::env::current_exe()?;
    let mut off = Vec::new();
    let mut on = Vec::new();
    // The receiver's share of the machine's CPU during each "on" round.
    let mut receiver_share = Vec::new();
    for pair in 0..rounds {
        let order = if pair % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for export in order {
            let (before, metrics_before) = (receiver.spans(), receiver.metric_exports());
            let cpu_before = receiver.cpu_seconds();
            let started = std::time::Instant::now();
            let mut command = Command::new(&exe);
            command
                .args(["lookup", "--backend", &engine])
                .args(["--calls", &calls.to_string()])
                .args(["--concurrency", &concurrency.to_string()])
                // Log lines as the services write them by default (INFO: a line per call), the
                // same in both rounds, taken in as a log collector would (and shown if the round
                // fails). At `warn` the INFO spans would not be built at all with export off,
                // and the difference would be building spans, not exporting them.
                .env("RUST_LOG", "info");
            for (name, _) in std::env::vars_os() {
                if name.to_string_lossy().starts_with("OTEL_") {
                    command.env_remove(name);
                }
            }
            if export {
                command
                    .env(
                        "OTEL_EXPORTER_OTLP_ENDPOINT",
                        format!("http://127.0.0.1:{}", receiver.port),
                    )
                    .env("OTEL_SERVICE_NAME", "cpis-bench");
            }
            let output = command.output().context("run a lookup round")?;
            let elapsed = started.elapsed().as_secs_f64();
            if !output.status.success() {
                let logs = String::from_utf8_lossy(&output.stderr);
                let last: Vec<&str> = logs.lines().rev().take(20).collect();
                anyhow::bail!(
                    "lookup round failed: {}\nits last log lines:\n{}",
                    String::from_utf8_lossy(&output.stdout),
                    last.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            let round: Round = String::from_utf8_lossy(&output.stdout)
                .lines()
                .find(|l| l.contains("\"scenario\":\"lookup\""))
                .context("the round printed no result")
                .and_then(|l| Ok(serde_json::from_str(l)?))?;
            // The batch exporter sends within its schedule delay (5 s by default) and at exit.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let exported = receiver.spans() - before;
            let metric_exports = receiver.metric_exports() - metrics_before;
            let receiver_cpu = receiver.cpu_seconds() - cpu_before;
            if export {
                anyhow::ensure!(exported > 0, "export on, but no span reached the receiver");
            } else {
                anyhow::ensure!(exported == 0, "export off, but {exported} spans arrived");
            }
            println!(
                "telemetry {engine} export {}: {:.0} lookups/s, p50 {:.2} ms, p99 {:.2} ms, CPU {:.0} µs a lookup; {exported} spans and {metric_exports} metric exports received; receiver CPU {receiver_cpu:.1} s of the round's {elapsed:.1} s",
                if export { "on " } else { "off" },
                round.lookups_per_s,
                round.p50_ms,
                round.p99_ms,
                round.process_cpu_us_per_lookup
            );
            if export {
                receiver_share.push(receiver_cpu / (elapsed * cores()));
            }
            if export { &mut on } else { &mut off }.push(round);
        }
    }
    let mean = |rounds: &[Round], f: fn(&Round) -> f64| {
        rounds.iter().map(f).sum::<f64>() / rounds.len().max(1) as f64
    };
    let (off_rate, on_rate) = (
        mean(&off, |r| r.lookups_per_s),
        mean(&on, |r| r.lookups_per_s),
    );
    // Each pair's "on" against its own "off".
    let ratios = |f: fn(&Round) -> f64| -> Vec<f64> {
        off.iter()
            .zip(&on)
            .map(|(off, on)| f(on) / f(off).max(1e-9))
            .collect()
    };
    let throughput = ratios(|r| r.lookups_per_s);
    let cpu = ratios(|r| r.process_cpu_us_per_lookup);
    let spread = |ratios: &[f64]| {
        let (low, high) = ratios
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), r| {
                (l.min(*r), h.max(*r))
            });
        format!("pairs {:.2} to {:.2}", low, high)
    };
    let cost = 1.0 - median(throughput.clone());
    let cpu_cost = median(cpu.clone()) - 1.0;
    let share = receiver_share.iter().sum::<f64>() / receiver_share.len().max(1) as f64;
    println!(
        "telemetry {engine}: export off {off_rate:.0}/s (p50 {:.2} ms, {:.0} µs CPU a lookup), on {on_rate:.0}/s (p50 {:.2} ms, {:.0} µs); cost, the median of {rounds} pairs: {:.1} % of throughput ({}), {:.1} % more CPU a lookup ({}) (target under 10 %); the receiver took {:.1} % of the machine's CPU meanwhile",
        mean(&off, |r| r.p50_ms),
        mean(&off, |r| r.process_cpu_us_per_lookup),
        mean(&on, |r| r.p50_ms),
        mean(&on, |r| r.process_cpu_us_per_lookup),
        cost * 100.0,
        spread(&throughput),
        cpu_cost * 100.0,
        spread(&cpu),
        share * 100.0
    );
    println!(
        "{}",
        serde_json::json!({
            "scenario": "telemetry", "engine": engine, "calls": calls, "concurrency": concurrency, "rounds": rounds,
            "off_per_s": off_rate.round(), "on_per_s": on_rate.round(),
            "off_p50_ms": mean(&off, |r| r.p50_ms), "on_p50_ms": mean(&on, |r| r.p50_ms),
            "off_p99_ms": mean(&off, |r| r.p99_ms), "on_p99_ms": mean(&on, |r| r.p99_ms),
            "off_cpu_us_per_lookup": mean(&off, |r| r.process_cpu_us_per_lookup),
            "on_cpu_us_per_lookup": mean(&on, |r| r.process_cpu_us_per_lookup),
            "throughput_ratios": throughput, "cpu_ratios": cpu,
            "cost": cost, "cpu_cost": cpu_cost, "receiver_cpu_share": share,
            "spans_exported": receiver.spans(), "metric_exports": receiver.metric_exports()
        })
    );
    Ok(())
}

/// The machine's cores (the share of CPU is of all of them).
fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}
