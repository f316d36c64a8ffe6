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
mod operator;
mod records;
mod render;
mod tokens;
mod upload;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cpis_core::telemetry::{LogFormat, init_cli_logging};

/// What `--help` says after the commands: the exit codes and where the credentials come from.
const AFTER_HELP: &str = "\
Exit codes: 0 done, 1 error, 2 usage, 3 an upload finished with rejected or malformed rows.

Council commands read the registry's address from --registry-url or CPIS_REGISTRY_URL and the
council's token from --token or CPIS_COUNCIL_TOKEN; `lookup` reads --lookup-url or
CPIS_LOOKUP_URL and --token or CPIS_NHS_TOKEN. `cpis dev` prints ready exports for both.
Errors print one line (`error: CODE REASON field=F: message`) and, where one helps, a `hint:`
line; with --json they are a JSON object on standard output instead.";

/// CP-IS command-line tool.
#[derive(Debug, Parser)]
#[command(version, about, after_help = AFTER_HELP)]
struct Cli {
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
    /// Show, list or delete the council's records.
    Records(records::RecordsArgs),
    /// Show a completed batch's outcome and every rejection.
    Batch(records::BatchArgs),
    /// Show the access history of an NHS number, as the council may see it.
    Accesses(records::AccessesArgs),
    /// Operator feeds sent to the registry's internal port (mutual TLS and an operator token).
    Operator(operator::OperatorArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), for `man -l -` or a man directory.
    Man,
}

/// The service a command talks to and whether a lookup was scheduled, for the error's hint.
fn service_of(command: &Command) -> Option<(client::Service, bool)> {
    match command {
        Command::Lookup(args) => Some((client::Service::Lookup, args.scheduled)),
        Command::Upload(_)
        | Command::Notifications(_)
        | Command::Contacts(_)
        | Command::Records(_)
        | Command::Batch(_)
        | Command::Accesses(_)
        | Command::Operator(_) => Some((client::Service::Registry, false)),
        Command::Dev(_) | Command::Token(_) | Command::Completions { .. } | Command::Man => None,
    }
}

/// Whether the command was asked for JSON (`--json` exists only where it does something).
fn json_of(command: &Command) -> bool {
    match command {
        Command::Upload(args) => args.output.json,
        Command::Notifications(args) => args.output.json,
        Command::Lookup(args) => args.output.json,
        Command::Contacts(args) => args.output.json,
        Command::Records(args) => args.output.json,
        Command::Batch(args) => args.output.json,
        Command::Accesses(args) => args.output.json,
        Command::Operator(args) => args.output.json,
        Command::Dev(_) | Command::Token(_) | Command::Completions { .. } | Command::Man => false,
    }
}

/// An error as one line, and a hint when one helps.
struct Failure {
    line: String,
    hint: Option<String>,
    json: serde_json::Value,
}

impl Failure {
    fn from_cli(error: &client::CliError, service: Option<(client::Service, bool)>) -> Self {
        use client::CliError;
        match error {
            CliError::Rpc(status) => {
                let parts = client::Described::of(status);
                let hint = service
                    .and_then(|(service, scheduled)| client::rpc_hint(status, service, scheduled));
                let json = serde_json::json!({ "error": {
                    "code": parts.code,
                    "reason": parts.reason,
                    "fields": parts.fields,
                    "message": parts.message,
                    "hint": hint,
                }});
                Self {
                    line: client::describe(status),
                    hint,
                    json,
                }
            }
            CliError::Connect { url, message } => {
                let hint = service.and_then(|(service, _)| client::connect_hint(message, service));
                Self::plain(
                    format!("cannot reach {url}: {message}"),
                    hint,
                    "UNAVAILABLE",
                )
            }
            CliError::Other(message) => Self::from_text(message),
        }
    }

    /// A message whose own `\nhint: …` line (if any) is its hint.
    fn from_text(message: &str) -> Self {
        match message.split_once("\nhint: ") {
            Some((line, hint)) => Self::plain(line.to_owned(), Some(hint.to_owned()), "ERROR"),
            None => Self::plain(message.to_owned(), None, "ERROR"),
        }
    }

    fn plain(line: String, hint: Option<String>, code: &str) -> Self {
        let json = serde_json::json!({ "error": { "code": code, "message": line, "hint": hint } });
        Self { line, hint, json }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The dev stack logs its services' work; the client commands only say what went wrong.
    // The dev stack logs its services' work (in the format it is asked for); the client
    // commands only say what went wrong, as text.
    let (format, level) = match &cli.command {
        Command::Dev(args) => (args.log_format, "info"),
        _ => (LogFormat::Text, "warn"),
    };
    init_cli_logging(format, level);
    let json = json_of(&cli.command);
    let service = service_of(&cli.command);
    let result: Result<u8, Failure> = match cli.command {
        Command::Dev(args) => dev::run(args)
            .await
            .map_err(|e| Failure::from_text(&format!("{e:#}"))),
        Command::Token(args) => {
            tokens::run(args).map_err(|e| Failure::from_text(&format!("{e:#}")))
        }
        Command::Completions { shell } => {
            // Into a buffer first: `generate` panics when its writer fails (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "cpis",
                &mut script,
            );
            std::io::Write::write_all(&mut std::io::stdout(), &script)
                .map(|()| 0)
                .map_err(|e| Failure::from_text(&e.to_string()))
        }
        Command::Man => {
            let page = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
            page.render(&mut std::io::stdout())
                .map(|()| 0)
                .map_err(|e| Failure::from_text(&e.to_string()))
        }
        command => run_client(command, json)
            .await
            .map_err(|e| Failure::from_cli(&e, service)),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            if json {
                println!("{}", failure.json);
            } else {
                eprintln!("error: {}", failure.line);
                if let Some(hint) = failure.hint {
                    eprintln!("hint: {hint}");
                }
            }
            ExitCode::from(1)
        }
    }
}

/// Runs a command that talks to a service.
async fn run_client(command: Command, json: bool) -> Result<u8, client::CliError> {
    match command {
        Command::Upload(args) => upload::run(args, json).await,
        Command::Notifications(args) => notifications::run(args, json).await,
        Command::Lookup(args) => lookup::run(args, json).await,
        Command::Contacts(args) => contacts::run(args, json).await,
        Command::Records(args) => records::run_records(args, json).await,
        Command::Batch(args) => records::run_batch(args, json).await,
        Command::Accesses(args) => records::run_accesses(args, json).await,
        Command::Operator(args) => operator::run(args, json).await,
        Command::Dev(_) | Command::Token(_) | Command::Completions { .. } | Command::Man => {
            Err(client::CliError::Other("not a client command".into()))
        }
    }
}
