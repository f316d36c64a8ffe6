//! `lookup-service`: parses flags and environment, sets up logging, binds, and runs
//! `lookup_service::serve` until SIGTERM/SIGINT.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Subcommand;
use cpis_core::telemetry::{ServiceCli, bind};

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the NHS-facing lookup gRPC service.
    Serve {
        /// Address to listen on. Use 0.0.0.0:50052 in a container.
        #[arg(long, env = "CPIS_LOOKUP_LISTEN", default_value = "127.0.0.1:50052")]
        listen: SocketAddr,

        /// Admin HTTP address: /metrics (Prometheus text), /livez, /readyz. Plaintext: use
        /// 0.0.0.0:9092 in a container, reachable from the pod network only, never public.
        #[arg(long, env = "CPIS_ADMIN_LISTEN", default_value = "127.0.0.1:9092")]
        admin_listen: SocketAddr,

        #[command(flatten)]
        config: lookup_service::Config,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = ServiceCli::<Command>::parse_and_init(
        "lookup-service",
        "The CP-IS lookup service: role-checked queries from NHS care settings.",
    );
    let outcome = run(cli.command).await;
    // `cli.telemetry` is dropped after this: the last spans are flushed whatever the outcome.
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line, as `cpis` prints its errors.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve {
            listen,
            admin_listen,
            config,
        } => {
            cpis_core::metrics::init("lookup-service");
            let listeners = lookup_service::Listeners {
                grpc: bind(listen).await?,
                admin: Some(bind(admin_listen).await?),
            };
            let served =
                lookup_service::serve(config, listeners, cpis_core::shutdown::signal()).await;
            // The last OTLP push, bounded, whether or not serving ended well.
            cpis_core::metrics::shutdown().await;
            served?;
        }
    }
    Ok(())
}
