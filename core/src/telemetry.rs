//! Structured logging set-up shared by every binary. Filters come from `RUST_LOG`
//! (default `info`); the format is human-readable text or one JSON object per line.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global subscriber. Safe to call more than once (later calls do nothing), so
/// tests and the all-in-one dev command can share it.
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    init(
        format,
        "info",
        std::io::stdout().is_terminal(),
        std::io::stdout,
    );
}

/// The same for a command-line tool whose standard output is its result (a guide, a report,
/// JSON for scripts): logs go to standard error, at `default_level` unless `RUST_LOG` says.
pub fn init_cli_logging(format: LogFormat, default_level: &str) {
    use std::io::IsTerminal as _;
    init(
        format,
        default_level,
        std::io::stderr().is_terminal(),
        std::io::stderr,
    );
}

/// Colours only on a terminal: escape codes in a file or a log collector are noise.
fn init<W>(format: LogFormat, default_level: &str, ansi: bool, writer: W)
where
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_target(true)
                    .with_ansi(ansi)
                    .with_writer(writer),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(writer),
            )
            .try_init(),
    };
    // An already-installed subscriber is fine (tests, dev stack); nothing else can fail here.
    drop(result);
    // Panics then log as one event in the chosen format, not as plain-text lines.
    crate::panics::install_hook();
}

/// A service binary's command line: the logging flags every service takes, and its subcommands.
#[derive(Debug, clap::Parser)]
#[command(version)]
pub struct ServiceCli<C: clap::Subcommand> {
    /// Log line format.
    #[arg(long, env = "CPIS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: C,
}

impl<C: clap::Subcommand> ServiceCli<C> {
    /// Parses the process's arguments for binary `name` (described by `about`), exiting with
    /// clap's message and status on a usage error, and starts logging in the chosen format.
    pub fn parse_and_init(name: &'static str, about: &'static str) -> Self {
        use clap::{CommandFactory as _, FromArgMatches as _};
        let matches = Self::command().name(name).about(about).get_matches();
        let cli = Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        init_logging(cli.log_format);
        cli
    }
}

/// Binds `addr`, naming it in the error (for `main`).
pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}
