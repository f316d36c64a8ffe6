//! `lookup-service`: parses flags and environment, sets up logging, binds, and runs
//! `lookup_service::serve` until SIGTERM/SIGINT.
#![forbid(unsafe_code)]

use std::net::SocketAddr;

use clap::Subcommand;
use cpis_core::telemetry::{ServiceCli, bind};

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the NHS-facing lookup gRPC service.
    Serve {
        /// Address to listen on. Use 0.0.0.0:50052 in a container.
        #[arg(long, env = "CPIS_LOOKUP_LISTEN", default_value = "127.0.0.1:50052")]
        listen: SocketAddr,

        #[command(flatten)]
        config: lookup_service::Config,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = ServiceCli::<Command>::parse_and_init(
        "lookup-service",
        "The CP-IS lookup service: role-checked queries from NHS care settings.",
    );
    match cli.command {
        Command::Serve { listen, config } => {
            let listener = bind(listen).await?;
            lookup_service::serve(config, listener, cpis_core::shutdown::signal()).await?;
        }
    }
    Ok(())
}
