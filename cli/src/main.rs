//! `cpis`: the command-line tool for councils, vendors and operators — upload an extract, watch
//! notifications, look a child up as a clinician, manage contact details, mint dev tokens — and
//! the all-in-one local stack (`cpis dev`). Errors print on one line (gRPC code, reason, field,
//! message); exit codes: 0 done, 1 error, 2 usage, 3 upload finished with rejected rows.
#![forbid(unsafe_code)]

mod client;
mod contacts;
mod demo;
mod dev;
mod dev_pki;
// The extract parser lives in the library target, so the fuzz targets can call it.
use cpis::extract;
mod lookup;
mod notifications;
mod render;
mod tokens;
mod upload;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cpis_core::telemetry::{LogFormat, init_cli_logging};

/// CP-IS command-line tool.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Log line format (logs go to standard error; filter with RUST_LOG).
    #[arg(long, env = "CPIS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    /// Print results as JSON (one object per line) for scripts.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run both services in one process on loopback with demo data, for local development.
    Dev(dev::DevArgs),
    /// Upload a council's extract (CSV or NDJSON) as one batch, with a rejection report.
    Upload(upload::UploadArgs),
    /// Watch (live, acknowledging) or list the council's notifications.
    Notifications(notifications::NotificationsArgs),
    /// Look a child up as a clinician or NHS system would.
    Lookup(lookup::LookupArgs),
    /// Show or set the council's contact details.
    Contacts(contacts::ContactsArgs),
    /// Print a development token signed by the dev stack's key.
    Token(tokens::TokenArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The dev stack logs its services' work; the client commands only say what went wrong.
    let level = if matches!(cli.command, Command::Dev(_)) {
        "info"
    } else {
        "warn"
    };
    init_cli_logging(cli.log_format, level);
    let json = cli.json;
    let result: Result<u8, String> = match cli.command {
        Command::Dev(args) => dev::run(args).await.map_err(|e| format!("{e:#}")),
        Command::Token(args) => tokens::run(args).map_err(|e| format!("{e:#}")),
        Command::Upload(args) => upload::run(args, json).await.map_err(|e| e.to_string()),
        Command::Notifications(args) => notifications::run(args, json)
            .await
            .map_err(|e| e.to_string()),
        Command::Lookup(args) => lookup::run(args, json).await.map_err(|e| e.to_string()),
        Command::Contacts(args) => contacts::run(args, json).await.map_err(|e| e.to_string()),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}
