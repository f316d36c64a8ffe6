//! The one way tests, the benchmark and tools boot the CP-IS stack: a registry (and optionally a
//! lookup service in front of it) through their own `serve` on `127.0.0.1:0`, on a fresh
//! database of either engine, with a council signer, an NHS signer, an injectable clock and a
//! throwaway PKI ([`TestPki`]): the registry's internal port (disclosure, operator) runs mutual
//! TLS, and the lookup service reaches it with its client certificate; the public ports stay
//! plaintext on loopback. Plus the tokens and clients every caller needs.
//!
//! ```ignore
//! let Some(stack) = Stack::builder(backend)
//!     .clock(Clock::fixed(micros))
//!     .registry(|c| c.upload_chunk = 500)
//!     .with_lookup()
//!     .start()
//!     .await
//! else {
//!     return; // PostgreSQL unavailable outside CI
//! };
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cpis_core::auth::DevSigner;
use cpis_proto::cpis::common::v1::{AccessMode, ChildRecord, LocalAuthority};
use cpis_proto::cpis::lookup::v1::{
    LookupChildRequest, LookupChildResponse, lookup_service_client::LookupServiceClient,
};
use cpis_proto::cpis::registry::v1::{
    GetChildRecordRequest, ListAccessEventsRequest, ListNotificationsRequest, Notification,
    PutChildRecordRequest, SetContactDetailsRequest, council_service_client::CouncilServiceClient,
    disclosure_service_client::DisclosureServiceClient,
    operator_service_client::OperatorServiceClient,
};
use registry_service::{Clock, DatabaseUrl};
use serde_json::Value;
use tokio::net::TcpListener;
use tonic::{Request, Status, transport::Channel};

use crate::{
    TestServer,
    db::{Backend, TestDb},
    pki::{LOOKUP_IDENTITY, OPERATOR_IDENTITY, TestPki},
};

/// The issuer of every test token (the services' default).
pub const ISSUER: &str = "cpis";
/// The audience of council tokens (the registry's default).
pub const REGISTRY_AUDIENCE: &str = "cpis-registry";
/// The audience of NHS user and system tokens (the lookup service's default).
pub const LOOKUP_AUDIENCE: &str = "cpis-lookup";

/// How long minted test tokens stay valid: longer than any test or benchmark run.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Councils' generated clients accept large pages (a bulk listing) as a real client would.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A fresh signer of council tokens.
pub fn council_signer() -> DevSigner {
    DevSigner::generate(ISSUER, REGISTRY_AUDIENCE).expect("generate council key")
}

/// A fresh signer of NHS user and system tokens.
pub fn nhs_signer() -> DevSigner {
    DevSigner::generate(ISSUER, LOOKUP_AUDIENCE).expect("generate NHS key")
}

/// A registry config on `db` trusting `signer`, serving mutual TLS on the internal port with
/// `pki`'s server certificate and client CA (the public port stays plaintext on loopback) (admitting [`LOOKUP_IDENTITY`]
/// to disclosures and [`OPERATOR_IDENTITY`] to operator calls); everything else at the
/// defaults.
pub fn registry_config(db: &TestDb, signer: &DevSigner, pki: &TestPki) -> registry_service::Config {
    let url = DatabaseUrl::parse(&db.url).expect("test database url");
    let mut config =
        registry_service::Config::with(url, signer.verifier().expect("council verifier"));
    secure_registry(&mut config, pki);
    // Tests and the benchmark write and upload as fast as they can: no per-council rate limit
    // unless a test sets one.
    config.council_read_rate = cpis_core::rate::Rate::UNLIMITED;
    config.council_write_rate = cpis_core::rate::Rate::UNLIMITED;
    config.council_upload_rate = cpis_core::rate::Rate::UNLIMITED;
    config.server.max_in_flight = TESTS_MAX_IN_FLIGHT;
    config
}

/// Sets `config`'s TLS files and internal callers from `pki` (see [`registry_config`]).
pub fn secure_registry(config: &mut registry_service::Config, pki: &TestPki) {
    config.internal_tls_cert = Some(pki.server.cert.clone());
    config.internal_tls_key = Some(pki.server.key.clone());
    config.internal_client_ca = Some(pki.ca_path().to_owned());
    config.disclosure_identities = vec![LOOKUP_IDENTITY.to_owned()];
    config.operator_identities = vec![OPERATOR_IDENTITY.to_owned()];
}

/// `message` with `authorization: Bearer token`.
pub fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

type RegistryHook = Box<dyn FnOnce(&mut registry_service::Config)>;
type LookupHook = Box<dyn FnOnce(&mut lookup_service::Config)>;

/// How to boot a [`Stack`]; from [`Stack::builder`].
pub struct StackBuilder {
    backend: Backend,
    clock: Clock,
    lookup: Option<Vec<LookupHook>>,
    registry: Vec<RegistryHook>,
}

impl StackBuilder {
    /// The registry's clock (default: the system clock). Keep a clone to move a fixed one, or
    /// use [`Stack::clock`].
    #[must_use]
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Adjusts the registry's config before it starts (applied in order, after the clock and
    /// credential are set).
    #[must_use]
    pub fn registry(
        mut self,
        adjust: impl FnOnce(&mut registry_service::Config) + 'static,
    ) -> Self {
        self.registry.push(Box::new(adjust));
        self
    }

    /// Also starts a lookup service in front of the registry.
    #[must_use]
    pub fn with_lookup(mut self) -> Self {
        self.lookup.get_or_insert_with(Vec::new);
        self
    }

    /// Starts a lookup service in front of the registry and adjusts its config before it starts.
    #[must_use]
    pub fn lookup(mut self, adjust: impl FnOnce(&mut lookup_service::Config) + 'static) -> Self {
        self.lookup
            .get_or_insert_with(Vec::new)
            .push(Box::new(adjust));
        self
    }

    /// Creates the database and starts the services, each SERVING when this returns. `None` when
    /// the backend is unavailable outside CI (see [`TestDb::create`]).
    pub async fn start(self) -> Option<Stack> {
        let db = TestDb::create(self.backend)?;
        let council_signer = council_signer();
        let nhs_signer = nhs_signer();
        let pki = Arc::new(TestPki::new("stack"));
        let mut registry_config = registry_config(&db, &council_signer, &pki);
        registry_config.clock = self.clock.clone();
        for adjust in self.registry {
            adjust(&mut registry_config);
        }
        let (registry, internal) = start_registry(None, registry_config.clone(), &pki).await;
        let mut stack = Stack {
            lookup: None,
            registry,
            internal,
            pki,
            council_signer,
            nhs_signer,
            clock: self.clock,
            registry_config,
            db,
        };
        if let Some(hooks) = self.lookup {
            let lookup = stack
                .another_lookup(|config| {
                    for adjust in hooks {
                        adjust(config);
                    }
                })
                .await;
            lookup.wait_serving("", Duration::from_secs(10)).await;
            stack.lookup = Some(lookup);
        }
        Some(stack)
    }
}

/// Contact details for council `ods` (its name "Council ODS", test-range phone numbers), as
/// `Stack::register_council` sets them.
pub fn council_contacts(ods: &str) -> SetContactDetailsRequest {
    SetContactDetailsRequest {
        local_authority: Some(LocalAuthority {
            ods_code: ods.into(),
            name: format!("Council {ods}"),
            emergency_duty_phone: "020 7946 0000".into(),
            office_hours_phone: "020 7946 0001".into(),
            update_time: None,
        }),
    }
}

/// Serves `config`'s public port with TLS (the stack's server certificate) and asks councils for
/// client certificates from the stack's CA (`--council-client-ca`), as a deployment that wants
/// them does.
pub fn require_council_certificates(config: &mut registry_service::Config) {
    config.server.tls.tls_cert = config.internal_tls_cert.clone();
    config.server.tls.tls_key = config.internal_tls_key.clone();
    config.council_client_ca = config.internal_client_ca.clone();
}

/// The bound on calls in progress in tests: above the largest flood a test opens at once (the
/// protective-edge tests set their own).
pub const TESTS_MAX_IN_FLIGHT: u32 = 4096;

/// Starts a registry on `addrs` (public, internal; default: free ports) and returns its public
/// port (which owns the server) and its internal port, reached as the lookup service.
async fn start_registry(
    addrs: Option<(SocketAddr, SocketAddr)>,
    config: registry_service::Config,
    pki: &TestPki,
) -> (TestServer, TestServer) {
    let (public, internal) = addrs.unwrap_or((
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    ));
    let internal_listener = TcpListener::bind(internal)
        .await
        .unwrap_or_else(|e| panic!("bind {internal}: {e}"));
    let internal = TestServer::reach(
        internal_listener.local_addr().expect("internal addr"),
        pki.client_tls(Some(&pki.lookup)),
    );
    // A test may serve the public port with TLS too (`config.server.tls`): then it is reached
    // trusting this PKI's CA.
    let public_tls = config
        .server
        .tls
        .tls_cert
        .is_some()
        .then(|| pki.client_tls(None));
    let admin_listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind admin");
    let admin = admin_listener.local_addr().expect("admin addr");
    let serve = |listener, shutdown| {
        let listeners = registry_service::Listeners {
            public: listener,
            internal: internal_listener,
            admin: Some(admin_listener),
        };
        registry_service::serve(config, listeners, shutdown)
    };
    let mut public = TestServer::start_tls_at(public, public_tls, serve).await;
    public.admin = Some(admin);
    internal.wait_serving("", Duration::from_secs(10)).await;
    (public, internal)
}

/// A running registry, optionally a lookup service in front of it, and what a caller needs to
/// talk to them. Dropping it stops both and drops the database.
pub struct Stack {
    // Declared (so dropped) front to back: the lookup, the registry, then the database.
    lookup: Option<TestServer>,
    /// The registry's public (council-facing) port; stopping it stops the registry.
    pub registry: TestServer,
    /// The registry's internal port (mTLS), reached with the lookup service's certificate
    /// (`with_tls` for another).
    pub internal: TestServer,
    /// The CA and certificates of this stack.
    pub pki: Arc<TestPki>,
    /// Signs council tokens the registry trusts.
    pub council_signer: DevSigner,
    /// Signs NHS tokens the lookup service trusts.
    pub nhs_signer: DevSigner,
    /// The registry's clock (move it with `set` when it was built fixed).
    pub clock: Clock,
    registry_config: registry_service::Config,
    /// The database the registry owns.
    pub db: TestDb,
}

impl Stack {
    /// How to boot one on a fresh database of `backend`.
    pub fn builder(backend: Backend) -> StackBuilder {
        StackBuilder {
            backend,
            clock: Clock::system(),
            lookup: None,
            registry: Vec::new(),
        }
    }

    /// A registry alone, with defaults, on a fresh database of `backend`; `None` when that
    /// backend is unavailable outside CI.
    pub async fn start(backend: Backend) -> Option<Self> {
        Self::builder(backend).start().await
    }

    /// The lookup service; panics when the stack was built without one.
    pub fn lookup_server(&self) -> &TestServer {
        self.lookup
            .as_ref()
            .expect("a stack built with_lookup() or lookup(..)")
    }

    /// The config the registry runs with (database, signer, clock, credential, adjustments), to
    /// start another registry process-equivalent on the same database.
    pub fn registry_config(&self) -> registry_service::Config {
        self.registry_config.clone()
    }

    /// Starts another registry on the same database with this stack's config adjusted by
    /// `adjust`, on its own address (a second node).
    pub async fn another_registry(
        &self,
        adjust: impl FnOnce(&mut registry_service::Config),
    ) -> TestServer {
        let mut config = self.registry_config();
        adjust(&mut config);
        start_registry(None, config, &self.pki).await.0
    }

    /// Like [`Self::another_registry`], returning both its ports: public, then internal (reached
    /// as the lookup service).
    pub async fn another_registry_ports(
        &self,
        adjust: impl FnOnce(&mut registry_service::Config),
    ) -> (TestServer, TestServer) {
        let mut config = self.registry_config();
        adjust(&mut config);
        start_registry(None, config, &self.pki).await
    }

    /// Starts another lookup service trusting this stack's NHS signer, in front of this
    /// stack's registry unless `adjust` says otherwise. Not waited for: a lookup service whose
    /// registry refuses or ignores it never turns SERVING (use `wait_serving` when it should).
    pub async fn another_lookup(
        &self,
        adjust: impl FnOnce(&mut lookup_service::Config),
    ) -> TestServer {
        let mut config = lookup_service::Config::with(
            self.internal.url(),
            self.nhs_signer.verifier().expect("NHS verifier"),
        );
        config.registry_ca = Some(self.pki.ca_path().to_owned());
        config.registry_client_cert = Some(self.pki.lookup.cert.clone());
        config.registry_client_key = Some(self.pki.lookup.key.clone());
        // Tests and the benchmark drive thousands of lookups as one user: no per-caller rate
        // limit unless a test sets one.
        config.lookup_rate_per_user = cpis_core::rate::Rate::UNLIMITED;
        config.lookup_rate_per_org = cpis_core::rate::Rate::UNLIMITED;
        // Nor a bound on calls in progress below what the tests' floods open at once.
        config.server.max_in_flight = TESTS_MAX_IN_FLIGHT;
        adjust(&mut config);
        let tls = config
            .server
            .tls
            .tls_cert
            .is_some()
            .then(|| self.pki.client_tls(None));
        let admin_listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind admin");
        let admin = admin_listener.local_addr().expect("admin addr");
        let mut server = TestServer::spawn(|listener, shutdown| {
            let listeners = lookup_service::Listeners {
                grpc: listener,
                admin: Some(admin_listener),
            };
            lookup_service::serve(config, listeners, shutdown)
        })
        .await;
        server.tls = tls;
        server.admin = Some(admin);
        server
    }

    /// Stops the registry cleanly and returns how `serve` ended. Its address stays reserved
    /// for [`Stack::restart_registry`]; until then nothing answers there (and stopping again
    /// panics: there is nothing left to stop).
    pub async fn stop_registry(&mut self) -> Result<(), String> {
        // The stopped server's place is taken by a handle that only remembers its address.
        let mut placeholder = TestServer::attach(&self.registry.addr.to_string());
        placeholder.tls = self.registry.tls.clone();
        let running = std::mem::replace(&mut self.registry, placeholder);
        running.stop().await
    }

    /// Stops the registry and starts a new one on the same database and address (so the lookup
    /// service keeps reaching it), with this stack's config adjusted by `adjust`. Returns how
    /// the first one's `serve` ended.
    pub async fn restart_registry(
        &mut self,
        adjust: impl FnOnce(&mut registry_service::Config),
    ) -> Result<(), String> {
        let stopped = self.stop_registry().await;
        let mut config = self.registry_config();
        adjust(&mut config);
        let addrs = (self.registry.addr, self.internal.addr);
        (self.registry, self.internal) = start_registry(Some(addrs), config, &self.pki).await;
        stopped
    }

    /// A token for council `ods` with `scope` (space-separated: "read", "write", "read write").
    pub fn council_token(&self, ods: &str, scope: &str) -> String {
        self.council_signer
            .mint(
                &serde_json::json!({ "sub": format!("{ods}-system"), "ods_code": ods, "scope": scope }),
                TOKEN_LIFETIME,
            )
            .expect("mint council token")
    }

    /// `message` with council `ods`'s read+write token.
    pub fn as_council<T>(&self, ods: &str, message: T) -> Request<T> {
        with_token(message, &self.council_token(ods, "read write"))
    }

    /// An NHS token carrying `claims` (a user's or a system's).
    pub fn nhs_token(&self, claims: &Value) -> String {
        self.nhs_signer
            .mint(claims, TOKEN_LIFETIME)
            .expect("mint NHS token")
    }

    /// `message` as the lookup service sends it (its credential is its client certificate,
    /// on the channel of [`Stack::disclosure`]).
    pub fn as_lookup_service<T>(&self, message: T) -> Request<T> {
        Request::new(message)
    }

    /// An operator's token (scope "operator"), for [`Stack::operator`].
    pub fn operator_token(&self) -> String {
        self.council_signer
            .mint(
                &serde_json::json!({ "sub": "operator-1", "scope": "operator" }),
                TOKEN_LIFETIME,
            )
            .expect("mint operator token")
    }

    /// `message` with an operator token, for [`Stack::operator`].
    pub fn as_operator<T>(&self, message: T) -> Request<T> {
        with_token(message, &self.operator_token())
    }

    /// A council client of the registry.
    pub async fn council(&self) -> CouncilServiceClient<Channel> {
        CouncilServiceClient::new(self.registry.channel().await)
            .max_decoding_message_size(MAX_MESSAGE)
    }

    /// A client of the registry's internal disclosure service, presenting the lookup
    /// service's certificate.
    pub async fn disclosure(&self) -> DisclosureServiceClient<Channel> {
        DisclosureServiceClient::new(self.internal.channel().await)
    }

    /// A client of the registry's operator service, presenting the operator's certificate.
    pub async fn operator(&self) -> OperatorServiceClient<Channel> {
        let port = self
            .internal
            .with_tls(self.pki.client_tls(Some(&self.pki.operator)));
        OperatorServiceClient::new(port.channel().await)
    }

    /// A client of the lookup service; panics when the stack has none.
    pub async fn lookup_client(&self) -> LookupServiceClient<Channel> {
        LookupServiceClient::new(self.lookup_server().channel().await)
    }

    /// Sets contact details for council `ods` (name "Council ODS", fixed phones) so it may store
    /// records and appear in disclosures.
    pub async fn register_council(&self, ods: &str) {
        self.council()
            .await
            .set_contact_details(self.as_council(ods, council_contacts(ods)))
            .await
            .expect("set contact details");
    }

    /// Stores `record` for council `ods`.
    pub async fn put(&self, ods: &str, record: ChildRecord) {
        self.try_put(ods, record).await.expect("put record");
    }

    /// Stores `record` for council `ods`, or says why the registry refused.
    pub async fn try_put(&self, ods: &str, record: ChildRecord) -> Result<(), Status> {
        self.council()
            .await
            .put_child_record(self.as_council(
                ods,
                PutChildRecordRequest {
                    record: Some(record),
                    ..Default::default()
                },
            ))
            .await
            .map(|_| ())
    }

    /// Council `ods`'s record on `nhs_number`, as `GetChildRecord` answers it.
    pub async fn get_record(&self, ods: &str, nhs_number: &str) -> Result<ChildRecord, Status> {
        self.council()
            .await
            .get_child_record(self.as_council(
                ods,
                GetChildRecordRequest {
                    nhs_number: nhs_number.into(),
                    ..Default::default()
                },
            ))
            .await
            .map(|answer| answer.into_inner().record.unwrap_or_default())
    }

    /// Looks `nhs_number` up through the lookup service as the holder of `claims`.
    pub async fn lookup(
        &self,
        claims: &Value,
        nhs_number: &str,
        mode: AccessMode,
    ) -> Result<LookupChildResponse, Status> {
        let token = self.nhs_token(claims);
        self.lookup_client()
            .await
            .lookup_child(with_token(
                LookupChildRequest {
                    nhs_number: nhs_number.into(),
                    access_mode: mode as i32,
                },
                &token,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    /// How many access events the registry holds for `nhs_number`, as council `ods` sees them
    /// (every page).
    pub async fn access_events(&self, ods: &str, nhs_number: &str) -> usize {
        self.access_history(ods, nhs_number).await.len()
    }

    /// Council `ods`'s view of the access history of `nhs_number` (every page), newest first.
    pub async fn access_history(
        &self,
        ods: &str,
        nhs_number: &str,
    ) -> Vec<cpis_proto::cpis::common::v1::AccessEvent> {
        let mut client = self.council().await;
        let (mut token, mut all) = (String::new(), Vec::new());
        loop {
            let page = client
                .list_access_events(self.as_council(
                    ods,
                    ListAccessEventsRequest {
                        nhs_number: nhs_number.into(),
                        page_size: 1000,
                        page_token: token,
                        ..Default::default()
                    },
                ))
                .await
                .expect("access events")
                .into_inner();
            all.extend(page.access_events);
            if page.next_page_token.is_empty() {
                return all;
            }
            token = page.next_page_token;
        }
    }

    /// Every notification queued for council `ods` (every page).
    pub async fn notifications(&self, ods: &str) -> Vec<Notification> {
        let mut client = self.council().await;
        let (mut token, mut all) = (String::new(), Vec::new());
        loop {
            let page = client
                .list_notifications(self.as_council(
                    ods,
                    ListNotificationsRequest {
                        page_size: 1000,
                        page_token: token,
                        ..Default::default()
                    },
                ))
                .await
                .expect("notifications")
                .into_inner();
            all.extend(page.notifications);
            if page.next_page_token.is_empty() {
                return all;
            }
            token = page.next_page_token;
        }
    }
}
