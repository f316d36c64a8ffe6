//! The lookup tests' fixtures on top of `cpis_testkit::Stack` (a registry on a fresh SQLite or
//! PostgreSQL database with a fixed clock, and a lookup service in front of it): dates, records
//! and the claims of clinicians and systems.

use cpis_proto::cpis::common::v1::ChildRecord;
use cpis_testkit::{Stack, db::Backend};
use registry_service::Clock;
use serde_json::{Value, json};

pub use cpis_testkit::stack::with_token;

/// Microseconds since the epoch of a UTC noon.
pub fn noon(year: i32, month: u32, day: u32) -> i64 {
    chrono::NaiveDate::from_ymd_opt(year, month, day)
        .and_then(|d| d.and_hms_opt(12, 0, 0))
        .map(|t| t.and_utc().timestamp_micros())
        .expect("valid date")
}

/// Starts a registry, its clock fixed at 2026-06-15 noon UTC, and a lookup service in front of
/// it, on a fresh database of `backend`. `None` when the backend is unavailable outside CI.
pub async fn start(backend: Backend) -> Option<Stack> {
    Stack::builder(backend)
        .clock(Clock::fixed(noon(2026, 6, 15)))
        .with_lookup()
        .start()
        .await
}

pub use cpis_testkit::fixtures::date;

/// Test-range NHS numbers.
pub const NHS_A: &str = "9990000018";
pub const NHS_B: &str = "9990000026";
pub const NHS_C: &str = "9990000034";

/// A CPP record (child born 2019-04-02, plan from 2025-01-10).
pub fn cpp(nhs: &str) -> ChildRecord {
    cpis_testkit::fixtures::cpp(nhs, "CASE-1", date(2019, 4, 2))
}

/// A clinician's claims: one selected role with `codes`, at `org`, in `setting`.
pub fn person(codes: &[&str], org: &str, setting: &str) -> Value {
    person_named("555000000001", "Dr Test", codes, org, setting)
}

/// The usual emergency-department clinician: B0107 at RXX01.
pub fn ed_clinician() -> Value {
    person(&["B0107"], "RXX01", "EMERGENCY_DEPARTMENT")
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

/// An unscheduled lookup of `nhs` with bearer `token`, for a client of a lookup service other
/// than the stack's.
pub fn unscheduled_lookup(
    nhs: &str,
    token: &str,
) -> tonic::Request<cpis_proto::cpis::lookup::v1::LookupChildRequest> {
    with_token(
        cpis_proto::cpis::lookup::v1::LookupChildRequest {
            nhs_number: nhs.into(),
            access_mode: cpis_proto::cpis::common::v1::AccessMode::Unscheduled as i32,
        },
        token,
    )
}
