//! One-record writes and reads: put, get, list (paged, filtered), delete, versions.

use cpis_core::status::reason_of;
use cpis_proto::cpis::common::v1::{ErrorReason, PlanPeriod};
use cpis_proto::cpis::registry::v1::{
    DeleteChildRecordRequest, ListChildRecordsRequest, PutChildRecordRequest, RecordStateFilter,
};
use cpis_testkit::{both_backends, db::Backend};
use tonic::Code;

use crate::harness::{cpp_record, date, full_record, nhs, start};

both_backends!(
    put_get_delete,
    versions_and_conflicts,
    list_pages_and_filters
);

async fn put_get_delete(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    reg.register_council("AB1").await;
    let mut client = reg.council().await;
    let number = nhs(0);
    let sent = full_record(&number);
    let put = client
        .put_child_record(reg.as_council(
            "AB1",
            PutChildRecordRequest {
                record: Some(sent.clone()),
                ..Default::default()
            },
        ))
        .await
        .expect("put")
        .into_inner();
    assert!(put.created);
    let stored = put.record.expect("record");
    assert_eq!(stored.version, 1);
    assert_eq!(stored.local_authority_ods_code, "AB1");

    let got = reg.get_record("AB1", &number).await.expect("get");
    // Everything sent comes back, output-only fields filled in.
    let mut expected = sent;
    expected.local_authority_ods_code = "AB1".into();
    expected.version = 1;
    expected.create_time = got.create_time;
    expected.update_time = got.update_time;
    assert_eq!(got, expected);

    // Another council does not see it.
    reg.register_council("CD2").await;
    let other = reg
        .get_record("CD2", &number)
        .await
        .expect_err("not theirs");
    assert_eq!(other.code(), Code::NotFound);

    client
        .delete_child_record(reg.as_council(
            "AB1",
            DeleteChildRecordRequest {
                nhs_number: number.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("delete");
    let gone = reg.get_record("AB1", &number).await.expect_err("deleted");
    assert_eq!(
        (gone.code(), reason_of(&gone)),
        (Code::NotFound, Some(ErrorReason::RecordNotFound))
    );
    let again = client
        .delete_child_record(reg.as_council(
            "AB1",
            DeleteChildRecordRequest {
                nhs_number: number,
                ..Default::default()
            },
        ))
        .await
        .expect_err("already deleted");
    assert_eq!(again.code(), Code::NotFound);
}

async fn versions_and_conflicts(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    reg.register_council("AB1").await;
    let mut client = reg.council().await;
    let number = nhs(1);
    let put = |record, expected_version| {
        reg.as_council(
            "AB1",
            PutChildRecordRequest {
                record: Some(record),
                expected_version,
                ..Default::default()
            },
        )
    };

    // expected_version 0: create only.
    let v1 = client
        .put_child_record(put(cpp_record(&number), Some(0)))
        .await
        .expect("create")
        .into_inner();
    assert_eq!(v1.record.expect("r").version, 1);
    let conflict = client
        .put_child_record(put(cpp_record(&number), Some(0)))
        .await
        .expect_err("exists");
    assert_eq!(
        (conflict.code(), reason_of(&conflict)),
        (Code::Aborted, Some(ErrorReason::VersionConflict))
    );

    // The same content again changes nothing: version stays 1.
    let same = client
        .put_child_record(put(cpp_record(&number), None))
        .await
        .expect("same")
        .into_inner();
    assert!(!same.created);
    assert_eq!(same.record.expect("r").version, 1);

    // A change with the right version moves to 2; the stale version is refused and changes nothing.
    let mut ended = cpp_record(&number);
    ended.child_protection_plan = Some(cpis_proto::cpis::common::v1::ChildProtectionPlan {
        period: Some(PlanPeriod {
            start_date: Some(date(2025, 1, 10)),
            end_date: Some(date(2025, 6, 1)),
            delete_date: None,
        }),
    });
    let v2 = client
        .put_child_record(put(ended.clone(), Some(1)))
        .await
        .expect("update")
        .into_inner();
    assert_eq!(v2.record.clone().expect("r").version, 2);
    let stale = client
        .put_child_record(put(cpp_record(&number), Some(1)))
        .await
        .expect_err("stale");
    assert_eq!(stale.code(), Code::Aborted);
    let now = reg.get_record("AB1", &number).await.expect("get");
    assert_eq!(now.version, 2);
    assert_eq!(now.child_protection_plan, ended.child_protection_plan);

    // Delete honours the version too.
    let wrong = client
        .delete_child_record(reg.as_council(
            "AB1",
            DeleteChildRecordRequest {
                nhs_number: number.clone(),
                expected_version: Some(1),
                ..Default::default()
            },
        ))
        .await
        .expect_err("stale delete");
    assert_eq!(wrong.code(), Code::Aborted);
    client
        .delete_child_record(reg.as_council(
            "AB1",
            DeleteChildRecordRequest {
                nhs_number: number,
                expected_version: Some(2),
                ..Default::default()
            },
        ))
        .await
        .expect("delete at version 2");
}

async fn list_pages_and_filters(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    reg.register_council("AB1").await;
    reg.register_council("CD2").await;
    let mut client = reg.council().await;
    // 7 active records, 3 ended (end date in the past), and one for another council.
    for i in 0..10 {
        let mut record = cpp_record(&nhs(i));
        if i >= 7 {
            record.child_protection_plan =
                Some(cpis_proto::cpis::common::v1::ChildProtectionPlan {
                    period: Some(PlanPeriod {
                        start_date: Some(date(2025, 1, 10)),
                        end_date: Some(date(2025, 2, 1)),
                        delete_date: None,
                    }),
                });
        }
        reg.try_put("AB1", record).await.expect("put");
    }
    reg.try_put("CD2", cpp_record(&nhs(20)))
        .await
        .expect("put other council");

    let list_all = |state: RecordStateFilter, page_size: i32| {
        let reg = &reg;
        async move {
            let mut client = reg.council().await;
            let mut token = String::new();
            let mut numbers = Vec::new();
            let mut pages = 0;
            loop {
                let page = client
                    .list_child_records(reg.as_council(
                        "AB1",
                        ListChildRecordsRequest {
                            page_size,
                            page_token: token.clone(),
                            state: state as i32,
                            ..Default::default()
                        },
                    ))
                    .await
                    .expect("list")
                    .into_inner();
                pages += 1;
                assert!(page.records.len() <= usize::try_from(page_size).unwrap_or(0));
                numbers.extend(page.records.into_iter().map(|r| r.nhs_number));
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            (numbers, pages)
        }
    };
    let (all, pages) = list_all(RecordStateFilter::Unspecified, 3).await;
    assert_eq!(all, (0..10).map(nhs).collect::<Vec<_>>());
    assert_eq!(pages, 4);
    let (active, _) = list_all(RecordStateFilter::Active, 4).await;
    assert_eq!(active, (0..7).map(nhs).collect::<Vec<_>>());
    let (ended, _) = list_all(RecordStateFilter::Ended, 100).await;
    assert_eq!(ended, (7..10).map(nhs).collect::<Vec<_>>());

    // A token from one filter is refused for another.
    let first = client
        .list_child_records(reg.as_council(
            "AB1",
            ListChildRecordsRequest {
                page_size: 2,
                ..Default::default()
            },
        ))
        .await
        .expect("list")
        .into_inner();
    let misuse = client
        .list_child_records(reg.as_council(
            "AB1",
            ListChildRecordsRequest {
                page_size: 2,
                page_token: first.next_page_token,
                state: RecordStateFilter::Active as i32,
                ..Default::default()
            },
        ))
        .await
        .expect_err("token for another query");
    assert_eq!(
        (misuse.code(), reason_of(&misuse)),
        (Code::InvalidArgument, Some(ErrorReason::PageTokenInvalid))
    );
}
