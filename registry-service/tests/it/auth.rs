//! Council authentication and scoping: token faults are UNAUTHENTICATED; another council's data
//! is PERMISSION_DENIED for every RPC and changes nothing; a missing scope is PERMISSION_DENIED.

use std::time::Duration;

use cpis_core::status::reason_of;
use cpis_proto::cpis::common::v1::{ErrorReason, LocalAuthority};
use cpis_proto::cpis::registry::v1::{
    AcknowledgeNotificationsRequest, BatchHeader, DeleteChildRecordRequest, GetBatchRequest,
    GetChildRecordRequest, GetContactDetailsRequest, ListAccessEventsRequest,
    ListChildRecordsRequest, ListNotificationsRequest, PutChildRecordRequest,
    SetContactDetailsRequest, SubscribeNotificationsRequest, UploadBatchRequest,
    upload_batch_request::Item,
};
use cpis_testkit::{both_backends, db::Backend};
use tonic::{Code, Status};

use crate::harness::{cpp_record, nhs, signer, start, with_token};

both_backends!(every_rpc_refuses_another_council, token_faults, scopes);

async fn every_rpc_refuses_another_council(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    reg.register_council("VIC1").await;
    let mut client = reg.council().await;
    let victim_record = cpp_record(&nhs(0));
    reg.try_put("VIC1", victim_record.clone())
        .await
        .expect("victim's record");

    let other = "VIC1".to_owned();
    let mut refusals: Vec<(&str, Status)> = Vec::new();
    refusals.push((
        "SetContactDetails",
        client
            .set_contact_details(reg.as_council(
                "ATK2",
                SetContactDetailsRequest {
                    local_authority: Some(LocalAuthority {
                        ods_code: other.clone(),
                        name: "Hijacked".into(),
                        emergency_duty_phone: "02079460000".into(),
                        ..Default::default()
                    }),
                },
            ))
            .await
            .expect_err("refused"),
    ));
    refusals.push((
        "GetContactDetails",
        client
            .get_contact_details(reg.as_council(
                "ATK2",
                GetContactDetailsRequest {
                    local_authority_ods_code: other.clone(),
                },
            ))
            .await
            .expect_err("refused"),
    ));
    let mut changed = victim_record.clone();
    changed.given_name = "Changed".into();
    refusals.push((
        "PutChildRecord",
        client
            .put_child_record(reg.as_council(
                "ATK2",
                PutChildRecordRequest {
                    local_authority_ods_code: other.clone(),
                    record: Some(changed.clone()),
                    expected_version: None,
                },
            ))
            .await
            .expect_err("refused"),
    ));
    refusals.push((
        "GetChildRecord",
        client
            .get_child_record(reg.as_council(
                "ATK2",
                GetChildRecordRequest {
                    local_authority_ods_code: other.clone(),
                    nhs_number: nhs(0),
                },
            ))
            .await
            .expect_err("refused"),
    ));
    refusals.push((
        "ListChildRecords",
        client
            .list_child_records(reg.as_council(
                "ATK2",
                ListChildRecordsRequest {
                    local_authority_ods_code: other.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect_err("refused"),
    ));
    refusals.push((
        "DeleteChildRecord",
        client
            .delete_child_record(reg.as_council(
                "ATK2",
                DeleteChildRecordRequest {
                    local_authority_ods_code: other.clone(),
                    nhs_number: nhs(0),
                    expected_version: None,
                },
            ))
            .await
            .expect_err("refused"),
    ));
    let batch = vec![
        UploadBatchRequest {
            item: Some(Item::Header(BatchHeader {
                local_authority_ods_code: other.clone(),
                batch_id: "x1".into(),
                ..Default::default()
            })),
        },
        UploadBatchRequest {
            item: Some(Item::Record(changed)),
        },
    ];
    refusals.push((
        "UploadBatch",
        client
            .upload_batch(reg.as_council("ATK2", tokio_stream::iter(batch)))
            .await
            .expect_err("refused"),
    ));
    refusals.push((
        "GetBatch",
        client
            .get_batch(reg.as_council(
                "ATK2",
                GetBatchRequest {
                    local_authority_ods_code: other.clone(),
                    batch_id: "x1".into(),
                },
            ))
            .await
            .expect_err("refused"),
    ));
    refusals.push((
        "ListAccessEvents",
        client
            .list_access_events(reg.as_council(
                "ATK2",
                ListAccessEventsRequest {
                    local_authority_ods_code: other.clone(),
                    nhs_number: nhs(0),
                    ..Default::default()
                },
            ))
            .await
            .expect_err("refused"),
    ));
    refusals.push((
        "SubscribeNotifications",
        client
            .subscribe_notifications(reg.as_council(
                "ATK2",
                SubscribeNotificationsRequest {
                    local_authority_ods_code: other.clone(),
                    after_sequence: None,
                },
            ))
            .await
            .expect_err("refused"),
    ));
    refusals.push((
        "AcknowledgeNotifications",
        client
            .acknowledge_notifications(reg.as_council(
                "ATK2",
                AcknowledgeNotificationsRequest {
                    local_authority_ods_code: other.clone(),
                    sequence: 1,
                },
            ))
            .await
            .expect_err("refused"),
    ));
    refusals.push((
        "ListNotifications",
        client
            .list_notifications(reg.as_council(
                "ATK2",
                ListNotificationsRequest {
                    local_authority_ods_code: other.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect_err("refused"),
    ));
    assert_eq!(refusals.len(), 12, "one refusal per council RPC");
    for (rpc, status) in refusals {
        assert_eq!(status.code(), Code::PermissionDenied, "{rpc}: {status:?}");
        assert_eq!(
            reason_of(&status),
            Some(ErrorReason::WrongLocalAuthority),
            "{rpc}"
        );
    }

    // Nothing changed for the victim.
    let contacts = client
        .get_contact_details(reg.as_council("VIC1", GetContactDetailsRequest::default()))
        .await
        .expect("victim contacts")
        .into_inner()
        .local_authority
        .expect("contacts");
    assert_eq!(contacts.name, "Council VIC1");
    let record = client
        .get_child_record(reg.as_council(
            "VIC1",
            GetChildRecordRequest {
                nhs_number: nhs(0),
                ..Default::default()
            },
        ))
        .await
        .expect("victim record")
        .into_inner()
        .record
        .expect("record");
    assert_eq!((record.given_name.as_str(), record.version), ("Alex", 1));
}

async fn token_faults(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    let mut client = reg.council().await;
    let claims = serde_json::json!({ "ods_code": "AB1", "scope": "read write" });
    let stranger = signer();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let cases: Vec<(&str, Option<String>, ErrorReason)> = vec![
        ("missing", None, ErrorReason::TokenMissing),
        ("not a jwt", Some("not-a-token".into()), ErrorReason::TokenInvalid),
        ("unknown key", Some(stranger.mint(&claims, Duration::from_secs(60)).expect("mint")), ErrorReason::TokenInvalid),
        (
            "wrong issuer",
            Some(reg.council_signer.sign(&serde_json::json!({"iss": "evil", "aud": "cpis-registry", "exp": now + 60, "ods_code": "AB1", "scope": "read"})).expect("sign")),
            ErrorReason::TokenInvalid,
        ),
        (
            "wrong audience",
            Some(reg.council_signer.sign(&serde_json::json!({"iss": "cpis", "aud": "cpis-lookup", "exp": now + 60, "ods_code": "AB1", "scope": "read"})).expect("sign")),
            ErrorReason::TokenInvalid,
        ),
        (
            "expired",
            Some(reg.council_signer.sign(&serde_json::json!({"iss": "cpis", "aud": "cpis-registry", "exp": now - 3600, "ods_code": "AB1", "scope": "read"})).expect("sign")),
            ErrorReason::TokenExpired,
        ),
        (
            "no expiry",
            Some(reg.council_signer.sign(&serde_json::json!({"iss": "cpis", "aud": "cpis-registry", "ods_code": "AB1", "scope": "read"})).expect("sign")),
            ErrorReason::TokenInvalid,
        ),
        (
            "no council",
            Some(reg.council_signer.mint(&serde_json::json!({"scope": "read"}), Duration::from_secs(60)).expect("mint")),
            ErrorReason::TokenInvalid,
        ),
    ];
    for (name, token, reason) in cases {
        let request = match &token {
            Some(token) => with_token(GetContactDetailsRequest::default(), token),
            None => tonic::Request::new(GetContactDetailsRequest::default()),
        };
        let status = client.get_contact_details(request).await.expect_err(name);
        assert_eq!(status.code(), Code::Unauthenticated, "{name}");
        assert_eq!(reason_of(&status), Some(reason), "{name}");
    }
}

async fn scopes(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    reg.register_council("AB1").await;
    let mut client = reg.council().await;
    let read_only = reg.council_token("AB1", "read");
    let status = client
        .put_child_record(with_token(
            PutChildRecordRequest {
                record: Some(cpp_record(&nhs(0))),
                ..Default::default()
            },
            &read_only,
        ))
        .await
        .expect_err("read-only token cannot write");
    assert_eq!(
        (status.code(), reason_of(&status)),
        (Code::PermissionDenied, Some(ErrorReason::ScopeMissing))
    );
    let write_only = reg.council_token("AB1", "write");
    let status = client
        .get_contact_details(with_token(GetContactDetailsRequest::default(), &write_only))
        .await
        .expect_err("write-only token cannot read");
    assert_eq!(status.code(), Code::PermissionDenied);
    client
        .get_contact_details(with_token(GetContactDetailsRequest::default(), &read_only))
        .await
        .expect("read scope reads");
}
