//! Boots the registry through its own `serve` on a fresh database, with a generated signing key,
//! and builds authenticated requests for councils.

use std::time::Duration;

use cpis_core::auth::DevSigner;
use cpis_proto::cpis::common::v1::{
    ChildProtectionPlan, ChildRecord, LocalAuthority, LookedAfterChild, LookedAfterLegalBasis,
    PlanPeriod, UnbornChildProtectionPlan,
};
use cpis_proto::cpis::registry::v1::{
    SetContactDetailsRequest, council_service_client::CouncilServiceClient,
};
use cpis_proto::google::r#type::Date;
use cpis_testkit::{
    TestServer,
    db::{Backend, TestDb},
};
use registry_service::{Config, DatabaseUrl};
use tonic::{Request, transport::Channel};

/// A running registry and what a test needs to talk to it.
pub struct Registry {
    pub server: TestServer,
    pub signer: DevSigner,
    pub db: TestDb,
}

/// The test signer's issuer and audience, matching the registry's defaults.
pub fn signer() -> DevSigner {
    DevSigner::generate("cpis", "cpis-registry").expect("generate key")
}

/// A config on `db` trusting `signer`.
pub fn config(db: &TestDb, signer: &DevSigner) -> Config {
    let url = DatabaseUrl::parse(&db.url).expect("test database url");
    let mut config = Config::with(url, signer.verifier().expect("verifier"));
    config.upload_chunk = 500;
    config.disclosure_token = Some(secrecy::SecretString::from(DISCLOSURE_TOKEN.to_owned()));
    config
}

/// The credential tests present to the disclosure service, as the lookup service would.
pub const DISCLOSURE_TOKEN: &str = "test-disclosure-credential";

impl Registry {
    /// Starts a registry on a fresh database of `backend`; `None` when that backend is
    /// unavailable outside CI.
    pub async fn start(backend: Backend) -> Option<Self> {
        Self::start_with(backend, |_| {}).await
    }

    /// As `start`, letting the test adjust the config.
    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Option<Self> {
        let db = TestDb::create(backend)?;
        let signer = signer();
        let mut config = config(&db, &signer);
        adjust(&mut config);
        let server = TestServer::start(|listener, shutdown| {
            registry_service::serve(config, listener, shutdown)
        })
        .await;
        Some(Self { server, signer, db })
    }

    /// A council client.
    pub async fn client(&self) -> CouncilServiceClient<Channel> {
        CouncilServiceClient::new(self.server.channel().await)
            .max_decoding_message_size(64 * 1024 * 1024)
    }

    /// A token for council `ods` with `scope` (space-separated).
    pub fn token(&self, ods: &str, scope: &str) -> String {
        self.signer
            .mint(&serde_json::json!({ "sub": format!("{ods}-system"), "ods_code": ods, "scope": scope }), Duration::from_secs(600))
            .expect("mint")
    }

    /// `message` with council `ods`'s read+write bearer token.
    pub fn as_council<T>(&self, ods: &str, message: T) -> Request<T> {
        with_token(message, &self.token(ods, "read write"))
    }

    /// Sets contact details for `ods` so it may store records.
    pub async fn register_council(&self, ods: &str) {
        self.client()
            .await
            .set_contact_details(self.as_council(
                ods,
                SetContactDetailsRequest {
                    local_authority: Some(LocalAuthority {
                        ods_code: ods.into(),
                        name: format!("Council {ods}"),
                        emergency_duty_phone: "020 7946 0000".into(),
                        office_hours_phone: "020 7946 0001".into(),
                        update_time: None,
                    }),
                },
            ))
            .await
            .expect("set contact details");
    }
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

/// A calendar date.
pub fn date(year: i32, month: i32, day: i32) -> Date {
    Date { year, month, day }
}

pub use cpis_testkit::nhs::{nhs, nhs_numbers};

/// A valid record with a CPP for a child born 2020-05-01, plan from 2025-01-10.
pub fn cpp_record(nhs_number: &str) -> ChildRecord {
    ChildRecord {
        nhs_number: nhs_number.into(),
        local_case_id: format!("CASE-{nhs_number}"),
        given_name: "Alex".into(),
        family_name: "Example".into(),
        date_of_birth: Some(date(2020, 5, 1)),
        child_protection_plan: Some(ChildProtectionPlan {
            period: Some(PlanPeriod {
                start_date: Some(date(2025, 1, 10)),
                end_date: None,
                delete_date: None,
            }),
        }),
        ..Default::default()
    }
}

/// A valid record carrying all three blocks.
pub fn full_record(nhs_number: &str) -> ChildRecord {
    let mut record = cpp_record(nhs_number);
    record.looked_after_child = Some(LookedAfterChild {
        period: Some(PlanPeriod {
            start_date: Some(date(2025, 3, 1)),
            end_date: Some(date(2025, 9, 1)),
            delete_date: None,
        }),
        legal_basis: LookedAfterLegalBasis::Section20VoluntaryAccommodation as i32,
    });
    record.unborn_child_protection_plan = Some(UnbornChildProtectionPlan {
        period: Some(PlanPeriod {
            start_date: Some(date(2025, 2, 1)),
            end_date: None,
            delete_date: None,
        }),
        expected_delivery_date: Some(date(2025, 8, 1)),
    });
    record
}

/// An ED clinician's accessor, as the lookup service would send it.
pub fn ed_clinician(user_id: &str) -> cpis_proto::cpis::common::v1::Accessor {
    use cpis_proto::cpis::common::v1::{
        Accessor, CareSetting, Organisation, PersonAccessor, accessor::Kind,
    };
    Accessor {
        kind: Some(Kind::Person(PersonAccessor {
            user_id: user_id.into(),
            name: "Dr Test".into(),
            role_profile_id: "role-1".into(),
            job_role_code: "R8000".into(),
            job_role_name: "Clinical Practitioner".into(),
            activity_codes: vec!["B0107".into()],
        })),
        organisation: Some(Organisation {
            ods_code: "RXX01".into(),
            name: "Test Hospital".into(),
        }),
        care_setting: CareSetting::EmergencyDepartment as i32,
    }
}

impl Registry {
    /// Discloses `nhs_number` as the lookup service would (one access, recorded).
    pub async fn disclose(
        &self,
        nhs_number: &str,
        mode: cpis_proto::cpis::common::v1::AccessMode,
    ) -> cpis_proto::cpis::registry::v1::DiscloseResponse {
        disclose_at(&self.server, nhs_number, mode).await
    }

    /// A notification subscription for council `ods` after `after` (None: the stored cursor).
    pub async fn subscribe(
        &self,
        ods: &str,
        after: Option<u64>,
    ) -> Result<
        tonic::Streaming<cpis_proto::cpis::registry::v1::SubscribeNotificationsResponse>,
        tonic::Status,
    > {
        subscribe_at(&self.server, &self.token(ods, "read"), after).await
    }
}

/// Discloses through the disclosure service of `server`.
pub async fn disclose_at(
    server: &TestServer,
    nhs_number: &str,
    mode: cpis_proto::cpis::common::v1::AccessMode,
) -> cpis_proto::cpis::registry::v1::DiscloseResponse {
    use cpis_proto::cpis::registry::v1::{
        DiscloseRequest, disclosure_service_client::DisclosureServiceClient,
    };
    DisclosureServiceClient::new(server.channel().await)
        .disclose(with_token(
            DiscloseRequest {
                nhs_number: nhs_number.into(),
                accessor: Some(ed_clinician("555000000001")),
                access_mode: mode as i32,
                request_id: "req-1".into(),
            },
            DISCLOSURE_TOKEN,
        ))
        .await
        .expect("disclose")
        .into_inner()
}

/// Subscribes on `server` with `token`.
pub async fn subscribe_at(
    server: &TestServer,
    token: &str,
    after: Option<u64>,
) -> Result<
    tonic::Streaming<cpis_proto::cpis::registry::v1::SubscribeNotificationsResponse>,
    tonic::Status,
> {
    use cpis_proto::cpis::registry::v1::SubscribeNotificationsRequest;
    CouncilServiceClient::new(server.channel().await)
        .subscribe_notifications(with_token(
            SubscribeNotificationsRequest {
                local_authority_ods_code: String::new(),
                after_sequence: after,
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// The next notification's sequence on `stream`, skipping heartbeats; panics after `limit`.
pub async fn next_sequence(
    stream: &mut tonic::Streaming<cpis_proto::cpis::registry::v1::SubscribeNotificationsResponse>,
    limit: Duration,
) -> cpis_proto::cpis::registry::v1::Notification {
    use cpis_proto::cpis::registry::v1::subscribe_notifications_response::Event;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let message = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("a notification in time")
            .expect("stream ok")
            .expect("stream open");
        if let Some(Event::Notification(n)) = message.event {
            return n;
        }
    }
}
