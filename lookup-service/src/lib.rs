//! The CP-IS lookup service: the NHS-facing edge (`cpis.lookup.v1.LookupService`). Stateless and
//! without database credentials: it will authenticate NHS users, apply the role policy and ask
//! the registry to disclose and record each access in one call.
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod lookup;

use std::future::Future;

use cpis_proto::cpis::lookup::v1::lookup_service_server::LookupServiceServer;
use cpis_proto::service_names;
use tokio::net::TcpListener;
use tracing::Instrument as _;

pub use config::Config;
pub use error::LookupError;

/// The services this server registers, as health and reflection name them.
pub const SERVICES: &[&str] = &[service_names::LOOKUP];

/// Runs the lookup service on `listener` until `shutdown` completes, then drains gracefully.
/// `main`, the tests and the all-in-one dev stack all call this.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), LookupError> {
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(LookupServiceServer::new(lookup::LookupApi::new()));
    let ready = async { Ok::<(), LookupError>(()) };
    cpis_core::server::serve_grpc(
        routes.routes(),
        SERVICES,
        listener,
        &config.server,
        ready,
        shutdown,
    )
    // Every log line of this server names it, so the dev stack's mixed output stays readable.
    .instrument(tracing::info_span!("lookup"))
    .await
}
