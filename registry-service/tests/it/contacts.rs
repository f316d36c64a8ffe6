//! Council contact details: set, get, validation, and the rule that a council without an
//! emergency duty number cannot store records.

use cpis_core::status::{reason_of, violated_fields};
use cpis_proto::cpis::common::v1::{ErrorReason, LocalAuthority};
use cpis_proto::cpis::registry::v1::{
    BatchHeader, GetContactDetailsRequest, SetContactDetailsRequest, UploadBatchRequest,
    upload_batch_request::Item,
};
use cpis_testkit::{both_backends, db::Backend};
use tonic::Code;

use crate::harness::{cpp_record, nhs, start};

both_backends!(
    set_then_get_contacts,
    records_need_contact_details,
    contact_validation
);

async fn set_then_get_contacts(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    let mut client = reg.council().await;
    let missing = client
        .get_contact_details(reg.as_council("AB1", GetContactDetailsRequest::default()))
        .await
        .expect_err("none yet");
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        reason_of(&missing),
        Some(ErrorReason::ContactDetailsMissing)
    );

    reg.register_council("AB1").await;
    let got = contacts(&mut client, &reg).await;
    assert_eq!(got.ods_code, "AB1");
    assert_eq!(got.name, "Council AB1");
    assert_eq!(got.emergency_duty_phone, "020 7946 0000");
    assert_eq!(got.office_hours_phone, "020 7946 0001");
    assert!(got.update_time.is_some());

    // Replacing drops the optional office phone when it is not sent.
    client
        .set_contact_details(reg.as_council(
            "AB1",
            SetContactDetailsRequest {
                local_authority: Some(LocalAuthority {
                    name: "Renamed".into(),
                    emergency_duty_phone: "+44 20 7946 0999".into(),
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect("replace");
    let got = contacts(&mut client, &reg).await;
    assert_eq!(
        (got.name.as_str(), got.office_hours_phone.as_str()),
        ("Renamed", "")
    );
}

async fn records_need_contact_details(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    let mut client = reg.council().await;
    let status = reg
        .try_put("NEW1", cpp_record(&nhs(0)))
        .await
        .expect_err("no contacts");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason_of(&status), Some(ErrorReason::ContactDetailsMissing));

    let header = UploadBatchRequest {
        item: Some(Item::Header(BatchHeader {
            batch_id: "b1".into(),
            ..Default::default()
        })),
    };
    let record = UploadBatchRequest {
        item: Some(Item::Record(cpp_record(&nhs(1)))),
    };
    let status = client
        .upload_batch(reg.as_council("NEW1", tokio_stream::iter(vec![header, record])))
        .await
        .expect_err("no contacts");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason_of(&status), Some(ErrorReason::ContactDetailsMissing));
}

async fn contact_validation(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    let mut client = reg.council().await;
    let cases: Vec<(LocalAuthority, &str, ErrorReason)> = vec![
        (
            LocalAuthority {
                name: "X".into(),
                ..Default::default()
            },
            "local_authority.emergency_duty_phone",
            ErrorReason::FieldRequired,
        ),
        (
            LocalAuthority {
                name: "X".into(),
                emergency_duty_phone: "020 794".into(),
                ..Default::default()
            },
            "local_authority.emergency_duty_phone",
            ErrorReason::FieldFormat,
        ),
        (
            LocalAuthority {
                name: "X".into(),
                emergency_duty_phone: "0207946000x".into(),
                ..Default::default()
            },
            "local_authority.emergency_duty_phone",
            ErrorReason::FieldFormat,
        ),
        (
            LocalAuthority {
                name: "X".into(),
                emergency_duty_phone: "02079460000".into(),
                office_hours_phone: "12".into(),
                ..Default::default()
            },
            "local_authority.office_hours_phone",
            ErrorReason::FieldFormat,
        ),
        (
            LocalAuthority {
                emergency_duty_phone: "02079460000".into(),
                ..Default::default()
            },
            "local_authority.name",
            ErrorReason::FieldRequired,
        ),
        (
            LocalAuthority {
                name: "N".repeat(201),
                emergency_duty_phone: "02079460000".into(),
                ..Default::default()
            },
            "local_authority.name",
            ErrorReason::FieldTooLong,
        ),
    ];
    for (la, field, reason) in cases {
        let status = client
            .set_contact_details(reg.as_council(
                "AB1",
                SetContactDetailsRequest {
                    local_authority: Some(la),
                },
            ))
            .await
            .expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert_eq!(reason_of(&status), Some(reason), "{field}");
        assert_eq!(violated_fields(&status), vec![field.to_owned()]);
    }
    // Boundaries that pass: 10 and 15 digits, a 200-character name.
    for (name, phone) in [
        ("N".repeat(200), "0123456789"),
        ("N".into(), "+441234567890123"),
    ] {
        client
            .set_contact_details(reg.as_council(
                "AB1",
                SetContactDetailsRequest {
                    local_authority: Some(LocalAuthority {
                        name,
                        emergency_duty_phone: phone.into(),
                        ..Default::default()
                    }),
                },
            ))
            .await
            .expect("valid at the boundary");
    }
}

/// Council AB1's contact details as GetContactDetails answers them.
async fn contacts(
    client: &mut cpis_proto::cpis::registry::v1::council_service_client::CouncilServiceClient<
        tonic::transport::Channel,
    >,
    reg: &cpis_testkit::Stack,
) -> LocalAuthority {
    client
        .get_contact_details(reg.as_council("AB1", GetContactDetailsRequest::default()))
        .await
        .expect("get")
        .into_inner()
        .local_authority
        .expect("contacts")
}
