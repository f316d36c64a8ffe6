//! The CP-IS lookup service: the NHS-facing edge (`cpis.lookup.v1.LookupService`). Stateless and
//! without database credentials: it authenticates NHS users, applies the role policy and asks the
//! registry to disclose and record each access in one call.
//!
//! # Layout
//! - `auth`: the interceptor in front of the handler: verifies the token, makes the typed caller
//!   (`identity`), applies its rate limits (per user, per organisation).
//! - `identity`: the caller from a verified CIS2-style token (person with a selected role, or
//!   a system with a responsible person), validated with the same rules the registry applies
//!   (`cpis_core::accessor`), so a malformed token is refused here as UNAUTHENTICATED.
//! - `policy`: which activity codes may make which access from which care setting.
//! - `lookup`: the `LookupChild` handler: identity, policy, NHS number, then one `Disclose` call
//!   to the registry, whose answer becomes the minimal response (the registry's
//!   `api::convert` decides what a disclosed plan carries).
//! - `registry_check`: health follows whether the registry accepts this service's client
//!   certificate (the internal port is mutual TLS).
//! - `error`: the one mapping to gRPC codes, including how the registry's refusals reach the
//!   clinician (`lookup::map_registry_status`).
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod error;
pub mod identity;
pub mod lookup;
pub mod policy;
mod registry_check;

use std::future::Future;
use std::sync::Arc;

use cpis_proto::cpis::lookup::v1::lookup_service_server::LookupServiceServer;
use cpis_proto::service_names;
use tokio::net::TcpListener;
use tracing::Instrument as _;

pub use config::Config;
pub use error::LookupError;

/// The services this server registers, as health and reflection name them.
pub const SERVICES: &[&str] = &[service_names::LOOKUP];

/// The lookup service's listeners. A bare `TcpListener` converts into one without an admin
/// port.
#[derive(Debug)]
pub struct Listeners {
    /// NHS callers: `LookupService`.
    pub grpc: TcpListener,
    /// The admin HTTP port (`/metrics`, `/livez`, `/readyz`; see `cpis_core::admin`); `None`:
    /// not served.
    pub admin: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(grpc: TcpListener) -> Self {
        Self { grpc, admin: None }
    }
}

/// Runs the lookup service on `listeners` until `shutdown` completes, then drains gracefully.
/// `main`, the tests and the all-in-one dev stack all call this.
pub async fn serve(
    config: Config,
    listeners: impl Into<Listeners>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), LookupError> {
    let Listeners {
        grpc: listener,
        admin,
    } = listeners.into();
    if config.server.call_timeout <= config.registry_timeout {
        // The server's own limit would cut a lookup off while the registry may be committing
        // it, and answer without saying the access may have been recorded.
        return Err(LookupError::Config(format!(
            "--call-timeout ({}) must be longer than --registry-timeout ({})",
            humantime::format_duration(config.server.call_timeout),
            humantime::format_duration(config.registry_timeout)
        )));
    }
    let verifier = config.token_verifier().await?;
    let tls = match config.server.tls.server_cert() {
        Ok(Some(cert)) => Some(
            cpis_core::tls::acceptor(cert, &cpis_core::tls::ClientAuth::None)
                .map_err(|e| LookupError::Config(e.to_string()))?,
        ),
        Ok(None) => None,
        Err(e) => return Err(LookupError::Config(e.to_string())),
    };
    let registry = config.registry_channel()?;
    let api = lookup::LookupApi::new(
        config.policy.clone(),
        registry.clone(),
        config.registry_timeout,
    );
    let auth = auth::NhsAuth::new(verifier.clone(), Arc::new(config.lookup_limits()));
    let mut routes = tonic::service::RoutesBuilder::default();
    // FreshKeys: a token naming a key not yet known refreshes the keys before the (synchronous)
    // interceptor checks it.
    routes.add_service(cpis_core::auth::FreshKeys::new(
        verifier,
        LookupServiceServer::with_interceptor(api, auth),
    ));
    // NOT_SERVING until the registry accepts this service (see `registry_check`).
    let ready = async move { Ok::<_, LookupError>(Some(registry_check::accepted(registry).await)) };
    // The admin port's /readyz follows the same health, and stops with the gRPC port.
    let readiness = cpis_core::admin::Readiness::default();
    let options = cpis_core::server::ServerOptions {
        readiness: Some(readiness.clone()),
        // With --min-in-flight, the bound adapts to the lookups' latency (see
        // `cpis_core::admission`), never above --max-in-flight.
        adaptive_floor: config
            .min_in_flight
            .map(|floor| floor.min(config.server.max_in_flight)),
        ..config.server.clone()
    };
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let grpc = async {
        let result = cpis_core::server::serve_grpc(
            routes.routes(),
            SERVICES,
            listener,
            tls,
            &options,
            ready,
            shutdown,
        )
        .await;
        stop.send_replace(true);
        result
    };
    let admin = cpis_core::admin::serve(admin, readiness, async move {
        let _ = stopped.wait_for(|stopped| *stopped).await;
    });
    // Every log line of this server names it, so the dev stack's mixed output stays readable.
    let (result, ()) = async { tokio::join!(grpc, admin) }
        .instrument(tracing::info_span!("lookup"))
        .await;
    result
}
