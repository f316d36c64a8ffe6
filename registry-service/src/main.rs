//! `registry-service`: parses flags and environment, sets up logging, binds, and runs
//! `registry_service::serve` until SIGTERM/SIGINT.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use cpis_core::telemetry::{ServiceCli, bind};

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the council gRPC service (public port) and the disclosure and operator services
    /// (internal port, mTLS).
    Serve {
        /// Public (council-facing) address. Use 0.0.0.0:50051 in a container.
        #[arg(long, env = "CPIS_REGISTRY_LISTEN", default_value = "127.0.0.1:50051")]
        listen: SocketAddr,

        /// Internal address (the lookup service and operators; mutual TLS). Use 0.0.0.0:50053
        /// in a container, reachable only from inside the cluster.
        #[arg(long, env = "CPIS_INTERNAL_LISTEN", default_value = "127.0.0.1:50053")]
        internal_listen: SocketAddr,

        /// Admin HTTP address: /metrics (Prometheus text), /livez, /readyz. Plaintext: use
        /// 0.0.0.0:9091 in a container, reachable from the pod network only, never public.
        #[arg(long, env = "CPIS_ADMIN_LISTEN", default_value = "127.0.0.1:9091")]
        admin_listen: SocketAddr,

        #[command(flatten)]
        config: registry_service::Config,
    },
    /// Import NHS-number status changes (the PDS stand-in feed) from a CSV file with header
    /// `nhs_number,reason,replacement_nhs_number,effective_date`, notify the councils holding
    /// each number, and refuse later writes to it. Exits 1 if any line was rejected.
    ImportNhsStatus {
        /// The CSV file.
        file: std::path::PathBuf,
        #[command(flatten)]
        config: registry_service::Config,
    },
    /// Apply pending database migrations, then exit (a Kubernetes Job before rollout).
    Migrate {
        #[command(flatten)]
        config: registry_service::Config,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = ServiceCli::<Command>::parse_and_init(
        "registry-service",
        "The CP-IS registry: the system of record for councils' child protection records.",
    );
    let outcome = run(cli.command).await;
    // `cli.telemetry` is dropped after this: the last spans are flushed whatever the outcome.
    match outcome {
        Ok(code) => code,
        Err(error) => {
            // One line, as `cpis` prints its errors.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve {
            listen,
            internal_listen,
            admin_listen,
            config,
        } => {
            cpis_core::metrics::init("registry-service");
            let listeners = registry_service::Listeners {
                public: bind(listen).await?,
                internal: bind(internal_listen).await?,
                admin: Some(bind(admin_listen).await?),
            };
            let served =
                registry_service::serve(config, listeners, cpis_core::shutdown::signal()).await;
            // The last OTLP push, bounded, whether or not serving ended well.
            cpis_core::metrics::shutdown().await;
            served?;
        }
        Command::ImportNhsStatus { file, config } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let report = registry_service::import_nhs_status(&config, &text).await?;
            println!(
                "{} changes read, {} applied, {} council notifications queued, {} lines rejected",
                report.received_count,
                report.applied_count,
                report.notifications_queued,
                report.rejections.len()
            );
            for rejection in &report.rejections {
                println!(
                    "line {}: {}: {}",
                    rejection.position, rejection.field, rejection.message
                );
            }
            if !report.rejections.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Migrate { config } => {
            let applied = registry_service::migrate(&config).await?;
            tracing::info!(applied = applied.len(), "migrations applied");
            for name in applied {
                println!("applied {name}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
