//! The CP-IS registry: the system of record. It serves councils (`cpis.registry.v1.
//! CouncilService`) on its public port, and the lookup service's internal disclosure call
//! (`DisclosureService`) and operators (`OperatorService`) on its internal port, where callers
//! are admitted by client certificate (mTLS); it alone owns the database.
//!
//! # Layout
//! The layers depend one way: `api` on all the others, `notify` and `db` on `domain` (and
//! `notify` on `db`), `domain` on nothing of ours but `cpis_core`.
//!
//! - [`serve`] (here) wires the pieces together; `main.rs` only parses flags and calls it.
//! - `api/`: the gRPC edge. An interceptor per service authenticates the caller and puts it in
//!   the request's extensions (`api::auth`); handlers validate wire messages into domain types
//!   (`api::validate`), call the database layer, and return `RegistryError`, whose one mapping to
//!   gRPC codes lives in `error.rs`; answers go back to the wire in `api::convert`. Council
//!   calls: `api::council`, `api::upload`, `api::notifications`; the lookup service's:
//!   `api::disclosure`; operators': `api::operator`.
//!   Page tokens are sealed in `api::paging`.
//! - `domain/`: what the registry holds and the rules over it, with no gRPC or SQL: records and
//!   plans (`domain::record`), contacts, the care-setting visibility rules
//!   (`domain::visibility`), access-history collapsing, NHS-number status, checked dates.
//! - `db/`: all SQL. One diesel code path for both engines; every PostgreSQL/SQLite difference
//!   is in `db::dialect`; rows and their conversion to domain types in `db::models`.
//! - `notify/`: notifications in motion. `notify::Notifier` owns both halves of a notifying
//!   write (the outbox insert inside the transaction, the wake-up after commit); one feed per
//!   council (`notify::feeds`) reads the outbox for all its subscribers (`notify::subscription`);
//!   the PostgreSQL LISTEN/NOTIFY transport is `notify::pg_listener`.
//! - `upkeep`: work in the background; it prunes the enumeration guard's table of the rows no
//!   window counts any more.
//!
//! Validated types shared with the lookup service (`NhsNumber`, `OdsCode`, `ValidAccessor`) come
//! from `cpis_core`, so both services refuse the same input with the same words.
#![forbid(unsafe_code)]

mod api;
mod clock;
mod config;
mod db;
mod domain;
mod error;
// Thin entry points for the fuzz targets (`fuzz/`, `scripts/fuzz.sh`); not part of the API.
#[doc(hidden)]
pub mod fuzzing;
mod notify;
mod upkeep;

use std::future::Future;
use std::sync::Arc;

use cpis_proto::cpis::registry::v1::ImportNhsNumberStatusChangesResponse;
use cpis_proto::service_names;
use tokio::net::TcpListener;
use tracing::Instrument as _;

pub use api::disclosure_queue::GroupCommit;
pub use clock::Clock;
pub use config::Config;
pub use db::DatabaseUrl;
pub use error::RegistryError;

/// The services of the public (council-facing) port, as health and reflection name them.
pub const PUBLIC_SERVICES: &[&str] = &[service_names::COUNCIL];

/// The services of the internal port (the lookup service and operators, over mTLS).
pub const INTERNAL_SERVICES: &[&str] = &[service_names::DISCLOSURE, service_names::OPERATOR];

/// The registry's listeners, one per audience.
#[derive(Debug)]
pub struct Listeners {
    /// Councils: `CouncilService`.
    pub public: TcpListener,
    /// The lookup service and operators: `DisclosureService`, `OperatorService`.
    pub internal: TcpListener,
    /// The admin HTTP port (`/metrics`, `/livez`, `/readyz`; see `cpis_core::admin`); `None`:
    /// not served.
    pub admin: Option<TcpListener>,
}

/// Opens the configured database and applies pending migrations (`registry-service migrate`).
pub async fn migrate(config: &Config) -> Result<Vec<String>, RegistryError> {
    open_database(config)?.migrate().await
}

/// Imports an operator's NHS-number status CSV file straight into the configured database,
/// through the same code as `OperatorService.ImportNhsNumberStatusChanges`. Running servers pick
/// the notifications up through PostgreSQL NOTIFY or their polling.
pub async fn import_nhs_status(
    config: &Config,
    csv: &str,
) -> Result<ImportNhsNumberStatusChangesResponse, RegistryError> {
    let db = open_database(config)?;
    let pending = db.pending_migrations().await?;
    if !pending.is_empty() {
        return Err(RegistryError::SchemaBehind {
            pending: pending.len(),
        });
    }
    let notifier = notify::Notifier::default();
    let mut import = api::operator::Import::new(&db, &notifier, config.clock.now_micros());
    match api::operator::parse_csv(csv) {
        Ok(lines) => {
            for (line, entry) in lines {
                import.add(line, entry).await?;
            }
            import.finish().await
        }
        Err(header) => {
            let mut report = import.finish().await?;
            report
                .rejections
                .push(cpis_proto::cpis::registry::v1::EntryRejection {
                    position: 1,
                    reason: header.reason as i32,
                    field: header.field,
                    message: header.description,
                });
            Ok(report)
        }
    }
}

/// How often health checks that the database still answers.
const HEALTH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// A signal that follows whether the database answers, checked every `HEALTH_INTERVAL` on the
/// probe's own connection, for health to report (NOT_SERVING while it is unreachable).
fn follow_database(db: db::Database) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(true);
    tokio::spawn(async move {
        let mut failures = 0;
        while !tx.is_closed() {
            tokio::time::sleep(HEALTH_INTERVAL).await;
            // A hung database never answers: bound the wait.
            let answers = tokio::time::timeout(HEALTH_INTERVAL * 2, db.answers())
                .await
                .unwrap_or(false);
            failures = if answers { 0 } else { failures + 1 };
            // Two misses in a row before NOT_SERVING: one slow probe is not an outage.
            let up = answers || failures < 2;
            tx.send_if_modified(|was| std::mem::replace(was, up) != up);
        }
    });
    rx
}

fn open_database(config: &Config) -> Result<db::Database, RegistryError> {
    db::Database::open(
        config.effective_database_url(),
        db::PoolOptions {
            max_connections: config.db_max_connections,
            acquire_timeout: config.db_acquire_timeout,
        },
    )
}

/// The registry's long-lived calls (see `cpis_core::admission`).
const LONG_LIVED_CALLS: &[&str] = &[
    "/cpis.registry.v1.CouncilService/UploadBatch",
    "/cpis.registry.v1.CouncilService/SubscribeNotifications",
    "/cpis.registry.v1.OperatorService/ImportNhsNumberStatusChanges",
    "/cpis.registry.v1.OperatorService/LoadDemographics",
];

/// The TLS acceptors of the two ports (`None`: plaintext). The public port presents
/// `--tls-cert` and, with `--council-client-ca`, asks councils for client certificates (the
/// council interceptor then requires one naming the token's council); the internal port presents
/// `--internal-tls-cert` (default `--tls-cert`) and requires a client certificate from
/// `--internal-client-ca`. CAs and revocation lists are re-read when they change.
type Acceptors = (
    Option<tokio_rustls::TlsAcceptor>,
    Option<tokio_rustls::TlsAcceptor>,
);

fn acceptors(config: &Config) -> Result<Acceptors, RegistryError> {
    use cpis_core::tls::{ClientAuth, ClientTrust, ReloadingCert, TlsError, acceptor};
    let tls_error = |e: TlsError| RegistryError::Config(e.to_string());
    let reload = config.server.tls.tls_reload_interval;
    let public_cert = config.server.tls.server_cert().map_err(tls_error)?;
    let internal_cert = match (&config.internal_tls_cert, &config.internal_tls_key) {
        (Some(cert), Some(key)) => {
            Some(ReloadingCert::start(cert.clone(), key.clone(), reload).map_err(tls_error)?)
        }
        (None, None) => public_cert.clone(),
        _ => {
            return Err(RegistryError::Config(
                "--internal-tls-cert and --internal-tls-key go together".into(),
            ));
        }
    };
    let internal = match (internal_cert, config.internal_client_ca.as_deref()) {
        (Some(cert), Some(client_ca)) => {
            let trust = ClientTrust::start(
                client_ca.to_owned(),
                config.internal_client_crl.clone(),
                reload,
            )
            .map_err(tls_error)?;
            Some(acceptor(cert, &ClientAuth::Required(trust)).map_err(tls_error)?)
        }
        (Some(_), None) => {
            return Err(RegistryError::Config(
                "the internal port serves TLS and needs --internal-client-ca: its callers are \
                 admitted by client certificate"
                    .into(),
            ));
        }
        (None, Some(_)) => {
            return Err(RegistryError::Config(
                "--internal-client-ca needs a certificate for the internal port: \
                 --internal-tls-cert or --tls-cert"
                    .into(),
            ));
        }
        (None, None) => None,
    };
    let council_auth = match &config.council_client_ca {
        Some(ca) => ClientAuth::Optional(
            ClientTrust::start(ca.clone(), config.council_client_crl.clone(), reload)
                .map_err(tls_error)?,
        ),
        None => ClientAuth::None,
    };
    let public = match public_cert {
        Some(cert) => Some(acceptor(cert, &council_auth).map_err(tls_error)?),
        None if config.council_client_ca.is_some() => {
            return Err(RegistryError::Config(
                "--council-client-ca needs TLS on the public port: --tls-cert and --tls-key".into(),
            ));
        }
        None => None,
    };
    Ok((public, internal))
}

/// Runs the registry on `listeners` until `shutdown` completes, then drains both ports
/// gracefully. `main`, the tests and the all-in-one dev stack all call this. Health turns
/// SERVING (on both ports) only once the database answers and its schema is current; a schema
/// that is behind stops the server with a message saying what to run. If either port fails,
/// the other stops too.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RegistryError> {
    let verifier = config.token_verifier().await?;
    let (public_tls, internal_tls) = acceptors(&config)?;
    if config
        .disclosure_identities
        .iter()
        .all(|id| id.trim().is_empty())
    {
        tracing::warn!("no --disclosure-identities: every disclosure will be refused");
    }
    let db = open_database(&config)?;
    api::expose_security_event_counts();
    let notifier = notify::Notifier::default();
    // The backlog gauges follow the database while this server runs.
    let _backlog = notify::backlog::start(
        db.clone(),
        config.clock.clone(),
        config.notification_backlog_refresh,
    );
    // Rows of the enumeration guard's table that no window counts any more go.
    let _upkeep = upkeep::start(
        db.clone(),
        config.clock.clone(),
        config.enumeration_prune_interval,
    );
    // Other replicas' commits wake this replica's subscribers too.
    let _listener = notifier.listen(&config.effective_database_url());
    let (draining, draining_rx) = tokio::sync::watch::channel(false);
    let registry = Arc::new(api::Registry::new(
        db.clone(),
        config.clock.clone(),
        notifier,
        api::UploadOptions {
            chunk: config.upload_chunk.max(1),
            idle_timeout: config.upload_idle_timeout,
        },
        config.subscription_options(),
        draining_rx,
        (config.enumeration_limits(), config.group_commit),
    ));
    let council_certificates = config
        .council_client_ca
        .is_some()
        .then(|| api::CouncilCertificates::new(&config.council_identity));
    let public_routes = api::public_routes(
        registry.clone(),
        verifier.clone(),
        council_certificates,
        Arc::new(api::CouncilLimits::new(
            config.council_read_rate,
            config.council_write_rate,
            config.council_upload_rate,
        )),
    );
    let internal_routes = api::internal_routes(
        registry,
        verifier,
        &api::InternalCallers {
            disclosure: &config.disclosure_identities,
            operator: &config.operator_identities,
        },
    );
    let engine = db.engine();
    let migrate_on_start = config.migrate_on_start;
    // The database check runs once, on the public port's start; the internal port follows it.
    let (database_ready, database_ready_rx) = tokio::sync::oneshot::channel();
    let ready = async move {
        // A registry may start before its database: wait as NOT_SERVING rather than exit.
        if !db.answers().await {
            tracing::warn!(engine, "waiting for the database");
            while !db.answers().await {
                tokio::time::sleep(HEALTH_INTERVAL).await;
            }
        }
        if migrate_on_start {
            let applied = db.migrate().await?;
            tracing::info!(
                engine,
                applied = applied.len(),
                "migrations applied at start-up"
            );
        }
        let pending = db.pending_migrations().await?;
        if !pending.is_empty() {
            return Err(RegistryError::SchemaBehind {
                pending: pending.len(),
            });
        }
        tracing::info!(engine, "database ready");
        let follow = follow_database(db);
        let _ = database_ready.send(follow.clone());
        Ok(Some(follow))
    };
    let internal_ready = async move {
        match database_ready_rx.await {
            Ok(follow) => Ok(Some(follow)),
            // The public port failed before the database was ready; it stops both.
            Err(_) => std::future::pending().await,
        }
    };

    // One stop for both ports: the caller's shutdown, or either port ending.
    let (stop, _) = tokio::sync::watch::channel(false);
    let stopped = |stop: &tokio::sync::watch::Sender<bool>| {
        let mut rx = stop.subscribe();
        async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    };
    // Long-lived streams have bounds of their own (idle timeouts, subscriber caps, one upload
    // per batch id): not counted against --max-in-flight nor cut at --call-timeout.
    // Where callers are admitted by certificate, connections end at a maximum age, so a
    // revoked certificate's does too: always inside, and outside when councils present one.
    // Ready for the admin port's /readyz when both ports serve.
    let readiness = cpis_core::admin::Readiness::default();
    let public_options = cpis_core::server::ServerOptions {
        readiness: Some(readiness.clone()),
        long_lived_calls: LONG_LIVED_CALLS.iter().map(|p| (*p).to_owned()).collect(),
        max_connection_age: config
            .council_client_ca
            .is_some()
            .then_some(config.certificate_connection_age),
        ..config.server.clone()
    };
    let internal_options = cpis_core::server::ServerOptions {
        max_connection_age: Some(config.certificate_connection_age),
        ..public_options.clone()
    };
    let Listeners {
        public: public_listener,
        internal: internal_listener,
        admin: admin_listener,
    } = listeners;
    // The admin port answers (/readyz 503) through the drain, and stops once both ports have.
    let (admin_stop, mut admin_stopped) = tokio::sync::watch::channel(false);
    let admin = cpis_core::admin::serve(admin_listener, readiness, async move {
        let _ = admin_stopped.wait_for(|stopped| *stopped).await;
    })
    .instrument(tracing::info_span!("registry", port = "admin"));
    let public = async {
        let result = cpis_core::server::serve_grpc(
            public_routes,
            PUBLIC_SERVICES,
            public_listener,
            public_tls,
            &public_options,
            ready,
            stopped(&stop),
        )
        // Every log line names the server and port, so the dev stack's mixed output stays
        // readable.
        .instrument(tracing::info_span!("registry", port = "public"))
        .await;
        stop.send_replace(true);
        result
    };
    let internal = async {
        let result = cpis_core::server::serve_grpc(
            internal_routes,
            INTERNAL_SERVICES,
            internal_listener,
            internal_tls,
            &internal_options,
            internal_ready,
            stopped(&stop),
        )
        .instrument(tracing::info_span!("registry", port = "internal"))
        .await;
        stop.send_replace(true);
        result
    };
    let ports = async {
        let served = async {
            let (public, internal) = tokio::join!(public, internal);
            admin_stop.send_replace(true);
            public.and(internal)
        };
        let (result, ()) = tokio::join!(served, admin);
        result
    };
    tokio::pin!(ports);
    tokio::select! {
        result = &mut ports => result,
        () = shutdown => {
            // Subscribers end first, telling councils to reconnect elsewhere.
            let _ = draining.send(true);
            stop.send_replace(true);
            ports.await
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)] // tests: a failed expectation is a failed test

    /// Each long-lived path names a real method, or its exemption would silently not apply.
    #[test]
    fn long_lived_calls_name_real_methods() {
        use prost::Message as _;
        let set = prost_types::FileDescriptorSet::decode(cpis_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let methods: Vec<String> = set
            .file
            .iter()
            .flat_map(|file| {
                file.service.iter().flat_map(move |service| {
                    service.method.iter().map(move |method| {
                        format!("/{}.{}/{}", file.package(), service.name(), method.name())
                    })
                })
            })
            .collect();
        for path in super::LONG_LIVED_CALLS {
            assert!(methods.iter().any(|m| m == path), "{path} is no method");
        }
    }
}
