//! `cpis`: the command-line tool for councils, vendors and operators. For now it runs the
//! all-in-one local stack (`cpis dev`): both services in one process on loopback.
#![forbid(unsafe_code)]

mod tokens;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use cpis_core::auth::DevSigner;
use secrecy::SecretString;

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
    let pem = dev_signing_key(&data_dir)?;
    let council_signer = DevSigner::from_pkcs8_pem(&pem, "cpis", "cpis-registry")?;
    let nhs_signer = DevSigner::from_pkcs8_pem(&pem, "cpis", "cpis-lookup")?;
    // The lookup service's credential for the registry: fresh each run, never on disk.
    let disclosure_token = SecretString::from(random_hex());

    let mut registry_config = registry_service::Config::with(
        registry_service::db::DatabaseUrl::Sqlite(data_dir.join("registry.sqlite3")),
        council_signer.verifier()?,
    );
    registry_config.disclosure_token = Some(disclosure_token.clone());
    let lookup_config = lookup_service::Config::with(
        format!("http://{registry_listen}"),
        disclosure_token,
        nhs_signer.verifier()?,
    );
    let week = Duration::from_secs(7 * 24 * 3600);
    let council_token = council_signer.mint(&tokens::council("DEV01"), week)?;
    let ed_token = nhs_signer.mint(
        &tokens::clinician("B0107", "RDEV1", "EMERGENCY_DEPARTMENT"),
        week,
    )?;
    let gp_token = nhs_signer.mint(&tokens::clinician("B0170", "ADEV1", "GP_IN_HOURS"), week)?;
    let nhs111_token = nhs_signer.mint(&tokens::nhs111_system(), week)?;

    let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
    let stopped = |stop: &tokio::sync::broadcast::Sender<()>| {
        let mut rx = stop.subscribe();
        async move {
            let _ = rx.recv().await;
        }
    };
    let registry_task = registry_service::serve(registry_config, registry, stopped(&stop));
    let lookup_task = lookup_service::serve(lookup_config, lookup, stopped(&stop));

    let r = registry_listen;
    let l = lookup_listen;
    println!(
        "\nCP-IS dev stack (data in {data})\n  registry (councils):  {r}\n  lookup (NHS):         {l}\n\n\
         Tokens (7 days):\n\
         \x20 export COUNCIL_TOKEN={council_token}   # council DEV01, read write\n\
         \x20 export ED_TOKEN={ed_token}   # ED clinician, B0107\n\
         \x20 export GP_TOKEN={gp_token}   # GP in hours, B0170\n\
         \x20 export NHS111_TOKEN={nhs111_token}   # NHS 111 system\n\n\
         Try:\n  grpcurl -plaintext {r} list\n\
         \x20 grpcurl -plaintext -H \"authorization: Bearer $COUNCIL_TOKEN\" -d '{{\"local_authority\": {{\"name\": \"Dev Council\", \"emergency_duty_phone\": \"020 7946 0000\"}}}}' {r} cpis.registry.v1.CouncilService/SetContactDetails\n\
         \x20 grpcurl -plaintext -H \"authorization: Bearer $COUNCIL_TOKEN\" -d '{{\"record\": {{\"nhs_number\": \"9990000018\", \"given_name\": \"Alex\", \"family_name\": \"Example\", \"date_of_birth\": {{\"year\": 2019, \"month\": 4, \"day\": 2}}, \"child_protection_plan\": {{\"period\": {{\"start_date\": {{\"year\": 2025, \"month\": 1, \"day\": 10}}}}}}}}}}' {r} cpis.registry.v1.CouncilService/PutChildRecord\n\
         \x20 grpcurl -plaintext -H \"authorization: Bearer $ED_TOKEN\" -d '{{\"nhs_number\": \"9990000018\", \"access_mode\": \"ACCESS_MODE_UNSCHEDULED\"}}' {l} cpis.lookup.v1.LookupService/LookupChild\n\n\
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

/// 128 random bits as hex.
fn random_hex() -> String {
    use rand_core::RngCore as _;
    let mut rng = rand_core::OsRng;
    format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64())
}

/// The dev stack's signing key (PKCS#8 PEM), generated on first run and kept in the data
/// directory so that tokens printed earlier stay valid across restarts.
fn dev_signing_key(data_dir: &std::path::Path) -> anyhow::Result<Vec<u8>> {
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
    Ok(pem)
}
