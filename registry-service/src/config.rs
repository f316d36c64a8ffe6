//! Registry configuration, from flags and environment variables (`CPIS_*`), parsed with clap so
//! it is testable without touching the process environment (`Config::try_parse_from`).

use std::{path::PathBuf, time::Duration};

use cpis_core::rate::Rate;
use cpis_core::{
    auth::{TokenRules, TokenVerifier},
    config::TokenSettings,
    keys::RefreshPolicy,
    server::ServerOptions,
};

use crate::{clock::Clock, db::DatabaseUrl, domain::enumeration::EnumerationLimits};

/// Everything `serve` needs to run the registry.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    /// Transport and drain settings.
    #[command(flatten)]
    pub server: ServerOptions,

    /// Database: postgres://USER@HOST/DB (production) or sqlite://PATH. Default: SQLite at
    /// DATA_DIR/registry.sqlite3.
    #[arg(long, env = "CPIS_DATABASE_URL", hide_env_values = true, value_parser = parse_database_url)]
    pub database_url: Option<DatabaseUrl>,

    /// Directory for the embedded SQLite database.
    #[arg(long, env = "CPIS_DATA_DIR", default_value = ".data")]
    pub data_dir: PathBuf,

    /// Most pooled database connections (PostgreSQL; SQLite uses one).
    #[arg(long, env = "CPIS_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// How long a call waits for a database connection before answering UNAVAILABLE.
    #[arg(long, env = "CPIS_DB_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = cpis_core::config::duration_within("10ms", "5min"))]
    pub db_acquire_timeout: Duration,

    /// Apply pending migrations at start-up (development). In production run
    /// `registry-service migrate` as a job before rollout instead.
    #[arg(long, env = "CPIS_MIGRATE_ON_START")]
    pub migrate_on_start: bool,

    /// JWKS file with the public keys (ES256/RS256) that sign council and service tokens;
    /// re-read when it changes (checked every 2 s).
    #[arg(long, env = "CPIS_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,

    /// JWKS URL with those keys (https; http only on a loopback address), instead of
    /// --jwks-file: fetched at start (no keys, no start), every --jwks-refresh, and at once when
    /// a token names an unknown key id (at most once per --jwks-min-refetch). A failed fetch
    /// keeps the last good keys.
    #[arg(long, env = "CPIS_JWKS_URL")]
    pub jwks_url: Option<String>,

    /// PEM file of a CA that --jwks-url's server may chain to, beside the Mozilla roots compiled
    /// in (an identity provider behind a private CA).
    #[arg(long, env = "CPIS_JWKS_CA", requires = "jwks_url")]
    pub jwks_ca: Option<PathBuf>,

    /// How often --jwks-url is fetched again.
    #[arg(long, env = "CPIS_JWKS_REFRESH", default_value = "5m", value_parser = cpis_core::config::duration_within("10s", "1d"))]
    pub jwks_refresh: Duration,

    /// The least time between two fetches of --jwks-url caused by unknown key ids (a flood of
    /// tokens naming random keys cannot hammer the identity provider).
    #[arg(long, env = "CPIS_JWKS_MIN_REFETCH", default_value = "10s", value_parser = cpis_core::config::duration_within("1s", "1h"))]
    pub jwks_min_refetch: Duration,

    /// The longest token lifetime accepted (council case systems' tokens): `exp` minus `iat`.
    #[arg(long, env = "CPIS_TOKEN_MAX_LIFETIME", default_value = "24h", value_parser = cpis_core::config::duration_within("1min", "30d"))]
    pub token_max_lifetime: Duration,

    /// Whether tokens must carry `iat` (without it, only what is left until `exp` is bounded).
    #[arg(long, env = "CPIS_TOKEN_REQUIRE_IAT", default_value_t = true, action = clap::ArgAction::Set)]
    pub token_require_iat: bool,

    /// Expected `iss` of tokens.
    #[arg(long, env = "CPIS_JWT_ISSUER", default_value = "cpis")]
    pub jwt_issuer: String,

    /// Expected `aud` of council tokens.
    #[arg(long, env = "CPIS_JWT_AUDIENCE", default_value = "cpis-registry")]
    pub jwt_audience: String,

    /// PEM certificate chain the internal port (DisclosureService, OperatorService) presents.
    /// Default: --tls-cert. Set it to serve TLS inside while the public port stays plaintext
    /// on loopback (tests, the dev stack), or to use an internal CA's certificate there.
    #[arg(long, env = "CPIS_INTERNAL_TLS_CERT", requires = "internal_tls_key")]
    pub internal_tls_cert: Option<PathBuf>,

    /// PEM private key of --internal-tls-cert.
    #[arg(long, env = "CPIS_INTERNAL_TLS_KEY", requires = "internal_tls_cert")]
    pub internal_tls_key: Option<PathBuf>,

    /// PEM file of the CA(s) whose client certificates the internal port accepts. The internal
    /// port then requires one (mutual TLS): no certificate, an unknown CA or an expired
    /// certificate fail the handshake. Required whenever the internal port serves TLS.
    #[arg(long, env = "CPIS_INTERNAL_CLIENT_CA")]
    pub internal_client_ca: Option<PathBuf>,

    /// Certificate revocation lists (PEM or DER files, comma-separated) for the internal port's
    /// client certificates: a revoked certificate fails the handshake. Each client certificate's
    /// issuer must have its list here once any is given. Re-read when they change.
    #[arg(
        long,
        env = "CPIS_INTERNAL_CLIENT_CRL",
        value_delimiter = ',',
        requires = "internal_client_ca"
    )]
    pub internal_client_crl: Vec<PathBuf>,

    /// The longest a connection admitted by client certificate stays open (the internal port,
    /// and the public port when --council-client-ca is set): it is then closed gracefully and
    /// the client reconnects, handshaking again, so a revoked or no longer admitted certificate
    /// loses an open connection within this long.
    #[arg(long, env = "CPIS_CERTIFICATE_CONNECTION_AGE", default_value = "1h", value_parser = cpis_core::config::duration_within("10s", "7d"))]
    pub certificate_connection_age: Duration,

    /// PEM file of the CA(s) issuing councils' client certificates. With it, council calls on
    /// the public port need a client certificate naming their council (see
    /// --council-identity) as well as a token: a stolen token alone is not enough. Without
    /// it, councils are authenticated by token alone.
    #[arg(long, env = "CPIS_COUNCIL_CLIENT_CA")]
    pub council_client_ca: Option<PathBuf>,

    /// Certificate revocation lists (PEM or DER, comma-separated) for councils' client
    /// certificates; re-read when they change.
    #[arg(
        long,
        env = "CPIS_COUNCIL_CLIENT_CRL",
        value_delimiter = ',',
        requires = "council_client_ca"
    )]
    pub council_client_crl: Vec<PathBuf>,

    /// The identity (SAN URI, or DNS name) a council's client certificate must carry, with
    /// {ods} standing for the council's ODS code as its token names it.
    #[arg(long, env = "CPIS_COUNCIL_IDENTITY", default_value = COUNCIL_IDENTITY, value_parser = parse_council_identity)]
    pub council_identity: String,

    /// Client-certificate identities (SAN URI or DNS name, comma-separated) admitted to
    /// DisclosureService: the lookup service's, e.g. spiffe://cpis/lookup.
    #[arg(long, env = "CPIS_DISCLOSURE_IDENTITIES", value_delimiter = ',')]
    pub disclosure_identities: Vec<String>,

    /// Client-certificate identities (SAN URI or DNS name, comma-separated) admitted to
    /// OperatorService (whose calls also need an operator token).
    #[arg(long, env = "CPIS_OPERATOR_IDENTITIES", value_delimiter = ',')]
    pub operator_identities: Vec<String>,

    /// Reads (records, access history, contacts, batch outcomes, notification listings and
    /// acknowledgements, opening a notification stream) allowed per council, per replica, as
    /// --council-write-rate. A case system reads as its workers open cases and pages through
    /// its records to reconcile; a runaway client must not take the registry's share.
    #[arg(long, env = "CPIS_COUNCIL_READ_RATE", default_value = DEFAULT_READ_RATE)]
    pub council_read_rate: Rate,

    /// Single writes (records, deletions, contact details) allowed per council, per replica:
    /// COUNT/s, /min or /h, with ",burst=N". Over it: RESOURCE_EXHAUSTED RATE_LIMITED with a
    /// retry delay. A case system writes as cases change; bulk loads go through uploads.
    #[arg(long, env = "CPIS_COUNCIL_WRITE_RATE", default_value = DEFAULT_WRITE_RATE)]
    pub council_write_rate: Rate,

    /// Bulk uploads (whole batches) allowed per council, per replica, as --council-write-rate.
    /// A council sends an extract a day, and resends after a failure.
    #[arg(long, env = "CPIS_COUNCIL_UPLOAD_RATE", default_value = DEFAULT_UPLOAD_RATE)]
    pub council_upload_rate: Rate,

    /// Records per database transaction in bulk uploads. Each chunk is one commit (one fsync);
    /// at 10,000 an upload runs at about two thirds of COPY on PostgreSQL (at 2,000, 0.4), and
    /// the registry holds at most three chunks (measured: +35 MiB at peak).
    #[arg(long, env = "CPIS_UPLOAD_CHUNK", default_value_t = 10_000)]
    pub upload_chunk: usize,

    /// An upload stream that sends nothing for this long is ended (DEADLINE_EXCEEDED,
    /// BATCH_STALLED); what it committed stays committed.
    #[arg(long, env = "CPIS_UPLOAD_IDLE_TIMEOUT", default_value = "60s", value_parser = cpis_core::config::duration_within("1s", "1h"))]
    pub upload_idle_timeout: Duration,

    /// Notification subscribers poll the outbox this often when no wake-up arrives.
    #[arg(long, env = "CPIS_NOTIFICATION_POLL", default_value = "1s", value_parser = cpis_core::config::duration_within("10ms", "1h"))]
    pub notification_poll: Duration,

    /// How often the notification backlog metrics (`cpis_notification_backlog`,
    /// `cpis_notification_lag_seconds`) are read from the database: one grouped query each time.
    #[arg(long, env = "CPIS_NOTIFICATION_BACKLOG_REFRESH", default_value = "5s", value_parser = cpis_core::config::duration_within("100ms", "1h"))]
    pub notification_backlog_refresh: Duration,

    /// A subscriber that does not read for this long is cut off (RESOURCE_EXHAUSTED).
    #[arg(long, env = "CPIS_SUBSCRIBER_SEND_TIMEOUT", default_value = "10s", value_parser = cpis_core::config::duration_within("100ms", "1h"))]
    pub subscriber_send_timeout: Duration,

    /// Notifications buffered per subscriber.
    #[arg(long, env = "CPIS_SUBSCRIBER_BUFFER", default_value_t = 64)]
    pub subscriber_buffer: usize,

    /// Most live notification subscribers of one council (each council needs a few; a runaway
    /// client must not take the server's share).
    #[arg(long, env = "CPIS_MAX_SUBSCRIBERS_PER_COUNCIL", default_value_t = 100)]
    pub max_subscribers_per_council: usize,

    /// Most live notification subscribers of this server.
    #[arg(long, env = "CPIS_MAX_SUBSCRIBERS", default_value_t = 5000)]
    pub max_subscribers: usize,

    /// Idle subscribers get a heartbeat this often.
    #[arg(long, env = "CPIS_HEARTBEAT_INTERVAL", default_value = "15s", value_parser = cpis_core::config::duration_within("100ms", "1h"))]
    pub heartbeat_interval: Duration,

    /// Enumeration guard: most distinct NHS numbers one person (a CIS2 user, across
    /// organisations) may look up in any hour, silent reads included; past it, that user's
    /// lookups are refused (RESOURCE_EXHAUSTED, LOOKUPS_THROTTLED) and a security event is
    /// raised. 0 switches it off.
    #[arg(long, env = "CPIS_ENUMERATION_USER_PER_HOUR", default_value_t = DEFAULT_LIMITS.user_per_hour)]
    pub enumeration_user_per_hour: u32,

    /// Enumeration guard: most distinct NHS numbers one person may look up in any 24 hours.
    #[arg(long, env = "CPIS_ENUMERATION_USER_PER_DAY", default_value_t = DEFAULT_LIMITS.user_per_day)]
    pub enumeration_user_per_day: u32,

    /// Enumeration guard: most distinct NHS numbers one system (with its responsible person)
    /// may look up in any hour.
    #[arg(long, env = "CPIS_ENUMERATION_SYSTEM_PER_HOUR", default_value_t = DEFAULT_LIMITS.system_per_hour)]
    pub enumeration_system_per_hour: u32,

    /// Enumeration guard: most distinct NHS numbers one system may look up in any 24 hours.
    #[arg(long, env = "CPIS_ENUMERATION_SYSTEM_PER_DAY", default_value_t = DEFAULT_LIMITS.system_per_day)]
    pub enumeration_system_per_day: u32,

    /// Enumeration guard: most distinct NHS numbers all users and systems of one organisation
    /// (ODS code) may look up in any hour; past it, the whole organisation is refused.
    #[arg(long, env = "CPIS_ENUMERATION_ORGANISATION_PER_HOUR", default_value_t = DEFAULT_LIMITS.organisation_per_hour)]
    pub enumeration_organisation_per_hour: u32,

    /// How often the enumeration guard's table of who last looked up which child
    /// (`enumeration_last_seen`) loses the rows no window can count any more (older than a day
    /// and an hour). Each pass deletes in chunks of its own short transactions.
    #[arg(long, env = "CPIS_ENUMERATION_PRUNE_INTERVAL", default_value = "10m", value_parser = cpis_core::config::duration_within("100ms", "1d"))]
    pub enumeration_prune_interval: Duration,

    // --- Group commit of disclosures (flags defined with `GroupCommit`). ---
    /// Group commit of disclosures: batch size, wait and committers.
    #[command(flatten)]
    pub group_commit: crate::GroupCommit,
    // --- end group commit ---
    /// A verifier given directly (tests, the dev stack) instead of --jwks-file or --jwks-url
    /// (the lifetime rules above still apply to it).
    #[arg(skip)]
    pub verifier: Option<TokenVerifier>,

    /// The clock (tests inject a fixed one).
    #[arg(skip)]
    pub clock: Clock,
}

/// The default --council-read-rate.
pub const DEFAULT_READ_RATE: &str = "200/s,burst=1000";

/// The default --council-write-rate.
pub const DEFAULT_WRITE_RATE: &str = "100/s,burst=500";

/// The default --council-upload-rate.
pub const DEFAULT_UPLOAD_RATE: &str = "10/min,burst=5";

/// The enumeration guard's defaults (see the README's "Enumeration guard" for why these).
const DEFAULT_LIMITS: EnumerationLimits = EnumerationLimits::DEFAULT;

/// The council certificate identity by default: a SPIFFE-style URI, like the services' own.
pub const COUNCIL_IDENTITY: &str = "spiffe://cpis/council/{ods}";

fn parse_council_identity(value: &str) -> Result<String, String> {
    if value.matches("{ods}").count() == 1 {
        Ok(value.to_owned())
    } else {
        Err("must contain {ods} once (where the council's ODS code goes)".into())
    }
}

fn parse_database_url(value: &str) -> Result<DatabaseUrl, String> {
    DatabaseUrl::parse(value).map_err(|e| e.to_string())
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

    /// Defaults, with the database and verifier a test or the dev stack supplies.
    pub fn with(database_url: DatabaseUrl, verifier: TokenVerifier) -> Self {
        Self {
            server: ServerOptions::default(),
            database_url: Some(database_url),
            data_dir: PathBuf::from(".data"),
            db_max_connections: 16,
            db_acquire_timeout: Duration::from_secs(5),
            migrate_on_start: true,
            jwks_file: None,
            jwks_url: None,
            jwks_ca: None,
            jwks_refresh: Duration::from_secs(300),
            jwks_min_refetch: Duration::from_secs(10),
            token_max_lifetime: Duration::from_secs(24 * 3600),
            token_require_iat: true,
            jwt_issuer: "cpis".into(),
            jwt_audience: "cpis-registry".into(),
            upload_chunk: 10_000,
            council_read_rate: DEFAULT_READ_RATE
                .parse()
                .unwrap_or(cpis_core::rate::Rate::UNLIMITED),
            council_write_rate: DEFAULT_WRITE_RATE
                .parse()
                .unwrap_or(cpis_core::rate::Rate::UNLIMITED),
            council_upload_rate: DEFAULT_UPLOAD_RATE
                .parse()
                .unwrap_or(cpis_core::rate::Rate::UNLIMITED),
            upload_idle_timeout: Duration::from_secs(60),
            internal_tls_cert: None,
            internal_tls_key: None,
            internal_client_ca: None,
            internal_client_crl: Vec::new(),
            certificate_connection_age: Duration::from_secs(3600),
            council_client_ca: None,
            council_client_crl: Vec::new(),
            council_identity: COUNCIL_IDENTITY.to_owned(),
            disclosure_identities: Vec::new(),
            operator_identities: Vec::new(),
            notification_poll: Duration::from_secs(1),
            notification_backlog_refresh: Duration::from_secs(5),
            subscriber_send_timeout: Duration::from_secs(10),
            subscriber_buffer: 64,
            max_subscribers_per_council: 100,
            max_subscribers: 5000,
            heartbeat_interval: Duration::from_secs(15),
            enumeration_user_per_hour: DEFAULT_LIMITS.user_per_hour,
            enumeration_user_per_day: DEFAULT_LIMITS.user_per_day,
            enumeration_system_per_hour: DEFAULT_LIMITS.system_per_hour,
            enumeration_system_per_day: DEFAULT_LIMITS.system_per_day,
            enumeration_organisation_per_hour: DEFAULT_LIMITS.organisation_per_hour,
            enumeration_prune_interval: Duration::from_secs(600),
            group_commit: crate::GroupCommit::default(),
            verifier: Some(verifier),
            clock: Clock::system(),
        }
    }

    /// Subscriber settings.
    pub(crate) fn subscription_options(
        &self,
    ) -> (
        crate::notify::subscription::SubscriptionOptions,
        crate::notify::feeds::Limits,
    ) {
        let limits = crate::notify::feeds::Limits {
            per_council: self.max_subscribers_per_council,
            per_server: self.max_subscribers,
        };
        let options = crate::notify::subscription::SubscriptionOptions {
            buffer: self.subscriber_buffer,
            send_timeout: self.subscriber_send_timeout,
            poll_interval: self.notification_poll,
            heartbeat_interval: self.heartbeat_interval,
        };
        (options, limits)
    }

    /// The enumeration guard's thresholds.
    pub(crate) fn enumeration_limits(&self) -> EnumerationLimits {
        EnumerationLimits {
            user_per_hour: self.enumeration_user_per_hour,
            user_per_day: self.enumeration_user_per_day,
            system_per_hour: self.enumeration_system_per_hour,
            system_per_day: self.enumeration_system_per_day,
            organisation_per_hour: self.enumeration_organisation_per_hour,
        }
    }

    /// The database URL in effect.
    pub fn effective_database_url(&self) -> DatabaseUrl {
        self.database_url
            .clone()
            .unwrap_or_else(|| DatabaseUrl::Sqlite(self.data_dir.join("registry.sqlite3")))
    }

    /// The token verifier in effect: injected, or loading the JWKS file or URL; this
    /// service's lifetime rules either way.
    pub async fn token_verifier(&self) -> Result<TokenVerifier, crate::RegistryError> {
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
            flags: "--jwks-file (CPIS_JWKS_FILE) or --jwks-url (CPIS_JWKS_URL)",
            rules,
        })
        .await
        .map_err(crate::RegistryError::Config)
    }
}

#[cfg(test)]
mod tests;
