//! Lookup-service configuration, from flags and environment variables (`CPIS_*`), parsed with
//! clap so it is testable without touching the process environment.

use cpis_core::server::ServerOptions;

/// Everything `serve` needs to run the lookup service.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Config {
    /// Transport and drain settings.
    #[command(flatten)]
    pub server: ServerOptions,
}
