//! `cpis`: the command-line tool for councils, vendors and operators. For now it runs the
//! all-in-one local stack (`cpis dev`): both services in one process on loopback.
#![forbid(unsafe_code)]

use std::{net::SocketAddr, path::PathBuf};

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
        /// Where the dev stack keeps its SQLite database and signing key; reused across runs.
        #[arg(long, env = "CPIS_DATA_DIR", default_value = ".data/dev")]
        data_dir: PathBuf,
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
            data_dir,
        } => dev(registry_listen, lookup_listen, data_dir).await,
    }
}

/// Both services in one process until Ctrl-C or SIGTERM; both drain on the same signal.
async fn dev(
    registry_listen: SocketAddr,
    lookup_listen: SocketAddr,
    data_dir: PathBuf,
) -> anyhow::Result<()> {
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

    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let signer = dev_signer(&data_dir)?;
    let registry_config = registry_service::Config::with(
        registry_service::db::DatabaseUrl::Sqlite(data_dir.join("registry.sqlite3")),
        signer.verifier()?,
    );
    let council_token = signer.mint(
        &serde_json::json!({ "sub": "dev-council", "ods_code": "DEV01", "scope": "read write" }),
        std::time::Duration::from_secs(7 * 24 * 3600),
    )?;

    let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
    let stopped = |stop: &tokio::sync::broadcast::Sender<()>| {
        let mut rx = stop.subscribe();
        async move {
            let _ = rx.recv().await;
        }
    };
    let registry_task = registry_service::serve(registry_config, registry, stopped(&stop));
    let lookup_task =
        lookup_service::serve(lookup_service::Config::default(), lookup, stopped(&stop));

    println!(
        "\nCP-IS dev stack (data in {data})\n  registry (councils):  {registry_listen}\n  lookup (NHS):         {lookup_listen}\n\n\
         A council token for DEV01 (read write, 7 days):\n  export CPIS_TOKEN={council_token}\n\n\
         Try:\n  grpcurl -plaintext {registry_listen} list\n  grpcurl -plaintext {lookup_listen} list\n\
         \x20 grpcurl -plaintext -H \"authorization: Bearer $CPIS_TOKEN\" -d \'{{\"local_authority\": {{\"name\": \"Dev Council\", \"emergency_duty_phone\": \"020 7946 0000\"}}}}\' {registry_listen} cpis.registry.v1.CouncilService/SetContactDetails\n\n\
         Ctrl-C stops both.\n",
        data = data_dir.display()
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

/// The dev stack's signing key, generated on first run and kept in the data directory so that
/// tokens printed earlier stay valid across restarts.
fn dev_signer(data_dir: &std::path::Path) -> anyhow::Result<cpis_core::auth::DevSigner> {
    let path = data_dir.join("dev-signing-key.pem");
    let pem = match std::fs::read(&path) {
        Ok(pem) => pem,
        Err(_) => {
            let pem = cpis_core::auth::DevSigner::generate_pem()?;
            std::fs::write(&path, &pem)
                .with_context(|| format!("cannot write {}", path.display()))?;
            pem
        }
    };
    Ok(cpis_core::auth::DevSigner::from_pkcs8_pem(
        &pem,
        "cpis",
        "cpis-registry",
    )?)
}
