//! The CP-IS registry: the system of record. Serves councils (`cpis.registry.v1.CouncilService`),
//! the lookup service's internal disclosure call (`DisclosureService`) and operators
//! (`OperatorService`). It alone will own the database.
#![forbid(unsafe_code)]

pub mod config;
pub mod council;
pub mod disclosure;
pub mod error;
pub mod operator;

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

/// Runs the registry on `listener` until `shutdown` completes, then drains gracefully.
/// `main`, the tests and the all-in-one dev stack all call this.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RegistryError> {
    let mut routes = tonic::service::RoutesBuilder::default();
    routes
        .add_service(CouncilServiceServer::new(council::CouncilApi::new()))
        .add_service(DisclosureServiceServer::new(
            disclosure::DisclosureApi::new(),
        ))
        .add_service(OperatorServiceServer::new(operator::OperatorApi::new()));
    let ready = async { Ok::<(), RegistryError>(()) };
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
