//! Lookup-service configuration, from flags and environment variables (`CPIS_*`), parsed with
//! clap so it is testable without touching the process environment (`Config::try_parse_from`).

use std::{path::PathBuf, time::Duration};

use cpis_core::{auth::TokenVerifier, server::ServerOptions};
use secrecy::SecretString;

use crate::policy::RolePolicy;

/// Everything `serve` needs to run the lookup service.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    /// Transport and drain settings.
    #[command(flatten)]
    pub server: ServerOptions,

    /// The registry's internal address (its DisclosureService).
    #[arg(
        long,
        env = "CPIS_REGISTRY_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub registry_url: String,

    /// This service's credential for the registry's disclosure service.
    #[arg(long, env = "CPIS_DISCLOSURE_TOKEN", hide_env_values = true)]
    pub registry_token: Option<SecretString>,

    /// Longest wait for the registry per lookup (the caller's deadline shortens it).
    #[arg(long, env = "CPIS_REGISTRY_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub registry_timeout: Duration,

    /// JWKS file with the public keys (ES256/RS256) that sign NHS user and system tokens.
    #[arg(long, env = "CPIS_LOOKUP_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,

    /// Expected `iss` of NHS tokens.
    #[arg(long, env = "CPIS_LOOKUP_JWT_ISSUER", default_value = "cpis")]
    pub jwt_issuer: String,

    /// Expected `aud` of NHS tokens.
    #[arg(long, env = "CPIS_LOOKUP_JWT_AUDIENCE", default_value = "cpis-lookup")]
    pub jwt_audience: String,

    /// Who may do what.
    #[command(flatten)]
    pub policy: RolePolicy,

    /// A verifier given directly (tests, the dev stack) instead of --jwks-file.
    #[arg(skip)]
    pub verifier: Option<TokenVerifier>,
}

impl Config {
    /// Parses flags (the first item is the program name); environment variables fill the rest.
    pub fn try_parse_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        cpis_core::config::parse_from(args)
    }

    /// Defaults, with the registry and verifier a test or the dev stack supplies.
    pub fn with(
        registry_url: String,
        registry_token: SecretString,
        verifier: TokenVerifier,
    ) -> Self {
        Self {
            server: ServerOptions::default(),
            registry_url,
            registry_token: Some(registry_token),
            registry_timeout: Duration::from_secs(2),
            jwks_file: None,
            jwt_issuer: "cpis".into(),
            jwt_audience: "cpis-lookup".into(),
            policy: RolePolicy::default(),
            verifier: Some(verifier),
        }
    }

    /// The token verifier in effect: injected, or from the JWKS file.
    pub fn token_verifier(&self) -> Result<TokenVerifier, crate::LookupError> {
        cpis_core::config::token_verifier(
            self.verifier.as_ref(),
            self.jwks_file.as_deref(),
            "--jwks-file (CPIS_LOOKUP_JWKS_FILE)",
            &self.jwt_issuer,
            &self.jwt_audience,
        )
        .map_err(crate::LookupError::Config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_codes_are_configurable() {
        let config = Config::try_parse_from([
            "lookup",
            "--unscheduled-activity-codes",
            "B0107,B9999",
            "--registry-timeout",
            "750ms",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config.policy.unscheduled_activity_codes,
            vec!["B0107", "B9999"]
        );
        assert_eq!(
            config.policy.scheduled_activity_codes,
            vec!["B0170", "B0107"]
        );
        assert_eq!(config.registry_timeout, Duration::from_millis(750));
    }
}
