//! `cpis dev`: the all-in-one local stack. Both services in one process on loopback, the
//! registry on SQLite under a data directory, a dev signing key kept beside it, the demo dataset
//! written on first use, and a printed guide with ready tokens and copy-paste commands. The
//! registry's internal port runs mutual TLS with dev certificates kept beside the data
//! (`dev_pki`), as production does; `--tls` serves the public ports with TLS too.
//! Ctrl-C (or SIGTERM) drains both; a second start reuses the data, the key and the
//! certificates.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use cpis_core::auth::DevSigner;
use serde_json::json;
use tokio::net::TcpListener;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::demo;
use crate::dev_pki::{self, DevPki};
use crate::tokens::{self, ClinicianArgs, SystemArgs};

/// `cpis dev` arguments.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Log line format (logs go to standard error; filter with RUST_LOG).
    #[arg(long, env = "CPIS_LOG_FORMAT", value_enum, default_value_t = cpis_core::telemetry::LogFormat::Text)]
    pub log_format: cpis_core::telemetry::LogFormat,
    /// Registry (council-facing) address. Loopback only: the dev stack is not for networks.
    /// Port 0 picks a free port (printed).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub registry_listen: SocketAddr,
    /// Registry internal address (disclosure, operator; mutual TLS). Loopback only.
    #[arg(long, default_value = "127.0.0.1:50053")]
    pub internal_listen: SocketAddr,
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
    /// Serve the public ports (registry, lookup) with TLS too, with the dev server certificate.
    #[arg(long)]
    pub tls: bool,
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
    for addr in [
        args.registry_listen,
        args.internal_listen,
        args.lookup_listen,
    ] {
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "the dev stack binds loopback addresses only, not {addr}"
        );
    }
    let registry = TcpListener::bind(args.registry_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.registry_listen))?;
    let internal = TcpListener::bind(args.internal_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.internal_listen))?;
    let lookup = TcpListener::bind(args.lookup_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.lookup_listen))?;
    let registry_addr = registry.local_addr()?;
    let internal_addr = internal.local_addr()?;
    let lookup_addr = lookup.local_addr()?;

    let data_dir = &args.data_dir;
    let pem = tokens::dev_signing_key(data_dir)?;
    let council_signer =
        DevSigner::from_pkcs8_pem(&pem, tokens::ISSUER, tokens::REGISTRY_AUDIENCE)?;
    let nhs_signer = DevSigner::from_pkcs8_pem(&pem, tokens::ISSUER, tokens::LOOKUP_AUDIENCE)?;
    let pki = dev_pki::ensure(data_dir)?;
    let public_tls = cpis_core::tls::TlsOptions {
        tls_cert: Some(pki.server.cert.clone()),
        tls_key: Some(pki.server.key.clone()),
        ..Default::default()
    };

    let mut registry_config = registry_service::Config::with(
        registry_service::DatabaseUrl::Sqlite(data_dir.join("registry.sqlite3")),
        council_signer.verifier()?,
    );
    registry_config.token_max_lifetime = tokens::DEV_MAX_LIFETIME;
    registry_config.internal_tls_cert = Some(pki.server.cert.clone());
    registry_config.internal_tls_key = Some(pki.server.key.clone());
    registry_config.internal_client_ca = Some(pki.ca.clone());
    registry_config.disclosure_identities = vec![dev_pki::LOOKUP_IDENTITY.to_owned()];
    registry_config.operator_identities = vec![dev_pki::OPERATOR_IDENTITY.to_owned()];
    let mut lookup_config =
        lookup_service::Config::with(format!("https://{internal_addr}"), nhs_signer.verifier()?);
    lookup_config.token_max_lifetime = tokens::DEV_MAX_LIFETIME;
    lookup_config.registry_ca = Some(pki.ca.clone());
    lookup_config.registry_client_cert = Some(pki.lookup.cert.clone());
    lookup_config.registry_client_key = Some(pki.lookup.key.clone());
    if args.tls {
        registry_config.server.tls = public_tls.clone();
        lookup_config.server.tls = public_tls;
    }
    let scheme = if args.tls { "https" } else { "http" };
    let ca = args.tls.then_some(pki.ca.as_path());
    let registry_url = format!("{scheme}://{registry_addr}");
    let lookup_url = format!("{scheme}://{lookup_addr}");

    let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
    let stopped = |stop: &tokio::sync::broadcast::Sender<()>| {
        let mut rx = stop.subscribe();
        async move {
            let _ = rx.recv().await;
        }
    };
    let registry_task = tokio::spawn(registry_service::serve(
        registry_config,
        registry_service::Listeners {
            public: registry,
            internal,
            admin: None,
        },
        stopped(&stop),
    ));
    let lookup_task = tokio::spawn(lookup_service::serve(lookup_config, lookup, stopped(&stop)));

    let ready = async {
        wait_serving(&registry_url, ca, None).await?;
        // The internal link is up as the dev operator sees it: mutual TLS with the dev CA.
        let operator = crate::client::ClientCert {
            cert: &pki.operator.cert,
            key: &pki.operator.key,
        };
        wait_serving(
            &format!("https://{internal_addr}"),
            Some(&pki.ca),
            Some(operator),
        )
        .await?;
        wait_serving(&lookup_url, ca, None).await?;
        let seeded = if args.no_demo {
            0
        } else {
            demo::seed(&registry_url, ca, &council_signer)
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
    print_guide(
        data_dir,
        &Addresses {
            registry: registry_addr,
            internal: internal_addr,
            lookup: lookup_addr,
            tls: args.tls,
        },
        &pki,
        Seeded {
            councils: seeded,
            no_demo: args.no_demo,
        },
        &dev_tokens,
    );
    // The ready file last, once the guide is out: whoever waits for it (a test, a script) may
    // read the guide at once.
    std::io::Write::flush(&mut std::io::stdout()).context("printing the guide")?;
    if let Some(path) = &args.ready_file {
        write_ready_file(path, &registry_url, &lookup_url, ca, &dev_tokens)?;
    }

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

/// Waits (at most 30 s) until the server at `url` (trusting `ca` for https, presenting `client`)
/// reports SERVING.
async fn wait_serving(
    url: &str,
    ca: Option<&Path>,
    client: Option<crate::client::ClientCert<'_>>,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = async {
            let channel = crate::client::connect_with(url, ca, client).await.ok()?;
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
            "{url} did not become ready within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn write_ready_file(
    path: &Path,
    registry_url: &str,
    lookup_url: &str,
    ca: Option<&Path>,
    tokens: &DevTokens,
) -> anyhow::Result<()> {
    let body = json!({
        "registry_url": registry_url,
        "lookup_url": lookup_url,
        "ca_cert": ca.map(|ca| ca.display().to_string()),
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

/// Where the dev stack listens.
struct Addresses {
    registry: SocketAddr,
    internal: SocketAddr,
    lookup: SocketAddr,
    /// Whether the public ports serve TLS (`--tls`).
    tls: bool,
}

/// What this start did about demo data.
struct Seeded {
    /// Councils the demo data was written for (0 when the data directory had it already).
    councils: usize,
    /// `--no-demo`: none was written, and none may be there.
    no_demo: bool,
}

/// `relative` (a path from the repository root, such as `examples/data/extract.csv`) as it can
/// be reached from here: itself from the repository root, else the path in the checkout this
/// binary was built from, so a guide pasted in another directory still works.
fn repo_path(relative: &str) -> String {
    if Path::new(relative).exists() {
        return relative.to_owned();
    }
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    match std::fs::canonicalize(&built_from) {
        Ok(path) => path.display().to_string(),
        Err(_) => relative.to_owned(),
    }
}

fn print_guide(
    data_dir: &Path,
    addresses: &Addresses,
    pki: &DevPki,
    seeded: Seeded,
    tokens: &DevTokens,
) {
    let Addresses {
        registry,
        internal,
        lookup,
        tls,
    } = addresses;
    let cpis = cpis_command();
    let children = demo::guide();
    let first = children
        .first()
        .map(|c| c.nhs_number.clone())
        .unwrap_or_default();
    let ca = pki.ca.display();
    let scheme = if *tls { "https" } else { "http" };
    // grpcurl's transport flags for the public ports.
    let grpcurl_tls = if *tls {
        format!("-cacert {ca}")
    } else {
        "-plaintext".to_owned()
    };
    let mut out = String::new();
    out.push_str(&format!(
        "\nCP-IS dev stack (data in {}; {})\n  registry (councils):  {scheme}://{registry}\n  lookup (NHS):         {scheme}://{lookup}\n  registry internal:    https://{internal}  (disclosure, operator: mutual TLS)\n  dev CA:               {ca}\n",
        data_dir.display(),
        if seeded.no_demo {
            "--no-demo: no demo data written".to_owned()
        } else if seeded.councils > 0 {
            format!("demo data written for {} councils", seeded.councils)
        } else {
            "existing data kept".to_owned()
        }
    ));
    // With --no-demo the demo councils are there only if an earlier start wrote them: listing
    // them would promise what may not exist.
    if !seeded.no_demo {
        out.push_str(
            "\nDemo councils: DEV01 Devtown, DEV02 Sampleshire, DEV03 Exampleton. Demo NHS numbers:\n",
        );
        for child in &children {
            out.push_str(&format!("  {}  {}\n", child.nhs_number, child.shows));
        }
    }
    let extract = repo_path("examples/data/extract.csv");
    let python = repo_path(".tools/venv/bin/python");
    let grpcurl = repo_path(".tools/venv/bin/grpcurl");
    let client = repo_path("examples/python/council_client.py");
    let ca_export = if *tls {
        format!("export CPIS_CA_CERT={ca}\n")
    } else {
        String::new()
    };
    out.push_str(&format!(
        "\nIn another shell, paste these (tokens valid 7 days; `{cpis} token --help` makes others):\n\
         export CPIS_REGISTRY_URL={scheme}://{registry}\n\
         export CPIS_LOOKUP_URL={scheme}://{lookup}\n\
         {ca_export}\
         export CPIS_COUNCIL_TOKEN={council}   # DEV01's case system: council commands read it\n\
         export CPIS_NHS_TOKEN={ed}   # an ED clinician: `cpis lookup` reads it\n\
         export GP_TOKEN={gp}\n\
         export NHS111_TOKEN={nhs111}\n\
         \nThen, with cpis:\n\
         {cpis} contacts get\n\
         {cpis} lookup {first}   # as the ED clinician\n\
         {cpis} lookup {first} --scheduled --token \"$GP_TOKEN\"\n\
         {cpis} lookup {first} --token \"$NHS111_TOKEN\"\n\
         {cpis} notifications watch   # live, acknowledging; Ctrl-C to stop\n\
         {cpis} upload {extract}   # 3 bad rows on purpose: see the report\n\
         \nWith grpcurl (`bash scripts/tools.sh` installs it in .tools/venv/bin):\n\
         {grpcurl} {grpcurl_tls} {registry} list\n\
         {grpcurl} {grpcurl_tls} -H \"authorization: Bearer $CPIS_COUNCIL_TOKEN\" {registry} cpis.registry.v1.CouncilService/GetContactDetails\n\
         {grpcurl} {grpcurl_tls} -H \"authorization: Bearer $CPIS_NHS_TOKEN\" -d '{{\"nhs_number\": \"{first}\", \"access_mode\": \"ACCESS_MODE_UNSCHEDULED\"}}' {lookup} cpis.lookup.v1.LookupService/LookupChild\n\
         {grpcurl} -cacert {ca} -cert {operator_cert} -key {operator_key} {internal} list   # the internal port, as the dev operator\n",
        council = tokens.council,
        ed = tokens.ed,
        gp = tokens.gp,
        nhs111 = tokens.nhs111,
        operator_cert = pki.operator.cert.display(),
        operator_key = pki.operator.key.display(),
    ));
    if *tls {
        out.push_str(&format!(
            "\nWith Python (grpcio) over TLS:\n\
             {python} -c 'import grpc; ch = grpc.secure_channel(\"{registry}\", grpc.ssl_channel_credentials(open(\"{ca}\", \"rb\").read())); grpc.channel_ready_future(ch).result(timeout=5); print(\"connected\")'\n"
        ));
    } else {
        out.push_str(&format!(
            "\nWith the Python council client (generated from proto/; needs the tools venv):\n\
             {python} {client} upload {extract}\n\
             {python} {client} watch   # live; Ctrl-C to stop\n",
        ));
    }
    out.push_str(
        "\nCtrl-C stops both services; the next start reuses the data and certificates.\n",
    );
    println!("{out}");
}
