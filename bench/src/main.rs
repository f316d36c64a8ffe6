//! `cpis-bench`: the project's benchmark. Boots the real servers on 127.0.0.1:0 and measures
//! them through generated clients, next to a floor measured in the same run on the same
//! database, and prints each figure as a ratio to its floor (machines differ; ratios travel).
//!
//! `cargo run --release -p cpis-bench -- upload --records 100000 --backend both`
#![forbid(unsafe_code)]

mod floors;
mod lookup;
mod notify;
mod otlp_sink;
mod overload;
mod processes;
mod telemetry;
mod upload;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use cpis_proto::cpis::common::v1::{ChildProtectionPlan, ChildRecord, PlanPeriod};
use cpis_proto::google::r#type::Date;

/// CP-IS benchmark.
#[derive(Debug, Parser)]
#[command(about)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

/// Which database engines to run on.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Backends {
    Sqlite,
    Postgres,
    Both,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// A council's bulk upload through UploadBatch, against the engine's own bulk load of the
    /// same rows (COPY on PostgreSQL, multi-row inserts in one transaction on SQLite).
    Upload {
        /// Records in the batch.
        #[arg(long, default_value_t = 100_000)]
        records: usize,
        /// Engines.
        #[arg(long, value_enum, default_value_t = Backends::Both)]
        backend: Backends,
        /// Also write the figures here, as a JSON array (one object per engine).
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Notification latency from a disclosure's commit to a live subscriber, on one node and
    /// across two registries sharing PostgreSQL.
    Notify {
        /// Notifications to measure (one after another).
        #[arg(long, default_value_t = 500)]
        count: usize,
    },
    /// Clinicians' lookups through the lookup service and the registry at each concurrency,
    /// against the same server's health check and the engine's own read+insert transaction at
    /// the same concurrency; a table at the end, and JSON with --json.
    Lookup {
        /// Lookups per concurrency level (bounded: the run stops after these; one in flight
        /// runs at most 2,000).
        #[arg(long, default_value_t = 20_000)]
        calls: usize,
        /// Calls in flight, one level after another (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        concurrency: Vec<usize>,
        /// Run the registry and the lookup service as separate processes (the binaries beside
        /// this one: build them in the same profile) and report each one's memory.
        #[arg(long)]
        processes: bool,
        /// Also write every figure as JSON to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        /// Engines.
        #[arg(long, value_enum, default_value_t = Backends::Both)]
        backend: Backends,
        /// Then again beside this many idle notification subscribers on councils outside the
        /// flood (0: skip), reported as a ratio to the same lookups without them (before and
        /// after), with the process's memory growth.
        #[arg(long, default_value_t = 0)]
        idle_subscribers: usize,
        /// The registry's enumeration guard: on at its default thresholds (every lookup counts
        /// its caller's and organisation's distinct children) or off (every threshold 0), to
        /// measure what the guard costs.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        enumeration_guard: bool,
    },
    /// What tracing costs: the lookup scenario with trace and metric export off and on,
    /// alternated in one run (each round a child process, as a service would be started).
    Telemetry {
        /// Lookups per round.
        #[arg(long, default_value_t = 12_000)]
        calls: usize,
        /// Concurrent clients.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Pairs of rounds (export off and on, the order alternating).
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=20))]
        rounds: u64,
        /// Engines.
        #[arg(long, value_enum, default_value_t = Backends::Both)]
        backend: Backends,
    },
    /// The lookup service driven past what it sustains: admitted latency against unloaded,
    /// refusal latency, failures, memory and recovery.
    Overload {
        /// The flood's rate as a multiple of the sustained throughput.
        #[arg(long, default_value_t = 3.0)]
        factor: f64,
        /// How long the flood lasts, in seconds (bounded).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60))]
        seconds: u64,
        /// The lookup service's --max-in-flight (default: its own default). Several, comma
        /// separated (`2,4,8,16`), run the scenario once each and end with a table of what each
        /// bound trades: throughput against the admitted calls' latency.
        #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=4096))]
        max_in_flight: Vec<u32>,
        /// The lookup service's --min-in-flight (its adaptive bound; default: the fixed bound).
        #[arg(long)]
        min_in_flight: Option<u32>,
        /// Run the services as the release binaries, each in its own process (build them
        /// first), rather than inside this benchmark's process.
        #[arg(long)]
        processes: bool,
        /// Engines.
        #[arg(long, value_enum, default_value_t = Backends::Sqlite)]
        backend: Backends,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Servers run in this process: their spans are exported when the OTEL_* environment asks
    // (the telemetry scenario's "on" rounds); their log lines go to standard error, warnings only.
    let _telemetry = cpis_core::telemetry::init_tool(
        cpis_core::telemetry::LogFormat::Text,
        "cpis-bench",
        "warn",
    );
    match cli.scenario {
        Scenario::Upload {
            records,
            backend,
            json,
        } => {
            let mut figures = Vec::new();
            for backend in engines(backend) {
                figures.push(upload::run(backend, records).await?);
            }
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&figures)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        Scenario::Notify { count } => {
            use cpis_testkit::db::Backend;
            notify::run(Backend::Sqlite, count, false).await?;
            notify::run(Backend::Postgres, count, false).await?;
            notify::run(Backend::Postgres, count, true).await?;
        }
        Scenario::Lookup {
            calls,
            concurrency,
            processes,
            json,
            backend,
            idle_subscribers,
            enumeration_guard,
        } => {
            anyhow::ensure!(
                !concurrency.is_empty() && concurrency.iter().all(|&c| c > 0 && calls >= c),
                "need at least one call per client at every level"
            );
            let mut runs = Vec::new();
            for backend in engines(backend) {
                runs.push(
                    lookup::run(
                        backend,
                        calls,
                        &concurrency,
                        idle_subscribers,
                        enumeration_guard,
                        processes,
                    )
                    .await?,
                );
            }
            lookup::print_table(&runs);
            if let Some(path) = json {
                let figures = lookup::runs_json(&runs, enumeration_guard, processes);
                std::fs::write(&path, serde_json::to_vec_pretty(&figures)?)?;
                println!("figures written to {}", path.display());
            }
        }
        Scenario::Telemetry {
            calls,
            concurrency,
            rounds,
            backend,
        } => {
            let rounds = usize::try_from(rounds)?;
            for backend in engines(backend) {
                telemetry::run(backend, calls, concurrency, rounds).await?;
            }
        }
        Scenario::Overload {
            factor,
            seconds,
            max_in_flight,
            min_in_flight,
            processes,
            backend,
        } => {
            anyhow::ensure!(factor > 1.0, "--factor must be above 1");
            let bounds: Vec<Option<u32>> = if max_in_flight.is_empty() {
                vec![None]
            } else {
                max_in_flight.into_iter().map(Some).collect()
            };
            // A run that fails (a call failed other than OVERLOADED) does not stop the sweep:
            // the table shows the others, and the first failure is the command's error.
            let (mut runs, mut failed) = (Vec::new(), None);
            for backend in engines(backend) {
                for &bound in &bounds {
                    match overload::run(backend, factor, seconds, (bound, min_in_flight), processes)
                        .await
                    {
                        Ok(run) => runs.push(run),
                        Err(error) => {
                            eprintln!("overload {backend:?}, bound {bound:?}: {error:#}");
                            failed.get_or_insert(error);
                        }
                    }
                }
            }
            if runs.len() > 1 {
                overload::print_trade_off(&runs);
            }
            if let Some(error) = failed {
                return Err(error);
            }
        }
    }
    Ok(())
}

fn engines(choice: Backends) -> Vec<cpis_testkit::db::Backend> {
    use cpis_testkit::db::Backend;
    match choice {
        Backends::Sqlite => vec![Backend::Sqlite],
        Backends::Postgres => vec![Backend::Postgres],
        Backends::Both => vec![Backend::Sqlite, Backend::Postgres],
    }
}

/// The benchmark's child: born on `born` March 2018, on a child protection plan since
/// 2025-01-10 with no end.
fn cpp_child(nhs_number: String, local_case_id: String, born: i32) -> ChildRecord {
    ChildRecord {
        nhs_number,
        local_case_id,
        given_name: "Alex".into(),
        family_name: "Example".into(),
        date_of_birth: Some(Date {
            year: 2018,
            month: 3,
            day: born,
        }),
        child_protection_plan: Some(ChildProtectionPlan {
            period: Some(PlanPeriod {
                start_date: Some(Date {
                    year: 2025,
                    month: 1,
                    day: 10,
                }),
                end_date: None,
                delete_date: None,
            }),
        }),
        ..Default::default()
    }
}
