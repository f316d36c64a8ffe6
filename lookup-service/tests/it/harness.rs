//! Boots a registry (on a fresh SQLite or PostgreSQL database, with an injectable clock) and a
//! lookup service in front of it, both through their own `serve`, and builds the tokens of
//! councils, clinicians and systems.

use std::time::Duration;

use cpis_core::auth::DevSigner;
use cpis_proto::cpis::common::v1::{
    AccessMode, ChildProtectionPlan, ChildRecord, LocalAuthority, PlanPeriod,
};
use cpis_proto::cpis::lookup::v1::{
    LookupChildRequest, LookupChildResponse, lookup_service_client::LookupServiceClient,
};
use cpis_proto::cpis::registry::v1::{
    ListAccessEventsRequest, ListNotificationsRequest, Notification, PutChildRecordRequest,
    SetContactDetailsRequest, council_service_client::CouncilServiceClient,
};
use cpis_proto::google::r#type::Date;
use cpis_testkit::{
    TestServer,
    db::{Backend, TestDb},
};
use registry_service::{Clock, DatabaseUrl};
use secrecy::SecretString;
use serde_json::{Value, json};
use tonic::{Request, Status, transport::Channel};

/// Microseconds since the epoch of a UTC noon.
pub fn noon(year: i32, month: u32, day: u32) -> i64 {
    chrono::NaiveDate::from_ymd_opt(year, month, day)
        .and_then(|d| d.and_hms_opt(12, 0, 0))
        .map(|t| t.and_utc().timestamp_micros())
        .expect("valid date")
}

/// A running registry + lookup pair.
pub struct Stack {
    pub registry: TestServer,
    pub lookup: TestServer,
    pub council_signer: DevSigner,
    pub nhs_signer: DevSigner,
    pub clock: Clock,
    pub db: TestDb,
}

impl Stack {
    /// Starts both on a fresh database of `backend`, the registry's clock fixed at 2026-06-15
    /// noon UTC. `None` when the backend is unavailable outside CI.
    pub async fn start(backend: Backend) -> Option<Self> {
        let db = TestDb::create(backend)?;
        let council_signer = DevSigner::generate("cpis", "cpis-registry").expect("key");
        let nhs_signer = DevSigner::generate("cpis", "cpis-lookup").expect("key");
        let clock = Clock::fixed(noon(2026, 6, 15));
        let token = SecretString::from("test-disclosure-credential".to_owned());

        let mut registry_config = registry_service::Config::with(
            DatabaseUrl::parse(&db.url).expect("url"),
            council_signer.verifier().expect("verifier"),
        );
        registry_config.clock = clock.clone();
        registry_config.disclosure_token = Some(token.clone());
        let registry =
            TestServer::start(|l, s| registry_service::serve(registry_config, l, s)).await;

        let lookup_config = lookup_service::Config::with(
            registry.url(),
            token,
            nhs_signer.verifier().expect("verifier"),
        );
        let lookup = TestServer::start(|l, s| lookup_service::serve(lookup_config, l, s)).await;
        Some(Self {
            registry,
            lookup,
            council_signer,
            nhs_signer,
            clock,
            db,
        })
    }

    /// A council request.
    pub fn as_council<T>(&self, ods: &str, message: T) -> Request<T> {
        let token = self
            .council_signer
            .mint(
                &json!({"ods_code": ods, "scope": "read write"}),
                Duration::from_secs(600),
            )
            .expect("mint");
        with_token(message, &token)
    }

    /// A council client.
    pub async fn council(&self) -> CouncilServiceClient<Channel> {
        CouncilServiceClient::new(self.registry.channel().await)
    }

    /// A lookup client.
    pub async fn lookup_client(&self) -> LookupServiceClient<Channel> {
        LookupServiceClient::new(self.lookup.channel().await)
    }

    /// Registers council `ods` with phones derived from its code.
    pub async fn register_council(&self, ods: &str) {
        self.council()
            .await
            .set_contact_details(self.as_council(
                ods,
                SetContactDetailsRequest {
                    local_authority: Some(LocalAuthority {
                        name: format!("Council {ods}"),
                        emergency_duty_phone: "020 7946 0000".into(),
                        office_hours_phone: "020 7946 0001".into(),
                        ..Default::default()
                    }),
                },
            ))
            .await
            .expect("contacts");
    }

    /// Stores `record` for council `ods`.
    pub async fn put(&self, ods: &str, record: ChildRecord) {
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
            .expect("put record");
    }

    /// Looks `nhs` up with `claims`.
    pub async fn lookup(
        &self,
        claims: &Value,
        nhs: &str,
        mode: AccessMode,
    ) -> Result<LookupChildResponse, Status> {
        let token = self
            .nhs_signer
            .mint(claims, Duration::from_secs(600))
            .expect("mint");
        self.lookup_client()
            .await
            .lookup_child(with_token(
                LookupChildRequest {
                    nhs_number: nhs.into(),
                    access_mode: mode as i32,
                },
                &token,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    /// How many access events the registry holds for `nhs` (seen through council `ods`).
    pub async fn access_events(&self, ods: &str, nhs: &str) -> usize {
        let mut client = self.council().await;
        let (mut token, mut count) = (String::new(), 0);
        loop {
            let page = client
                .list_access_events(self.as_council(
                    ods,
                    ListAccessEventsRequest {
                        nhs_number: nhs.into(),
                        page_size: 1000,
                        page_token: token,
                        ..Default::default()
                    },
                ))
                .await
                .expect("access events")
                .into_inner();
            count += page.access_events.len();
            if page.next_page_token.is_empty() {
                return count;
            }
            token = page.next_page_token;
        }
    }

    /// Every notification queued for council `ods`.
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

/// `message` with `authorization: Bearer token`.
pub fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

/// A calendar date.
pub fn date(year: i32, month: i32, day: i32) -> Date {
    Date { year, month, day }
}

/// Test-range NHS numbers.
pub const NHS_A: &str = "9990000018";
pub const NHS_B: &str = "9990000026";
pub const NHS_C: &str = "9990000034";

/// A CPP record (child born 2019-04-02, plan from 2025-01-10).
pub fn cpp(nhs: &str) -> ChildRecord {
    ChildRecord {
        nhs_number: nhs.into(),
        local_case_id: "CASE-1".into(),
        given_name: "Alex".into(),
        family_name: "Example".into(),
        date_of_birth: Some(date(2019, 4, 2)),
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

/// A clinician's claims: one selected role with `codes`, at `org`, in `setting`.
pub fn person(codes: &[&str], org: &str, setting: &str) -> Value {
    person_named("555000000001", "Dr Test", codes, org, setting)
}

/// As `person`, for a given user.
pub fn person_named(uid: &str, name: &str, codes: &[&str], org: &str, setting: &str) -> Value {
    json!({
        "sub": uid, "uid": uid, "name": name, "selected_roleid": "role-1",
        "nhsid_nrbac_roles": [
            { "person_roleid": "role-0", "org_code": "OTHER1", "role_code": "R0001", "role_name": "Other", "activity_codes": ["B0107"] },
            { "person_roleid": "role-1", "org_code": org, "role_code": "R8000", "role_name": "Clinical Practitioner", "activity_codes": codes }
        ],
        "org_name": format!("Org {org}"),
        "care_setting": setting
    })
}

/// A system's claims (e.g. NHS 111) with a responsible person.
pub fn system(codes: &[&str], setting: &str) -> Value {
    json!({
        "system_id": "sys-111", "system_name": "NHS 111 CAS", "org_code": "NHS111", "org_name": "NHS 111",
        "care_setting": setting, "activity_codes": codes,
        "responsible_person": { "uid": "555000000099", "name": "Pat Lead", "role_code": "R8000", "role_name": "Clinical Lead" }
    })
}
