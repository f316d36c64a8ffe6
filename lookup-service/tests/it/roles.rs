//! The role matrix: activity codes × care settings × access modes × person or system, every
//! token fault, and the request faults. Only allowed lookups are recorded; only allowed
//! unscheduled lookups notify the council.

use std::time::Duration;

use cpis_core::status::{reason_of, violated_fields};
use cpis_proto::cpis::common::v1::{AccessMode, ErrorReason};
use cpis_proto::cpis::lookup::v1::LookupChildRequest;
use cpis_testkit::{both_backends, db::Backend};
use serde_json::json;
use tonic::Code;

use crate::harness::{NHS_A, cpp, ed_clinician, person, start, system, with_token};

both_backends!(role_matrix, token_faults, request_faults);

const UNSCHEDULED_SETTINGS: &[&str] = &[
    "EMERGENCY_DEPARTMENT",
    "NHS_111",
    "MATERNITY_UNIT",
    "AMBULANCE_SERVICE",
];
const SCHEDULED_SETTINGS: &[&str] = &["GP_IN_HOURS", "DENTISTRY", "SCHOOL_NURSING"];

/// The domain's rule, restated: B0107 may make unscheduled accesses from unscheduled settings;
/// B0170 (or B0107) silent reads from scheduled settings; nothing else.
fn allowed(codes: &[&str], setting: &str, mode: AccessMode) -> bool {
    match mode {
        AccessMode::Unscheduled => {
            UNSCHEDULED_SETTINGS.contains(&setting) && codes.contains(&"B0107")
        }
        AccessMode::ScheduledSilentRead => {
            SCHEDULED_SETTINGS.contains(&setting)
                && (codes.contains(&"B0170") || codes.contains(&"B0107"))
        }
        AccessMode::Unspecified => false,
    }
}

async fn role_matrix(backend: Backend) {
    let Some(stack) = start(backend).await else {
        return;
    };
    stack.register_council("AB1").await;
    stack.put("AB1", cpp(NHS_A)).await;

    let code_sets: &[&[&str]] = &[&["B0107"], &["B0170"], &["B0170", "B0107"], &["B0001"], &[]];
    let settings: Vec<&str> = UNSCHEDULED_SETTINGS
        .iter()
        .chain(SCHEDULED_SETTINGS)
        .copied()
        .chain(["", "SPACESHIP", "UNSPECIFIED"])
        .collect();
    let (mut successes, mut unscheduled_successes, mut refusals) = (0, 0, 0);
    for as_system in [false, true] {
        for codes in code_sets {
            for setting in &settings {
                for mode in [AccessMode::Unscheduled, AccessMode::ScheduledSilentRead] {
                    let claims = if as_system {
                        system(codes, setting)
                    } else {
                        person(codes, "RXX01", setting)
                    };
                    let result = stack.lookup(&claims, NHS_A, mode).await;
                    let case = format!(
                        "system={as_system} codes={codes:?} setting={setting} mode={mode:?}"
                    );
                    if allowed(codes, setting, mode) {
                        let answer = result.unwrap_or_else(|s| panic!("{case}: refused {s:?}"));
                        assert_eq!(answer.alerts.len(), 1, "{case}");
                        successes += 1;
                        if mode == AccessMode::Unscheduled {
                            unscheduled_successes += 1;
                        }
                    } else {
                        let status = result.expect_err(&case);
                        assert_eq!(status.code(), Code::PermissionDenied, "{case}");
                        assert_eq!(
                            reason_of(&status),
                            Some(ErrorReason::AccessDenied),
                            "{case}"
                        );
                        refusals += 1;
                    }
                }
            }
        }
    }
    assert!(successes > 0 && refusals > 0 && unscheduled_successes > 0);
    assert_eq!(
        stack.db.count(&format!(
            "SELECT COUNT(*) AS n FROM access_events WHERE nhs_number = '{NHS_A}'"
        )),
        i64::from(successes),
        "one audited access event per allowed lookup, none for refused"
    );
    assert_eq!(
        stack.access_events("AB1", NHS_A).await,
        unscheduled_successes,
        "the council's history holds the unscheduled ones (silent reads are audit only)"
    );
    assert_eq!(
        stack.notifications("AB1").await.len(),
        unscheduled_successes,
        "notifications only for unscheduled access"
    );
}

async fn token_faults(backend: Backend) {
    let Some(stack) = start(backend).await else {
        return;
    };
    stack.register_council("AB1").await;
    stack.put("AB1", cpp(NHS_A)).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let good = ed_clinician();
    let mut expired = good.clone();
    expired["iss"] = json!("cpis");
    expired["aud"] = json!("cpis-lookup");
    expired["exp"] = json!(now - 3600);
    let mut wrong_selected = good.clone();
    wrong_selected["selected_roleid"] = json!("role-9");
    let mut no_user = good.clone();
    no_user["sub"] = json!("");
    no_user["uid"] = json!("");
    let mut system_alone = system(&["B0107"], "NHS_111");
    system_alone["responsible_person"] = json!(null);
    let council_signed = stack
        .council_signer
        .mint(&good, Duration::from_secs(60))
        .expect("mint");

    let tokens: Vec<(&str, Option<String>, ErrorReason)> = vec![
        ("missing", None, ErrorReason::TokenMissing),
        (
            "garbage",
            Some("abc.def.ghi".into()),
            ErrorReason::TokenInvalid,
        ),
        (
            "expired",
            Some(stack.nhs_signer.sign(&expired).expect("sign")),
            ErrorReason::TokenExpired,
        ),
        (
            "registry audience",
            Some(council_signed),
            ErrorReason::TokenInvalid,
        ),
        (
            "selected role not held",
            Some(
                stack
                    .nhs_signer
                    .mint(&wrong_selected, Duration::from_secs(60))
                    .expect("mint"),
            ),
            ErrorReason::TokenInvalid,
        ),
        (
            "no user",
            Some(
                stack
                    .nhs_signer
                    .mint(&no_user, Duration::from_secs(60))
                    .expect("mint"),
            ),
            ErrorReason::TokenInvalid,
        ),
        (
            "system without responsible person",
            Some(
                stack
                    .nhs_signer
                    .mint(&system_alone, Duration::from_secs(60))
                    .expect("mint"),
            ),
            ErrorReason::TokenInvalid,
        ),
    ];
    let mut client = stack.lookup_client().await;
    for (name, token, reason) in tokens {
        let body = LookupChildRequest {
            nhs_number: NHS_A.into(),
            access_mode: AccessMode::Unscheduled as i32,
        };
        let request = match &token {
            Some(t) => with_token(body, t),
            None => tonic::Request::new(body),
        };
        let status = client.lookup_child(request).await.expect_err(name);
        assert_eq!(status.code(), Code::Unauthenticated, "{name}");
        assert_eq!(reason_of(&status), Some(reason), "{name}");
    }
    assert_eq!(
        stack.access_events("AB1", NHS_A).await,
        0,
        "nothing recorded for refused callers"
    );
}

async fn request_faults(backend: Backend) {
    let Some(stack) = start(backend).await else {
        return;
    };
    let ed = ed_clinician();
    for bad in ["9991234560", "999000001", "0000000000", ""] {
        let status = stack
            .lookup(&ed, bad, AccessMode::Unscheduled)
            .await
            .expect_err(bad);
        assert_eq!(status.code(), Code::InvalidArgument, "{bad}");
        assert_eq!(reason_of(&status), Some(ErrorReason::NhsNumberInvalid));
        assert_eq!(violated_fields(&status), vec!["nhs_number".to_owned()]);
    }
    let status = stack
        .lookup(&ed, NHS_A, AccessMode::Unspecified)
        .await
        .expect_err("no mode");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), vec!["access_mode".to_owned()]);

    let token = stack
        .nhs_signer
        .mint(&ed, Duration::from_secs(60))
        .expect("mint");
    let mut request = with_token(
        LookupChildRequest {
            nhs_number: NHS_A.into(),
            access_mode: AccessMode::Unscheduled as i32,
        },
        &token,
    );
    request
        .metadata_mut()
        .insert("x-request-id", "has space".parse().expect("ascii"));
    let status = stack
        .lookup_client()
        .await
        .lookup_child(request)
        .await
        .expect_err("bad request id");
    assert_eq!(
        (status.code(), reason_of(&status)),
        (Code::FailedPrecondition, Some(ErrorReason::HeaderInvalid))
    );

    // No record anywhere: an ordinary, successful, empty answer.
    let empty = stack
        .lookup(&ed, NHS_A, AccessMode::Unscheduled)
        .await
        .expect("no record is not an error");
    assert!(empty.alerts.is_empty() && empty.recent_accesses.is_empty());
}
