//! Lookup-service configuration, from flags and environment variables (`CPIS_*`), parsed with
//! clap so it is testable without touching the process environment (`Config::try_parse_from`).

use std::{path::PathBuf, time::Duration};

use cpis_core::{auth::TokenVerifier, server::ServerOptions};

use crate::policy::RolePolicy;

/// Everything `serve` needs to run the lookup service.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    /// Transport and drain settings.
    #[command(flatten)]
    pub server: ServerOptions,

    /// The registry's internal port (its DisclosureService): https://HOST:PORT, mutual TLS.
    #[arg(
        long,
        env = "CPIS_REGISTRY_URL",
        default_value = "https://localhost:50053"
    )]
    pub registry_url: String,

    /// PEM file of the CA that signed the registry's server certificate (https URLs).
    #[arg(long, env = "CPIS_REGISTRY_CA")]
    pub registry_ca: Option<PathBuf>,

    /// PEM file with this service's client certificate chain for the registry; its identity
    /// (SAN) must be among the registry's --disclosure-identities.
    #[arg(
        long,
        env = "CPIS_REGISTRY_CLIENT_CERT",
        requires = "registry_client_key"
    )]
    pub registry_client_cert: Option<PathBuf>,

    /// PEM file with the private key of --registry-client-cert.
    #[arg(
        long,
        env = "CPIS_REGISTRY_CLIENT_KEY",
        requires = "registry_client_cert"
    )]
    pub registry_client_key: Option<PathBuf>,

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

    /// Defaults, with the registry and verifier a test or the dev stack supplies (and the
    /// registry's TLS files set after, for an https URL).
    pub fn with(registry_url: String, verifier: TokenVerifier) -> Self {
        Self {
            server: ServerOptions::default(),
            registry_url,
            registry_ca: None,
            registry_client_cert: None,
            registry_client_key: None,
            registry_timeout: Duration::from_secs(2),
            jwks_file: None,
            jwt_issuer: "cpis".into(),
            jwt_audience: "cpis-lookup".into(),
            policy: RolePolicy::default(),
            verifier: Some(verifier),
        }
    }

    /// The channel to the registry's internal port, connecting lazily (the registry may start
    /// after us; each lookup fails fast, UNAVAILABLE, while it is unreachable): for an https URL,
    /// TLS verifying the registry against --registry-ca and presenting this service's client
    /// certificate, re-read when its files change (new connections take the new one).
    pub fn registry_channel(&self) -> Result<tonic::transport::Channel, crate::LookupError> {
        use tonic::transport::Endpoint;
        let config_error = |what: String| crate::LookupError::Config(what);
        let endpoint = |url: String| {
            Endpoint::from_shared(url)
                .map(|endpoint| {
                    endpoint
                        .connect_timeout(Duration::from_secs(1))
                        .tcp_nodelay(true)
                        .http2_keep_alive_interval(Duration::from_secs(30))
                        .keep_alive_while_idle(true)
                })
                .map_err(|e| config_error(format!("registry url: {e}")))
        };
        if !self.registry_url.starts_with("https://") {
            tracing::warn!(
                "plaintext --registry-url: without mutual TLS the registry refuses every disclosure"
            );
            return Ok(endpoint(self.registry_url.clone())?.connect_lazy());
        }
        let tls_error = |e: cpis_core::tls::TlsError| config_error(e.to_string());
        let ca = self
            .registry_ca
            .as_deref()
            .ok_or_else(|| config_error("an https --registry-url needs --registry-ca".into()))?;
        let client = match (&self.registry_client_cert, &self.registry_client_key) {
            (Some(cert), Some(key)) => Some(
                cpis_core::tls::ReloadingCert::start(
                    cert.clone(),
                    key.clone(),
                    self.server.tls.tls_reload_interval,
                )
                .map_err(tls_error)?,
            ),
            _ => {
                tracing::warn!(
                    "no --registry-client-cert: the registry will refuse every disclosure"
                );
                None
            }
        };
        let connector = cpis_core::tls::ClientConnector::new(ca, client).map_err(tls_error)?;
        // Our connector does the TLS, so tonic must not insist on its own for an https URI: it
        // dials the same host and port as http, while requests still name the https origin.
        let origin: tonic::codegen::http::Uri = self
            .registry_url
            .parse()
            .map_err(|e| config_error(format!("registry url: {e}")))?;
        let authority = origin
            .authority()
            .ok_or_else(|| config_error("the registry url names no host".into()))?;
        let dial = format!(
            "http://{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(443)
        );
        Ok(endpoint(dial)?
            .origin(origin)
            .connect_with_connector_lazy(connector))
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
