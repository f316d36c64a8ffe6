//! The CP-IS registry: the system of record. Serves councils (`cpis.registry.v1.CouncilService`),
//! the lookup service's internal disclosure call (`DisclosureService`) and operators
//! (`OperatorService`). It alone will own the database.
#![forbid(unsafe_code)]

pub mod auth;
pub mod clock;
pub mod config;
pub mod council;
pub mod db;
pub mod disclosure;
pub mod disclosure_store;
pub mod error;
pub mod nhs_status;
pub mod operator;
pub mod outbox;
pub mod record;
pub mod store;
pub mod subscription;
pub mod visibility;
pub mod wakeups;

use std::future::Future;

use cpis_proto::cpis::registry::v1::{
    council_service_server::CouncilServiceServer,
    disclosure_service_server::DisclosureServiceServer,
    operator_service_server::OperatorServiceServer,
};
use cpis_proto::service_names;
use tokio::net::TcpListener;
use tracing::Instrument as _;

pub use clock::Clock;
pub use config::Config;
pub use db::DatabaseUrl;
pub use error::RegistryError;

/// The services this server registers, as health and reflection name them.
pub const SERVICES: &[&str] = &[
    service_names::COUNCIL,
    service_names::DISCLOSURE,
    service_names::OPERATOR,
];

/// Opens the configured database and applies pending migrations (`registry-service migrate`).
pub async fn migrate(config: &Config) -> Result<Vec<String>, RegistryError> {
    let db = open_database(config)?;
    db.migrate().await
}

/// Imports an operator's NHS-number status file straight into the configured database (the
/// same code path as `OperatorService.ImportNhsNumberStatusChanges`). Running servers pick the
/// notifications up through PostgreSQL NOTIFY or their polling.
pub async fn import_nhs_status(
    config: &Config,
    csv: &str,
) -> Result<cpis_proto::cpis::registry::v1::ImportNhsNumberStatusChangesResponse, RegistryError> {
    let db = open_database(config)?;
    if !db.pending_migrations().await?.is_empty() {
        return Err(RegistryError::SchemaBehind { pending: 1 });
    }
    let (changes, mut rejections) = nhs_status::parse_csv(csv);
    let mut report = cpis_proto::cpis::registry::v1::ImportNhsNumberStatusChangesResponse {
        received_count: u64::try_from(changes.len() + rejections.len()).unwrap_or(u64::MAX),
        ..Default::default()
    };
    let mut valid = Vec::new();
    for (line, change) in changes {
        match nhs_status::validate(&change) {
            Ok(change) => valid.push(change),
            Err(violation) => rejections.push(cpis_proto::cpis::registry::v1::EntryRejection {
                position: line,
                reason: violation.reason as i32,
                field: violation.field,
                message: violation.description,
            }),
        }
    }
    let now = config.clock.now_micros();
    for chunk in valid.chunks(500) {
        let chunk = chunk.to_vec();
        let applied = db
            .run(move |conn| nhs_status::apply(conn, &chunk, now))
            .await?;
        report.applied_count += applied.applied;
        report.notifications_queued += u64::try_from(applied.notified.len()).unwrap_or(u64::MAX);
    }
    rejections.sort_by_key(|r| r.position);
    report.rejections = rejections;
    Ok(report)
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

/// Runs the registry on `listener` until `shutdown` completes, then drains gracefully.
/// `main`, the tests and the all-in-one dev stack all call this. Health turns SERVING only once
/// the database answers and its schema is current; a schema that is behind stops the server
/// with a message saying what to run.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RegistryError> {
    let verifier = config.token_verifier()?;
    let db = open_database(&config)?;
    let wakeups = wakeups::Wakeups::default();
    // On PostgreSQL, other replicas' commits wake this replica's subscribers too.
    let _listener = match config.effective_database_url() {
        db::DatabaseUrl::Postgres(url) => Some(wakeups::spawn_pg_listener(url, wakeups.clone())),
        db::DatabaseUrl::Sqlite(_) => None,
    };
    let (draining, draining_rx) = tokio::sync::watch::channel(false);
    let council_auth = auth::CouncilAuth::new(verifier);
    let council = council::CouncilApi::new(council::CouncilDeps {
        db: db.clone(),
        auth: council_auth.clone(),
        clock: config.clock.clone(),
        upload_chunk: config.upload_chunk,
        wakeups: wakeups.clone(),
        shutdown: draining_rx,
        subscription: config.subscription_options(),
    });
    let mut routes = tonic::service::RoutesBuilder::default();
    routes
        .add_service(CouncilServiceServer::new(council))
        .add_service(DisclosureServiceServer::new(
            disclosure::DisclosureApi::new(
                db.clone(),
                config.clock.clone(),
                config.disclosure_token.as_ref(),
                wakeups.clone(),
            ),
        ))
        .add_service(OperatorServiceServer::new(operator::OperatorApi::new(
            db.clone(),
            council_auth.clone(),
            config.clock.clone(),
            wakeups.clone(),
        )));
    let engine = db.engine();
    let migrate_on_start = config.migrate_on_start;
    let ready = async move {
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
        Ok(())
    };
    cpis_core::server::serve_grpc(
        routes.routes(),
        SERVICES,
        listener,
        &config.server,
        ready,
        async move {
            shutdown.await;
            // Subscribers end first, telling councils to reconnect elsewhere.
            let _ = draining.send(true);
        },
    )
    // Every log line of this server names it, so the dev stack's mixed output stays readable.
    .instrument(tracing::info_span!("registry"))
    .await
}
