//! Bulk upload: per-record outcomes, accepted records kept when others fail, idempotent retry,
//! refused reuse of a batch id, malformed streams, chunked commits of a large batch.

use cpis_core::status::reason_of;
use cpis_proto::cpis::common::v1::{ChildRecord, ErrorReason};
use cpis_proto::cpis::registry::v1::{
    BatchHeader, BatchOutcome, UploadBatchRequest, upload_batch_request::Item,
};
use cpis_testkit::{both_backends, db::Backend};
use tonic::Code;

use crate::harness::{
    batch, count_records, counts, cpp_record, nhs, nhs_numbers, start, stored_batch, upload,
};

both_backends!(
    mixed_batch,
    retry_is_idempotent,
    reused_id_with_other_content,
    malformed_streams,
    large_batch_in_chunks
);

async fn mixed_batch(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    reg.register_council("AB1").await;
    let mut records: Vec<ChildRecord> = (0..10).map(|i| cpp_record(&nhs(i))).collect();
    records[2].nhs_number = "9991234560".into(); // position 3: bad check digit
    records[4].child_protection_plan = None; // position 5: no plan at all
    records[7].nhs_number = nhs(0); // position 8: duplicate of position 1
    let case_ids: Vec<String> = records.iter().map(|r| r.local_case_id.clone()).collect();

    let response = upload(&reg, "AB1", batch("nightly-1", records))
        .await
        .expect("batch");
    assert!(!response.replayed);
    let result = response.result.expect("result");
    assert_eq!(counts(&result), (10, 7, 3));
    assert_eq!(result.outcome, BatchOutcome::PartiallyLoaded as i32);
    assert_eq!(result.sequence_number, 42);
    assert!(!result.expected_record_count_mismatch);
    let summary: Vec<(u64, &str, i32, &str)> = result
        .rejections
        .iter()
        .map(|r| {
            (
                r.position,
                r.local_case_id.as_str(),
                r.reason,
                r.field.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                3,
                case_ids[2].as_str(),
                ErrorReason::NhsNumberInvalid as i32,
                "nhs_number"
            ),
            (
                5,
                case_ids[4].as_str(),
                ErrorReason::PlanRequired as i32,
                "record"
            ),
            (
                8,
                case_ids[7].as_str(),
                ErrorReason::DuplicateInBatch as i32,
                "nhs_number"
            ),
        ]
    );
    assert!(result.rejections.iter().all(|r| !r.message.is_empty()));
    assert_eq!(count_records(&reg, "AB1").await, 7);

    // The stored outcome can be fetched again.
    let fetched = stored_batch(&reg, "AB1", "nightly-1").await;
    assert_eq!(fetched, result);

    // Every record rejected, or none sent: NONE_LOADED.
    let bad: Vec<ChildRecord> = (0..2).map(|_| ChildRecord::default()).collect();
    let none = upload(&reg, "AB1", batch("all-bad", bad))
        .await
        .expect("batch")
        .result
        .expect("result");
    assert_eq!(
        (none.outcome, none.accepted_count, none.rejected_count),
        (BatchOutcome::NoneLoaded as i32, 0, 2)
    );
    let empty = upload(&reg, "AB1", batch("empty", vec![]))
        .await
        .expect("batch")
        .result
        .expect("result");
    assert_eq!(
        (empty.outcome, empty.received_count),
        (BatchOutcome::NoneLoaded as i32, 0)
    );
    let all = upload(&reg, "AB1", batch("all-good", vec![cpp_record(&nhs(50))]))
        .await
        .expect("batch")
        .result
        .expect("result");
    assert_eq!(all.outcome, BatchOutcome::AllLoaded as i32);
}

async fn retry_is_idempotent(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    reg.register_council("AB1").await;
    let records: Vec<ChildRecord> = (0..5).map(|i| cpp_record(&nhs(i))).collect();
    let first = upload(&reg, "AB1", batch("b-7", records.clone()))
        .await
        .expect("first")
        .result
        .expect("result");

    // The council changes one record afterwards; a retry of the old batch must not undo it.
    let mut newer = cpp_record(&nhs(0));
    newer.given_name = "Newer".into();
    reg.put("AB1", newer).await;

    let retry = upload(&reg, "AB1", batch("b-7", records))
        .await
        .expect("retry");
    assert!(retry.replayed);
    assert_eq!(retry.result.expect("result"), first);
    let record = reg.get_record("AB1", &nhs(0)).await.expect("get");
    assert_eq!((record.given_name.as_str(), record.version), ("Newer", 2));
}

async fn reused_id_with_other_content(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    reg.register_council("AB1").await;
    upload(&reg, "AB1", batch("b-1", vec![cpp_record(&nhs(0))]))
        .await
        .expect("first");
    let status = upload(&reg, "AB1", batch("b-1", vec![cpp_record(&nhs(1))]))
        .await
        .expect_err("other content");
    assert_eq!(
        (status.code(), reason_of(&status)),
        (Code::AlreadyExists, Some(ErrorReason::BatchIdReused))
    );
    assert_eq!(
        count_records(&reg, "AB1").await,
        1,
        "nothing from the refused retry is stored"
    );
    // Batch ids are per council: another council may use the same id.
    reg.register_council("CD2").await;
    upload(&reg, "CD2", batch("b-1", vec![cpp_record(&nhs(1))]))
        .await
        .expect("other council, same id");
}

async fn malformed_streams(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    reg.register_council("AB1").await;
    let record = || UploadBatchRequest {
        item: Some(Item::Record(cpp_record(&nhs(0)))),
    };
    let header = |id: &str| UploadBatchRequest {
        item: Some(Item::Header(BatchHeader {
            batch_id: id.into(),
            ..Default::default()
        })),
    };
    let cases: Vec<(&str, Vec<UploadBatchRequest>)> = vec![
        ("no header", vec![record()]),
        ("empty stream", vec![]),
        ("second header", vec![header("h1"), record(), header("h2")]),
        (
            "empty message",
            vec![header("h3"), UploadBatchRequest { item: None }],
        ),
        ("empty batch id", vec![header(""), record()]),
        ("batch id with a space", vec![header("a b"), record()]),
        (
            "batch id too long",
            vec![header(&"x".repeat(129)), record()],
        ),
    ];
    for (name, messages) in cases {
        let status = upload(&reg, "AB1", messages).await.expect_err(name);
        assert_eq!(
            (status.code(), reason_of(&status)),
            (Code::InvalidArgument, Some(ErrorReason::BatchMalformed)),
            "{name}"
        );
    }
    upload(&reg, "AB1", vec![header(&"x".repeat(128)), record()])
        .await
        .expect("128-character id is fine");
}

async fn large_batch_in_chunks(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    reg.register_council("AB1").await;
    // 100,000 records (the nightly-extract size) through 500-record chunks, every 100th invalid.
    let records: Vec<ChildRecord> = nhs_numbers()
        .take(100_000)
        .enumerate()
        .map(|(i, n)| {
            let mut r = cpp_record(&n);
            if i % 100 == 99 {
                r.given_name.clear();
            }
            r
        })
        .collect();
    let result = upload(&reg, "AB1", batch("big", records))
        .await
        .expect("batch")
        .result
        .expect("result");
    assert_eq!(counts(&result), (100_000, 99_000, 1_000));
    assert!(
        result
            .rejections
            .iter()
            .all(|r| r.position % 100 == 0 && r.field == "given_name")
    );
    assert_eq!(count_records(&reg, "AB1").await, 99_000);
}
