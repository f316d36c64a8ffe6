//! `cpis`: the command-line tool for councils, vendors and operators. For now it runs the
//! all-in-one local stack (`cpis dev`): both services in one process on loopback.
#![forbid(unsafe_code)]

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use cpis_core::telemetry::{LogFormat, init_logging};
use tokio::net::TcpListener;

/// CP-IS command-line tool.
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
    /// Run both services in one process on loopback, for local development.
    Dev {
        /// Registry (council-facing) address. Loopback only: the dev stack is not for networks.
        #[arg(long, default_value = "127.0.0.1:50051")]
        registry_listen: SocketAddr,
        /// Lookup (NHS-facing) address. Loopback only.
        #[arg(long, default_value = "127.0.0.1:50052")]
        lookup_listen: SocketAddr,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Dev {
            registry_listen,
            lookup_listen,
        } => dev(registry_listen, lookup_listen).await,
    }
}

/// Both services in one process until Ctrl-C or SIGTERM; both drain on the same signal.
async fn dev(registry_listen: SocketAddr, lookup_listen: SocketAddr) -> anyhow::Result<()> {
    for addr in [registry_listen, lookup_listen] {
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "the dev stack binds loopback addresses only, not {addr}"
        );
    }
    let registry = TcpListener::bind(registry_listen)
        .await
        .with_context(|| format!("cannot listen on {registry_listen}"))?;
    let lookup = TcpListener::bind(lookup_listen)
        .await
        .with_context(|| format!("cannot listen on {lookup_listen}"))?;

    let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
    let stopped = |stop: &tokio::sync::broadcast::Sender<()>| {
        let mut rx = stop.subscribe();
        async move {
            let _ = rx.recv().await;
        }
    };
    let registry_task = registry_service::serve(
        registry_service::Config::default(),
        registry,
        stopped(&stop),
    );
    let lookup_task =
        lookup_service::serve(lookup_service::Config::default(), lookup, stopped(&stop));

    println!(
        "\nCP-IS dev stack\n  registry (councils):  {registry_listen}\n  lookup (NHS):         {lookup_listen}\n\n\
         Try:\n  grpcurl -plaintext {registry_listen} list\n  grpcurl -plaintext {lookup_listen} list\n\n\
         Ctrl-C stops both.\n"
    );
    let signal = async {
        cpis_core::shutdown::signal().await;
        let _ = stop.send(());
    };
    let (registry_result, lookup_result, ()) = tokio::join!(registry_task, lookup_task, signal);
    registry_result.context("registry")?;
    lookup_result.context("lookup")?;
    Ok(())
}
