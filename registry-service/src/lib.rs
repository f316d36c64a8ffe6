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
pub mod operator;
pub mod outbox;
pub mod record;
pub mod store;
pub mod visibility;

use std::future::Future;

use cpis_proto::cpis::registry::v1::{
    council_service_server::CouncilServiceServer,
    disclosure_service_server::DisclosureServiceServer,
    operator_service_server::OperatorServiceServer,
};
use cpis_proto::service_names;
use tokio::net::TcpListener;
use tracing::Instrument as _;

pub use config::Config;
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
    let council = council::CouncilApi::new(
        db.clone(),
        auth::CouncilAuth::new(verifier),
        config.clock.clone(),
        config.upload_chunk,
    );
    let mut routes = tonic::service::RoutesBuilder::default();
    routes
        .add_service(CouncilServiceServer::new(council))
        .add_service(DisclosureServiceServer::new(
            disclosure::DisclosureApi::new(
                db.clone(),
                config.clock.clone(),
                config.disclosure_token.as_ref(),
            ),
        ))
        .add_service(OperatorServiceServer::new(operator::OperatorApi::new()));
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
        shutdown,
    )
    // Every log line of this server names it, so the dev stack's mixed output stays readable.
    .instrument(tracing::info_span!("registry"))
    .await
}
