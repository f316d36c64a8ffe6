//! What tracing costs: the lookup benchmark run with trace (and metric) export off and on,
//! alternated in one run (off, on, off, on, ...), each round in a child process of this
//! benchmark so the process-wide telemetry is installed or not exactly as a service's `main`
//! would. "On" exports over OTLP/gRPC at the default sampling (every trace) to a sink in this
//! process that only decodes and counts what arrives (`otlp_sink`), which also proves the spans
//! went out; its CPU is reported apart (in production the collector runs elsewhere).

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use cpis_testkit::db::Backend;

/// One lookup round's result, from the child's JSON line.
#[derive(Debug, serde::Deserialize)]
struct Round {
    lookups_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Runs `rounds` pairs of lookup rounds (off, then on) on `backend` and prints the cost.
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
    for _ in 0..rounds {
        for export in [false, true] {
            let (before, metrics_before) = (receiver.spans(), receiver.metric_exports());
            let cpu_before = receiver.cpu_seconds();
            let started = std::time::Instant::now();
            let mut command = Command::new(&exe);
            command
                .args(["lookup", "--backend", &engine])
                .args(["--calls", &calls.to_string()])
                .args(["--concurrency", &concurrency.to_string()])
                // Log lines as a quiet service writes them; the same in both rounds.
                .env("RUST_LOG", "warn")
                .stderr(Stdio::inherit());
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
            anyhow::ensure!(
                output.status.success(),
                "lookup round failed: {}",
                String::from_utf8_lossy(&output.stdout)
            );
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
                "telemetry {engine} export {}: {:.0} lookups/s, p50 {:.2} ms, p99 {:.2} ms, {exported} spans and {metric_exports} metric exports received; receiver CPU {receiver_cpu:.1} s of the round's {elapsed:.1} s",
                if export { "on " } else { "off" },
                round.lookups_per_s,
                round.p50_ms,
                round.p99_ms
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
    let cost = 1.0 - on_rate / off_rate;
    let share = receiver_share.iter().sum::<f64>() / receiver_share.len().max(1) as f64;
    println!(
        "telemetry {engine}: export off {off_rate:.0}/s (p50 {:.2} ms), on {on_rate:.0}/s (p50 {:.2} ms): cost {:.1} % of throughput (target under 10 %); the receiver took {:.1} % of the machine's CPU meanwhile",
        mean(&off, |r| r.p50_ms),
        mean(&on, |r| r.p50_ms),
        cost * 100.0,
        share * 100.0
    );
    println!(
        "{}",
        serde_json::json!({
            "scenario": "telemetry", "engine": engine, "calls": calls, "concurrency": concurrency, "rounds": rounds,
            "off_per_s": off_rate.round(), "on_per_s": on_rate.round(),
            "off_p50_ms": mean(&off, |r| r.p50_ms), "on_p50_ms": mean(&on, |r| r.p50_ms),
            "off_p99_ms": mean(&off, |r| r.p99_ms), "on_p99_ms": mean(&on, |r| r.p99_ms),
            "cost": cost, "receiver_cpu_share": share, "spans_exported": receiver.spans(), "metric_exports": receiver.metric_exports()
        })
    );
    Ok(())
}

/// The machine's cores (the share of CPU is of all of them).
fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}
