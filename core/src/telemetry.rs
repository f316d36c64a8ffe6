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
}
