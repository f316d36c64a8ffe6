//! Lookup-service configuration, from flags and environment variables (`CPIS_*`), parsed with
//! clap so it is testable without touching the process environment (`Config::try_parse_from`).

use std::{path::PathBuf, time::Duration};

use cpis_core::{
    auth::{TokenRules, TokenVerifier},
    config::TokenSettings,
    keys::RefreshPolicy,
    server::ServerOptions,
};

use crate::auth::LookupLimits;
use crate::policy::RolePolicy;
use cpis_core::rate::{Rate, RateLimit};

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
    #[arg(long, env = "CPIS_REGISTRY_TIMEOUT", default_value = "2s", value_parser = cpis_core::config::duration_within("10ms", "5min"))]
    pub registry_timeout: Duration,

    /// Lookups allowed per user (a person, or a system with its responsible person), per
    /// replica: COUNT/s, /min or /h, with ",burst=N". Over it: RESOURCE_EXHAUSTED RATE_LIMITED
    /// with a retry delay. A clinician looks a child up every few minutes at the busiest; an
    /// EPR's automatic lookups for a trust's arrivals come a few a minute.
    #[arg(long, env = "CPIS_LOOKUP_RATE_PER_USER", default_value = DEFAULT_RATE_PER_USER)]
    pub lookup_rate_per_user: Rate,

    /// Lookups allowed per organisation (ODS code), per replica, as --lookup-rate-per-user.
    #[arg(long, env = "CPIS_LOOKUP_RATE_PER_ORG", default_value = DEFAULT_RATE_PER_ORG)]
    pub lookup_rate_per_org: Rate,

    /// Makes the bound on lookups in progress adaptive, down to this many: it then moves with
    /// the lookups' latency between this and --max-in-flight, shrinking when lookups queue (for
    /// the CPU, the registry or its commits) so that under a flood the admitted keep about twice
    /// the unloaded latency, at the price of serving fewer at once. Unset: the bound is fixed at
    /// --max-in-flight (the most throughput). `cpis-bench overload` measures both.
    #[arg(long, env = "CPIS_MIN_IN_FLIGHT", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub min_in_flight: Option<u32>,

    /// JWKS file with the public keys (ES256/RS256) that sign NHS user and system tokens;
    /// re-read when it changes (checked every 2 s).
    #[arg(long, env = "CPIS_LOOKUP_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,

    /// JWKS URL with those keys (https; http only on a loopback address), instead of
    /// --jwks-file: fetched at start (no keys, no start), every --jwks-refresh, and at once when
    /// a token names an unknown key id (at most once per --jwks-min-refetch). A failed fetch
    /// keeps the last good keys.
    #[arg(long, env = "CPIS_LOOKUP_JWKS_URL")]
    pub jwks_url: Option<String>,

    /// PEM file of a CA that --jwks-url's server may chain to, beside the Mozilla roots compiled
    /// in (an identity provider behind a private CA).
    #[arg(long, env = "CPIS_LOOKUP_JWKS_CA", requires = "jwks_url")]
    pub jwks_ca: Option<PathBuf>,

    /// How often --jwks-url is fetched again.
    #[arg(long, env = "CPIS_LOOKUP_JWKS_REFRESH", default_value = "5m", value_parser = cpis_core::config::duration_within("10s", "1d"))]
    pub jwks_refresh: Duration,

    /// The least time between two fetches of --jwks-url caused by unknown key ids (a flood of
    /// tokens naming random keys cannot hammer the identity provider).
    #[arg(long, env = "CPIS_LOOKUP_JWKS_MIN_REFETCH", default_value = "10s", value_parser = cpis_core::config::duration_within("1s", "1h"))]
    pub jwks_min_refetch: Duration,

    /// The longest token lifetime accepted (NHS user tokens are short-lived): `exp` minus `iat`.
    #[arg(long, env = "CPIS_LOOKUP_TOKEN_MAX_LIFETIME", default_value = "1h", value_parser = cpis_core::config::duration_within("1min", "30d"))]
    pub token_max_lifetime: Duration,

    /// Whether tokens must carry `iat` (without it, only what is left until `exp` is bounded).
    #[arg(long, env = "CPIS_LOOKUP_TOKEN_REQUIRE_IAT", default_value_t = true, action = clap::ArgAction::Set)]
    pub token_require_iat: bool,

    /// Expected `iss` of NHS tokens.
    #[arg(long, env = "CPIS_LOOKUP_JWT_ISSUER", default_value = "cpis")]
    pub jwt_issuer: String,

    /// Expected `aud` of NHS tokens.
    #[arg(long, env = "CPIS_LOOKUP_JWT_AUDIENCE", default_value = "cpis-lookup")]
    pub jwt_audience: String,

    /// Who may do what.
    #[command(flatten)]
    pub policy: RolePolicy,

    /// A verifier given directly (tests, the dev stack) instead of --jwks-file or --jwks-url
    /// (the lifetime rules above still apply to it).
    #[arg(skip)]
    pub verifier: Option<TokenVerifier>,
}

/// The default --lookup-rate-per-user: a sustained lookup every 200 ms with 30 at once is far
/// above any person's or EPR integration's real pace, and far below an enumeration's.
pub const DEFAULT_RATE_PER_USER: &str = "5/s,burst=30";

/// The default --lookup-rate-per-org: a large trust's busiest hour is a few hundred lookups;
/// twenty a second sustained (with a burst for a whole department's EPR reconnecting) is far
/// above that and far below a sweep.
pub const DEFAULT_RATE_PER_ORG: &str = "20/s,burst=200";

impl Config {
    /// The per-caller lookup limits.
    pub fn lookup_limits(&self) -> LookupLimits {
        LookupLimits {
            per_user: RateLimit::new(
                "lookup_per_user",
                "lookups",
                "user",
                self.lookup_rate_per_user,
            ),
            per_org: RateLimit::new(
                "lookup_per_org",
                "lookups",
                "organisation",
                self.lookup_rate_per_org,
            ),
        }
    }

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
            lookup_rate_per_user: DEFAULT_RATE_PER_USER.parse().unwrap_or(Rate::UNLIMITED),
            lookup_rate_per_org: DEFAULT_RATE_PER_ORG.parse().unwrap_or(Rate::UNLIMITED),
            min_in_flight: None,
            jwks_file: None,
            jwks_url: None,
            jwks_ca: None,
            jwks_refresh: Duration::from_secs(300),
            jwks_min_refetch: Duration::from_secs(10),
            token_max_lifetime: Duration::from_secs(3600),
            token_require_iat: true,
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
        if !self
            .registry_url
            .to_ascii_lowercase()
            .starts_with("https://")
        {
            // Every disclosure carries an NHS number and a clinician's identity, and its answer
            // decides whether a plan is shown: in clear over a network anyone on the path could
            // read and forge both. Plaintext only to loopback, or behind a mesh that says so.
            let host = self
                .registry_url
                .parse::<tonic::codegen::http::Uri>()
                .ok()
                .and_then(|uri| uri.host().map(str::to_owned))
                .unwrap_or_default();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback && !self.server.tls.insecure_plaintext {
                return Err(config_error(format!(
                    "--registry-url {} is plaintext to a host that is not loopback: use https:// \
                     (with --registry-ca and a client certificate), or --insecure-plaintext where \
                     a mesh encrypts the link",
                    cpis_core::text::LogSafe(&self.registry_url)
                )));
            }
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

    /// The token verifier in effect: injected, or loading the JWKS file or URL; this
    /// service's lifetime rules either way.
    pub async fn token_verifier(&self) -> Result<TokenVerifier, crate::LookupError> {
        let mut rules = TokenRules::new(&self.jwt_issuer, &self.jwt_audience);
        rules.max_lifetime = self.token_max_lifetime;
        rules.require_iat = self.token_require_iat;
        cpis_core::config::token_verifier(TokenSettings {
            injected: self.verifier.as_ref(),
            jwks_file: self.jwks_file.as_deref(),
            jwks_url: self.jwks_url.as_deref(),
            jwks_ca: self.jwks_ca.as_deref(),
            refresh: RefreshPolicy {
                interval: self.jwks_refresh,
                min_refetch: self.jwks_min_refetch,
            },
            flags: "--jwks-file (CPIS_LOOKUP_JWKS_FILE) or --jwks-url (CPIS_LOOKUP_JWKS_URL)",
            rules,
        })
        .await
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

    #[test]
    fn the_bound_is_fixed_unless_given_a_floor_of_at_least_one() {
        let config = Config::try_parse_from(["lookup"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.min_in_flight, None);
        let config = Config::try_parse_from(["lookup", "--min-in-flight", "2"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.min_in_flight, Some(2));
        let refused = Config::try_parse_from(["lookup", "--min-in-flight", "0"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(refused.contains("--min-in-flight"), "{refused}");
    }

    #[tokio::test]
    async fn a_plaintext_registry_link_leaves_loopback_only_when_told() {
        let config = |args: &[&str]| {
            let mut all = vec!["lookup"];
            all.extend_from_slice(args);
            Config::try_parse_from(all).unwrap_or_else(|e| panic!("{e}"))
        };
        for remote in [
            "http://registry:50053",
            "HTTP://10.0.0.5:50053",
            "http://[::2]:1",
        ] {
            let Err(refused) = config(&["--registry-url", remote]).registry_channel() else {
                panic!("plaintext to {remote} is refused");
            };
            assert!(
                refused.to_string().contains("--insecure-plaintext"),
                "{refused}"
            );
            assert!(
                config(&["--registry-url", remote, "--insecure-plaintext"])
                    .registry_channel()
                    .is_ok(),
                "{remote} with the escape hatch"
            );
        }
        for local in [
            "http://127.0.0.1:50053",
            "http://localhost:1",
            "http://[::1]:1",
        ] {
            assert!(
                config(&["--registry-url", local])
                    .registry_channel()
                    .is_ok(),
                "{local}"
            );
        }
    }
}
