//! Claims for development tokens: a council, a clinician (modelled on an NHS CIS2 ID token with
//! a selected role and its activity codes), and a system such as NHS 111 with a responsible
//! person. Signed by the dev stack's key; never accepted by a production deployment's JWKS.

use serde_json::{Value, json};

/// A council with read and write scopes.
pub fn council(ods_code: &str) -> Value {
    json!({ "sub": format!("{ods_code}-case-system"), "ods_code": ods_code, "scope": "read write" })
}

/// A clinician whose selected role carries `activity_code`, at organisation `org_code`, in a
/// care setting (a `CareSetting` name without its prefix).
pub fn clinician(activity_code: &str, org_code: &str, care_setting: &str) -> Value {
    json!({
        "sub": "555021935107",
        "uid": "555021935107",
        "name": "Dr Sam Dev",
        "selected_roleid": "dev-role-1",
        "nhsid_nrbac_roles": [{
            "person_roleid": "dev-role-1",
            "org_code": org_code,
            "role_code": "R8000",
            "role_name": "Clinical Practitioner Access Role",
            "activity_codes": [activity_code]
        }],
        "org_name": format!("Dev organisation {org_code}"),
        "care_setting": care_setting
    })
}

/// An NHS 111 system acting for a named responsible person.
pub fn nhs111_system() -> Value {
    json!({
        "sub": "nhs111-dev-system",
        "system_id": "nhs111-dev-system",
        "system_name": "NHS 111 Clinical Assessment Service (dev)",
        "org_code": "NHS111",
        "org_name": "NHS 111 (dev)",
        "care_setting": "NHS_111",
        "activity_codes": ["B0107"],
        "responsible_person": { "uid": "555021935999", "name": "Pat Responsible", "role_code": "R8000", "role_name": "Clinical Lead" }
    })
}
