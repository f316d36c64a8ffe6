//! The registry's gRPC edge: thin handlers that authenticate (an interceptor per service puts
//! the typed caller in the request), convert the wire into domain types, call the database
//! layer, and map the outcome through `RegistryError`. Council calls live in `council`,
//! `upload` and `notifications`; the lookup service's call in `disclosure`; operators' in
//! `operator`.

mod auth;
pub(crate) mod convert;
mod council;
mod disclosure;
pub(crate) mod disclosure_queue;
mod notifications;
pub(crate) mod operator;
mod paging;
mod upload;
pub(crate) mod validate;

pub(crate) use auth::{CouncilCertificates, CouncilLimits};
pub(crate) use disclosure::expose_security_event_counts;
pub(crate) use upload::UploadOptions;

use std::sync::Arc;

use cpis_core::auth::{FreshKeys, TokenVerifier};
use cpis_proto::cpis::registry::v1::{
    council_service_server::CouncilServiceServer,
    disclosure_service_server::DisclosureServiceServer,
    operator_service_server::OperatorServiceServer,
};
use tokio::sync::watch;
use tonic::service::Routes;

use crate::clock::Clock;
use crate::db::Database;
use crate::domain::enumeration::EnumerationLimits;
use crate::notify::{
    Notifier,
    feeds::{Feeds, Limits},
    subscription::SubscriptionOptions,
};

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct Registry {
    /// The database.
    pub db: Database,
    /// The registry's notion of now.
    pub clock: Clock,
    /// Outbox wake-ups.
    pub notifier: Notifier,
    /// Each council's live feed, shared by its subscribers.
    pub feeds: Feeds,
    /// Page-token sealing.
    pub pages: paging::PageTokens,
    /// Bulk uploads' chunk size and idle limit.
    pub upload: upload::UploadOptions,
    /// Subscriber buffering, polling and heartbeats.
    pub subscription: SubscriptionOptions,
    /// Turns true when the server starts draining; subscribers end with SHUTTING_DOWN.
    pub shutdown: watch::Receiver<bool>,
    /// The enumeration guard's thresholds.
    pub enumeration: EnumerationLimits,
    /// Disclosures on their way to a group commit.
    pub disclosures: disclosure_queue::DisclosureQueue,
}

impl Registry {
    /// The shared state of one server.
    pub fn new(
        db: Database,
        clock: Clock,
        notifier: Notifier,
        upload: upload::UploadOptions,
        subscription: (SubscriptionOptions, Limits),
        shutdown: watch::Receiver<bool>,
        disclosures: (EnumerationLimits, disclosure_queue::GroupCommit),
    ) -> Self {
        let (subscription, limits) = subscription;
        let (enumeration, group_commit) = disclosures;
        Self {
            disclosures: disclosure_queue::DisclosureQueue::start(
                db.clone(),
                notifier.clone(),
                group_commit,
            ),
            feeds: Feeds::new(
                db.clone(),
                notifier.clone(),
                subscription.poll_interval,
                limits,
            ),
            pages: paging::PageTokens::new(db.clone(), clock.clone()),
            db,
            clock,
            notifier,
            upload,
            subscription,
            shutdown,
            enumeration,
        }
    }
}

/// The council-facing port's service, behind the token interceptor.
pub(crate) fn public_routes(
    registry: Arc<Registry>,
    verifier: TokenVerifier,
    council_certificates: Option<CouncilCertificates>,
    council_limits: Arc<CouncilLimits>,
) -> Routes {
    let mut routes = tonic::service::RoutesBuilder::default();
    // FreshKeys: a token naming a key not yet known refreshes the keys before the (synchronous)
    // interceptor checks it.
    routes.add_service(FreshKeys::new(
        verifier.clone(),
        CouncilServiceServer::with_interceptor(
            council::CouncilApi(registry),
            auth::CouncilInterceptor {
                verifier,
                certificates: council_certificates,
                limits: council_limits,
            },
        ),
    ));
    routes.routes()
}

/// Who may call the internal port's services: client-certificate identities (SAN URI or DNS).
#[derive(Clone, Debug, Default)]
pub(crate) struct InternalCallers<'a> {
    /// Admitted to DisclosureService (the lookup service).
    pub disclosure: &'a [String],
    /// Admitted to OperatorService (with an operator token too).
    pub operator: &'a [String],
}

/// The internal port's services (lookup service and operators), each behind the interceptor
/// that checks the caller's client certificate.
pub(crate) fn internal_routes(
    registry: Arc<Registry>,
    verifier: TokenVerifier,
    callers: &InternalCallers<'_>,
) -> Routes {
    use cpis_proto::service_names;
    let mut routes = tonic::service::RoutesBuilder::default();
    routes
        .add_service(DisclosureServiceServer::with_interceptor(
            disclosure::DisclosureApi(registry.clone()),
            auth::DisclosureInterceptor(auth::IdentityGate::new(
                service_names::DISCLOSURE,
                callers.disclosure,
            )),
        ))
        .add_service(FreshKeys::new(
            verifier.clone(),
            OperatorServiceServer::with_interceptor(
                operator::OperatorApi(registry),
                auth::OperatorInterceptor {
                    gate: auth::IdentityGate::new(service_names::OPERATOR, callers.operator),
                    verifier,
                },
            ),
        ));
    routes.routes()
}
