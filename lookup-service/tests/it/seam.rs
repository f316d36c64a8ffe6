//! The validated seam between the services: the lookup service refuses, as UNAUTHENTICATED and
//! naming the claim, every accessor the registry would refuse (so a bad token is never "backend
//! unavailable, retry"); both services describe a bad NHS number in the same words; and a
//! permanent fault between them is not answered "retry", nor reported SERVING.

use cpis_core::status::{reason_of, violated_fields};
use cpis_proto::cpis::common::v1::{
    AccessMode, Accessor, CareSetting, ErrorReason, Organisation, PersonAccessor, accessor::Kind,
};
use cpis_proto::cpis::lookup::v1::lookup_service_client::LookupServiceClient;
use cpis_proto::cpis::registry::v1::{DiscloseRequest, GetChildRecordRequest};
use cpis_testkit::both_backends;
use cpis_testkit::db::Backend;
use tonic::Code;

use crate::harness::{NHS_A, cpp, ed_clinician, person, person_named, start, unscheduled_lookup};

both_backends!(
    malformed_identity_claims_are_unauthenticated_and_record_nothing,
    the_registry_refuses_the_same_accessors_naming_the_field,
    both_services_describe_a_bad_nhs_number_alike,
    a_refused_service_credential_is_not_serving_and_not_retry
);

/// A name of 160 characters and 520 bytes: within a limit of 200 characters, over the limit of
/// 200 bytes.
fn wide_name() -> String {
    let name = "日".repeat(120) + &"𝒜".repeat(40);
    assert_eq!((name.chars().count(), name.len()), (160, 520));
    name
}

async fn malformed_identity_claims_are_unauthenticated_and_record_nothing(backend: Backend) {
    let Some(stack) = start(backend).await else {
        return;
    };
    stack.register_council("AB1").await;
    stack.put("AB1", cpp(NHS_A)).await;
    let name = wide_name();
    let cases = [
        (
            "lower-case org code",
            person(&["B0107"], "rxx01", "EMERGENCY_DEPARTMENT"),
            "org_code",
        ),
        (
            "empty org code",
            person(&["B0107"], "", "EMERGENCY_DEPARTMENT"),
            "org_code",
        ),
        (
            "multi-byte name over 200 bytes",
            person_named(
                "555000000001",
                &name,
                &["B0107"],
                "RXX01",
                "EMERGENCY_DEPARTMENT",
            ),
            "name",
        ),
        (
            "a forged log line in the name",
            person_named(
                "555000000001",
                "Dr A\nlevel=INFO forged",
                &["B0107"],
                "RXX01",
                "EMERGENCY_DEPARTMENT",
            ),
            "name",
        ),
    ];
    for (case, claims, claim) in cases {
        let refused = stack
            .lookup(&claims, NHS_A, AccessMode::Unscheduled)
            .await
            .expect_err(case);
        assert_eq!(
            (refused.code(), reason_of(&refused)),
            (Code::Unauthenticated, Some(ErrorReason::TokenInvalid)),
            "{case}: {refused:?}"
        );
        assert!(
            refused.message().contains(&format!("claim {claim}:")),
            "{case}: the message names the claim: {}",
            refused.message()
        );
    }
    // Nothing reached the registry: no access recorded, no council notified.
    assert_eq!(stack.access_events("AB1", NHS_A).await, 0);
    assert!(stack.notifications("AB1").await.is_empty());

    // A well-formed multi-byte name within the byte limit is recorded as sent.
    let fits = "Dr Zoë Łukasiewicz-Øster";
    let answer = stack
        .lookup(
            &person_named(
                "555000000001",
                fits,
                &["B0107"],
                "RXX01",
                "EMERGENCY_DEPARTMENT",
            ),
            NHS_A,
            AccessMode::Unscheduled,
        )
        .await
        .expect("lookup");
    assert_eq!(answer.recent_accesses[0].accessor_name, fits);
    assert_eq!(stack.access_events("AB1", NHS_A).await, 1);
}

fn accessor(name: &str, org: &str) -> Accessor {
    Accessor {
        kind: Some(Kind::Person(PersonAccessor {
            user_id: "555000000001".into(),
            name: name.into(),
            ..Default::default()
        })),
        organisation: Some(Organisation {
            ods_code: org.into(),
            name: "Test Hospital".into(),
        }),
        care_setting: CareSetting::EmergencyDepartment as i32,
    }
}

async fn the_registry_refuses_the_same_accessors_naming_the_field(backend: Backend) {
    let Some(stack) = start(backend).await else {
        return;
    };
    let cases = [
        (
            accessor("Dr Test", "rxx01"),
            "accessor.organisation.ods_code",
        ),
        (accessor("Dr Test", ""), "accessor.organisation.ods_code"),
        (accessor(&wide_name(), "RXX01"), "accessor.person.name"),
        (accessor("Dr\nForged", "RXX01"), "accessor.person.name"),
    ];
    for (accessor, field) in cases {
        let refused = stack
            .disclosure()
            .await
            .disclose(stack.as_lookup_service(DiscloseRequest {
                nhs_number: NHS_A.into(),
                accessor: Some(accessor),
                access_mode: AccessMode::Unscheduled as i32,
                request_id: String::new(),
            }))
            .await
            .expect_err(field);
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{field}: {refused:?}"
        );
        assert_eq!(violated_fields(&refused), [field]);
    }
}

async fn both_services_describe_a_bad_nhs_number_alike(backend: Backend) {
    let Some(stack) = start(backend).await else {
        return;
    };
    stack.register_council("AB1").await;
    for bad in ["9991234560", "999000001", "0000000000"] {
        let at_lookup = stack
            .lookup(&ed_clinician(), bad, AccessMode::Unscheduled)
            .await
            .expect_err("lookup refuses");
        let at_registry = stack
            .council()
            .await
            .get_child_record(stack.as_council(
                "AB1",
                GetChildRecordRequest {
                    nhs_number: bad.into(),
                    ..Default::default()
                },
            ))
            .await
            .expect_err("registry refuses");
        for refused in [&at_lookup, &at_registry] {
            assert_eq!(
                (refused.code(), reason_of(refused)),
                (Code::InvalidArgument, Some(ErrorReason::NhsNumberInvalid)),
                "{bad}"
            );
        }
        assert_eq!(at_lookup.message(), at_registry.message(), "{bad}");
    }
}

async fn a_refused_service_credential_is_not_serving_and_not_retry(backend: Backend) {
    let Some(stack) = start(backend).await else {
        return;
    };
    stack.register_council("AB1").await;
    stack.put("AB1", cpp(NHS_A)).await;
    // A lookup service presenting a certificate of the right CA but another identity: the
    // registry refuses it every time (PERMISSION_DENIED), so "unavailable, retry" would send the
    // clinician round in circles.
    let stranger = stack.pki.client("stranger", "spiffe://cpis/stranger");
    let misconfigured = stack
        .another_lookup(move |config| {
            config.registry_client_cert = Some(stranger.cert);
            config.registry_client_key = Some(stranger.key);
        })
        .await;
    // It does not claim to be ready while the registry refuses it.
    for _ in 0..3 {
        assert_eq!(
            cpis_testkit::server::health(misconfigured.channel().await, "").await,
            Some(tonic_health::pb::health_check_response::ServingStatus::NotServing)
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let token = stack.nhs_token(&ed_clinician());
    let refused = LookupServiceClient::new(misconfigured.channel().await)
        .lookup_child(unscheduled_lookup(NHS_A, &token))
        .await
        .expect_err("refused");
    assert_eq!(
        (refused.code(), reason_of(&refused)),
        (Code::Internal, Some(ErrorReason::Internal)),
        "{refused:?}"
    );
    assert_eq!(stack.access_events("AB1", NHS_A).await, 0);
}
