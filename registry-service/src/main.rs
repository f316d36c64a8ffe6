//! `registry-service`: parses flags and environment, sets up logging, binds, and runs
//! `registry_service::serve` until SIGTERM/SIGINT.
#![forbid(unsafe_code)]

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use cpis_core::telemetry::{LogFormat, init_logging};

/// The CP-IS registry: the system of record for councils' child protection records.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Log line format.
    #[arg(long, env = "CPIS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the council, disclosure and operator gRPC services.
    Serve {
        /// Address to listen on. Use 0.0.0.0:50051 in a container.
        #[arg(long, env = "CPIS_REGISTRY_LISTEN", default_value = "127.0.0.1:50051")]
        listen: SocketAddr,

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
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Serve { listen, config } => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            registry_service::serve(config, listener, cpis_core::shutdown::signal()).await?;
        }
        Command::Migrate { config } => {
            let applied = registry_service::migrate(&config).await?;
            tracing::info!(applied = applied.len(), "migrations applied");
            for name in applied {
                println!("applied {name}");
            }
        }
    }
    Ok(())
}
