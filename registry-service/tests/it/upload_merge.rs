//! What the set-based bulk path (binary COPY and one array UPDATE on PostgreSQL, multi-row
//! inserts on SQLite) must keep: one chunk mixing new, replaced, unchanged, rejected and refused
//! records; several records on one NHS number in one chunk; a retry after an upload died with
//! chunks committed; a database fault in the middle of a chunk's COPY; puts racing an upload of
//! the same records.

use std::time::Duration;

use cpis_proto::cpis::common::v1::{ChildRecord, ErrorReason, InactiveReason};
use cpis_proto::cpis::registry::v1::{BatchOutcome, UploadBatchRequest};
use cpis_testkit::{Stack, both_backends, db::Backend};
use tonic::Code;

use crate::harness::{batch, count_records, counts, cpp_record, nhs, stack, start, upload};

both_backends!(
    one_chunk_mixes_new_replaced_unchanged_rejected_and_refused,
    one_number_several_times_in_one_chunk,
    a_retry_after_an_upload_died_mid_batch,
    a_database_fault_mid_copy_keeps_committed_chunks,
    puts_racing_an_upload_of_the_same_records
);

/// Holding periods of council `ods` for `nhs_number`.
fn periods(reg: &Stack, ods: &str, nhs_number: &str) -> i64 {
    reg.db.count(&format!(
        "SELECT COUNT(*) AS n FROM holding_periods WHERE local_authority = '{ods}' AND nhs_number = '{nhs_number}'"
    ))
}

/// Every holding period of council `ods`.
fn all_periods(reg: &Stack, ods: &str) -> i64 {
    reg.db.count(&format!(
        "SELECT COUNT(*) AS n FROM holding_periods WHERE local_authority = '{ods}'"
    ))
}

/// A record for `n` under another given name.
fn renamed(n: usize, given_name: &str) -> ChildRecord {
    let mut record = cpp_record(&nhs(n));
    record.given_name = given_name.into();
    record
}

async fn one_chunk_mixes_new_replaced_unchanged_rejected_and_refused(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    reg.register_council("AB1").await;
    // Stored before: nhs(0) (to be replaced), nhs(1) (sent unchanged).
    reg.put("AB1", cpp_record(&nhs(0))).await;
    reg.put("AB1", cpp_record(&nhs(1))).await;
    // nhs(4) is superseded by nhs(9) and was never held by AB1.
    reg.db.execute(&format!(
        "INSERT INTO nhs_number_status (nhs_number, reason, replacement_nhs_number, effective_date, update_time) VALUES ('{}', {}, '{}', NULL, 0)",
        nhs(4),
        InactiveReason::Superseded as i32,
        nhs(9)
    ));
    let mut invalid = cpp_record(&nhs(5));
    invalid.family_name.clear();
    let records = vec![
        renamed(0, "Replaced"),  // 1: replaced
        cpp_record(&nhs(1)),     // 2: unchanged
        cpp_record(&nhs(2)),     // 3: new
        invalid,                 // 4: rejected by validation
        cpp_record(&nhs(4)),     // 5: refused: inactive number
        cpp_record(&nhs(3)),     // 6: new
        renamed(2, "Duplicate"), // 7: duplicate of position 3
    ];
    let result = upload(&reg, "AB1", batch("mixed", records))
        .await
        .expect("upload")
        .result
        .expect("result");
    assert_eq!(counts(&result), (7, 4, 3));
    assert_eq!(result.outcome, BatchOutcome::PartiallyLoaded as i32);
    let rejections: Vec<(u64, i32, &str)> = result
        .rejections
        .iter()
        .map(|r| (r.position, r.reason, r.replacement_nhs_number.as_str()))
        .collect();
    assert_eq!(
        rejections,
        vec![
            (4, ErrorReason::FieldRequired as i32, ""),
            // Never held by AB1: the replacement is not told.
            (5, ErrorReason::SupersededNhsNumber as i32, ""),
            (7, ErrorReason::DuplicateInBatch as i32, ""),
        ]
    );
    let replaced = reg.get_record("AB1", &nhs(0)).await.expect("replaced");
    assert_eq!(
        (replaced.given_name.as_str(), replaced.version),
        ("Replaced", 2)
    );
    let unchanged = reg.get_record("AB1", &nhs(1)).await.expect("unchanged");
    assert_eq!(
        unchanged.version, 1,
        "an unchanged record keeps its version"
    );
    for n in [2, 3] {
        let new = reg.get_record("AB1", &nhs(n)).await.expect("new");
        assert_eq!((new.given_name.as_str(), new.version), ("Alex", 1), "{n}");
    }
    assert_eq!(
        reg.get_record("AB1", &nhs(4))
            .await
            .map_err(|s| s.code())
            .err(),
        Some(Code::NotFound),
        "a refused record is not stored"
    );
    // One holding period per record held, opened once: none for the replaced or unchanged
    // records beyond their first, none for the refused one.
    for (n, expected) in [(0, 1), (1, 1), (2, 1), (3, 1), (4, 0), (5, 0)] {
        assert_eq!(periods(&reg, "AB1", &nhs(n)), expected, "periods of {n}");
    }
    assert_eq!(count_records(&reg, "AB1").await, 4);
}

async fn one_number_several_times_in_one_chunk(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    reg.register_council("AB1").await;
    reg.put("AB1", cpp_record(&nhs(1))).await;
    // nhs(0) new and nhs(1) stored, each three times with different content, in one chunk.
    let records = vec![
        renamed(0, "First"),
        renamed(1, "First"),
        renamed(0, "Second"),
        renamed(1, "Second"),
        renamed(0, "Third"),
        renamed(1, "Third"),
    ];
    let result = upload(&reg, "AB1", batch("dupes", records))
        .await
        .expect("upload")
        .result
        .expect("result");
    assert_eq!((result.accepted_count, result.rejected_count), (2, 4));
    assert!(
        result
            .rejections
            .iter()
            .all(|r| r.reason == ErrorReason::DuplicateInBatch as i32 && r.position > 2)
    );
    // The first of each is what is stored, once.
    let new = reg.get_record("AB1", &nhs(0)).await.expect("new");
    assert_eq!((new.given_name.as_str(), new.version), ("First", 1));
    let replaced = reg.get_record("AB1", &nhs(1)).await.expect("replaced");
    assert_eq!(
        (replaced.given_name.as_str(), replaced.version),
        ("First", 2)
    );
    assert_eq!(all_periods(&reg, "AB1"), 2);
}

/// An upload that died after committing chunks leaves its records, its rejections and a claim
/// that lapses. The retry with the same id re-applies the whole batch: what was committed is
/// found unchanged (versions stay 1, no second holding period), the earlier attempt's rejections
/// are not counted twice, and the outcome is the whole batch's.
async fn a_retry_after_an_upload_died_mid_batch(backend: Backend) {
    let Some(reg) = stack(backend)
        .registry(|config| {
            config.upload_chunk = 100;
            config.upload_idle_timeout = Duration::from_millis(500);
        })
        .start()
        .await
    else {
        return;
    };
    reg.register_council("AB1").await;
    // Every tenth record invalid.
    let records: Vec<ChildRecord> = (0..250)
        .map(|i| {
            let mut r = cpp_record(&nhs(i));
            if i % 10 == 9 {
                r.given_name.clear();
            }
            r
        })
        .collect();
    // The first attempt sends everything, then goes silent: two chunks commit, then it ends.
    let (sender, receiver) = tokio::sync::mpsc::channel(300);
    for message in batch("dies", records.clone()) {
        sender.send(message).await.expect("send");
    }
    let status = reg
        .council()
        .await
        .upload_batch(reg.as_council(
            "AB1",
            tokio_stream::wrappers::ReceiverStream::<UploadBatchRequest>::new(receiver),
        ))
        .await
        .expect_err("the first attempt never finishes");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    drop(sender);
    let committed = count_records(&reg, "AB1").await;
    assert!(committed > 0 && committed < 225, "committed {committed}");
    let left = reg.db.count(
        "SELECT COUNT(*) AS n FROM batch_rejections WHERE local_authority = 'AB1' AND batch_id = 'dies'",
    );
    assert!(left > 0, "the dead attempt left rejections behind");
    // A process that dies cannot release its claim: it stays until it lapses.
    reg.db.execute(
        "INSERT INTO upload_claims (local_authority, batch_id, holder, claimed_until) VALUES ('AB1', 'dies', 7, 0)",
    );

    let answer = upload(&reg, "AB1", batch("dies", records))
        .await
        .expect("the retry completes");
    assert!(!answer.replayed);
    let result = answer.result.expect("result");
    assert_eq!(counts(&result), (250, 225, 25));
    let positions: Vec<u64> = result.rejections.iter().map(|r| r.position).collect();
    assert_eq!(positions, (1..=25).map(|k| k * 10).collect::<Vec<u64>>());
    assert_eq!(count_records(&reg, "AB1").await, 225);
    assert_eq!(all_periods(&reg, "AB1"), 225, "one period per record");
    let versions = reg.db.count(
        "SELECT COUNT(*) AS n FROM child_records WHERE local_authority = 'AB1' AND version <> 1",
    );
    assert_eq!(versions, 0, "records committed before are found unchanged");
}

/// Makes every insert of `nhs_number` into child_records fail inside the database, as a fault
/// would (a trigger: on PostgreSQL it fires for each row of a COPY, mid-stream).
fn inject_fault(reg: &Stack, backend: Backend, nhs_number: &str) {
    match backend {
        Backend::Postgres => {
            reg.db.execute(&format!(
                "CREATE FUNCTION injected_fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.nhs_number = '{nhs_number}' THEN RAISE EXCEPTION 'injected fault'; END IF; RETURN NEW; END $$"
            ));
            reg.db.execute(
                "CREATE TRIGGER injected_fault BEFORE INSERT ON child_records FOR EACH ROW EXECUTE FUNCTION injected_fault()",
            );
        }
        Backend::Sqlite => {
            reg.db.execute(&format!(
                "CREATE TRIGGER injected_fault BEFORE INSERT ON child_records WHEN NEW.nhs_number = '{nhs_number}' BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
            ));
        }
    }
}

/// Takes the fault of `inject_fault` away.
fn clear_fault(reg: &Stack, backend: Backend) {
    reg.db.execute(match backend {
        Backend::Postgres => "DROP TRIGGER injected_fault ON child_records",
        Backend::Sqlite => "DROP TRIGGER injected_fault",
    });
}

async fn a_database_fault_mid_copy_keeps_committed_chunks(backend: Backend) {
    let Some(reg) = stack(backend)
        .registry(|config| config.upload_chunk = 100)
        .start()
        .await
    else {
        return;
    };
    reg.register_council("AB1").await;
    let records: Vec<ChildRecord> = (0..350).map(|i| cpp_record(&nhs(i))).collect();
    // The 150th record's insert fails: the second chunk's COPY fails half-way.
    inject_fault(&reg, backend, &nhs(149));
    let status = upload(&reg, "AB1", batch("faulty", records.clone()))
        .await
        .expect_err("the fault ends the upload");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(
        !status.message().contains("injected"),
        "the database's words stay in the log: {status:?}"
    );
    // The first chunk stays committed; nothing of the failed chunk is.
    assert_eq!(count_records(&reg, "AB1").await, 100);
    assert_eq!(all_periods(&reg, "AB1"), 100);

    // The same id again once the fault is gone: the claim was released, the batch completes,
    // and what the first attempt committed is found unchanged.
    clear_fault(&reg, backend);
    let answer = upload(&reg, "AB1", batch("faulty", records))
        .await
        .expect("the retry completes");
    assert!(!answer.replayed);
    assert_eq!(answer.result.expect("result").accepted_count, 350);
    assert_eq!(count_records(&reg, "AB1").await, 350);
    assert_eq!(all_periods(&reg, "AB1"), 350);
    let versions = reg.db.count(
        "SELECT COUNT(*) AS n FROM child_records WHERE local_authority = 'AB1' AND version <> 1",
    );
    assert_eq!(versions, 0);
}

/// Puts of the same records while an upload runs: whichever writes second wins each record,
/// nothing fails, each record is stored once with one holding period, and versions count the
/// changes (a chunk that lost the race to a put ran again on what the put stored).
async fn puts_racing_an_upload_of_the_same_records(backend: Backend) {
    let Some(reg) = stack(backend)
        .registry(|config| config.upload_chunk = 50)
        .start()
        .await
    else {
        return;
    };
    reg.register_council("AB1").await;
    const RECORDS: usize = 1000;
    let uploaded: Vec<ChildRecord> = (0..RECORDS).map(|i| renamed(i, "Upload")).collect();
    let puts = async {
        for i in (0..RECORDS).step_by(7) {
            reg.try_put("AB1", renamed(i, "Put"))
                .await
                .expect("a put beside an upload");
        }
    };
    let (answer, ()) = tokio::join!(upload(&reg, "AB1", batch("raced", uploaded)), puts);
    let result = answer
        .expect("the upload completes")
        .result
        .expect("result");
    assert_eq!(result.accepted_count, RECORDS as u64);
    assert_eq!(count_records(&reg, "AB1").await, RECORDS);
    assert_eq!(all_periods(&reg, "AB1"), RECORDS as i64, "one period each");
    for i in (0..RECORDS).step_by(7) {
        let record = reg.get_record("AB1", &nhs(i)).await.expect("record");
        // Created by one writer at version 1, changed by the other at version 2.
        assert_eq!(record.version, 2, "{i}: {}", record.given_name);
    }
}
