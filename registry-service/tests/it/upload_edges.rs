//! Uploads at the edges: a client streaming one small record per message as fast as grpc-python
//! can, a client that stops sending, two uploads of one batch id at once, a claim left behind by
//! an upload that died, and a batch with more rejections than an answer may carry.

use std::time::{Duration, Instant};

use cpis_core::status::reason_of;
use cpis_proto::cpis::common::v1::{ChildRecord, ErrorReason};
use cpis_proto::cpis::registry::v1::{
    BatchHeader, ListBatchRejectionsRequest, RecordRejection, UploadBatchRequest,
    upload_batch_request::Item,
};
use cpis_testkit::{both_backends, db::Backend};
use tonic::Code;

use crate::harness::{batch, count_records, cpp_record, nhs, stack, start, stored_batch, upload};

both_backends!(
    a_fast_python_client_is_never_cut_off,
    a_stalled_upload_times_out_and_keeps_what_it_committed,
    a_second_upload_of_a_running_batch_applies_nothing,
    a_claim_left_by_a_dead_upload_lapses,
    rejections_are_bounded_and_paged
);

/// Records in the fast upload: the figure.
const FAST_RECORDS: usize = 200_000;

fn header(batch_id: &str) -> UploadBatchRequest {
    UploadBatchRequest {
        item: Some(Item::Header(BatchHeader {
            batch_id: batch_id.into(),
            ..Default::default()
        })),
    }
}

fn record(r: ChildRecord) -> UploadBatchRequest {
    UploadBatchRequest {
        item: Some(Item::Record(r)),
    }
}

/// grpc-python sending one record per message as fast as it can (the pattern of the Python
/// example) was cut off with GOAWAY ENHANCE_YOUR_CALM after about a second: the server stopped
/// reading while it committed, and unread small DATA frames exhausted h2's framing budget.
async fn a_fast_python_client_is_never_cut_off(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    reg.register_council("AB1").await;
    let (addr, token) = (reg.registry.addr, reg.council_token("AB1", "read write"));
    let report = tokio::task::spawn_blocking(move || {
        cpis_testkit::tools::python_fast_upload(addr, &token, FAST_RECORDS, "fast-1")
    })
    .await
    .expect("python task");
    let Some(report) = report else {
        return; // tools missing outside CI
    };
    eprintln!("{backend:?}: {FAST_RECORDS} records one per message from grpc-python: {report}");
    assert_eq!(report["error"], serde_json::Value::Null, "{report}");
    assert_eq!(report["accepted"], FAST_RECORDS, "{report}");
    assert_eq!(count_records(&reg, "AB1").await, FAST_RECORDS);
}

/// A stream that stops sending is ended after the idle limit with a clear status; what it
/// committed stays, and a retry with the same id completes at once (the claim was released).
async fn a_stalled_upload_times_out_and_keeps_what_it_committed(backend: Backend) {
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
    let records: Vec<ChildRecord> = (0..250).map(|i| cpp_record(&nhs(i))).collect();
    // The header and 250 records, then silence (the sender stays open).
    let (sender, receiver) = tokio::sync::mpsc::channel(300);
    sender.send(header("stalls")).await.expect("send");
    for r in &records {
        sender.send(record(r.clone())).await.expect("send");
    }
    let started = Instant::now();
    let status = reg
        .council()
        .await
        .upload_batch(reg.as_council("AB1", tokio_stream::wrappers::ReceiverStream::new(receiver)))
        .await
        .expect_err("a stalled upload is ended");
    let waited = started.elapsed();
    assert_eq!(
        (status.code(), reason_of(&status)),
        (Code::DeadlineExceeded, Some(ErrorReason::BatchStalled)),
        "{status:?}"
    );
    assert!(waited < Duration::from_secs(5), "ended after {waited:?}");
    drop(sender);
    // The two full chunks were committed before the stall; the partial third was not.
    assert_eq!(count_records(&reg, "AB1").await, 200);
    let answer = upload(&reg, "AB1", batch("stalls", records))
        .await
        .expect("the retry completes");
    let result = answer.result.expect("result");
    assert_eq!((result.accepted_count, answer.replayed), (250, false));
    assert_eq!(count_records(&reg, "AB1").await, 250);
}

/// While one upload of an id runs, another upload of that id applies nothing: with other
/// content it is refused as reuse once the first completes; with the same content it is answered
/// as a replay. Before the claim, both applied their records and the loser's stayed applied.
async fn a_second_upload_of_a_running_batch_applies_nothing(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    reg.register_council("AB1").await;
    let first: Vec<ChildRecord> = (0..50).map(|i| cpp_record(&nhs(i))).collect();
    let other: Vec<ChildRecord> = (1000..1050).map(|i| cpp_record(&nhs(i))).collect();
    // The first upload sends its header and records, then waits before ending its stream.
    let (sender, receiver) = tokio::sync::mpsc::channel(100);
    sender.send(header("shared")).await.expect("send");
    for r in &first {
        sender.send(record(r.clone())).await.expect("send");
    }
    let mut client = reg.council().await;
    let running = {
        let request = reg.as_council("AB1", tokio_stream::wrappers::ReceiverStream::new(receiver));
        tokio::spawn(async move { client.upload_batch(request).await })
    };
    // Let the first upload claim the id.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let intruder = upload(&reg, "AB1", batch("shared", other.clone()));
    let same = upload(&reg, "AB1", {
        let mut messages = vec![header("shared")];
        messages.extend(first.iter().cloned().map(record));
        messages
    });
    let finish = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(sender);
        running.await.expect("task")
    };
    let (intruder, same, first_answer) = tokio::join!(intruder, same, finish);
    let first_answer = first_answer
        .expect("the first upload completes")
        .into_inner();
    assert_eq!(
        first_answer.result.expect("result").accepted_count,
        50,
        "first"
    );
    let status = intruder.expect_err("other content under a running id");
    assert_eq!(
        (status.code(), reason_of(&status)),
        (Code::AlreadyExists, Some(ErrorReason::BatchIdReused)),
        "{status:?}"
    );
    let same = same.expect("same content under a running id");
    assert!(same.replayed, "answered as a replay");
    assert_eq!(same.result.expect("result").accepted_count, 50);
    for r in &other {
        let refused = reg.get_record("AB1", &r.nhs_number).await;
        assert_eq!(
            refused.map(|_| ()).map_err(|s| s.code()),
            Err(Code::NotFound),
            "nothing of the refused upload is stored"
        );
    }
    assert_eq!(count_records(&reg, "AB1").await, 50);
}

/// An upload that died (a registry killed mid-batch) leaves its claim: a retry while the claim
/// is live waits and is then told the batch is in progress; once it lapses the retry proceeds.
async fn a_claim_left_by_a_dead_upload_lapses(backend: Backend) {
    let Some(reg) = stack(backend)
        .registry(|config| config.upload_idle_timeout = Duration::from_millis(500))
        .start()
        .await
    else {
        return;
    };
    reg.register_council("AB1").await;
    // A live claim (lease one second from now, in microseconds) and a long-lapsed one.
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_micros(),
    )
    .expect("micros");
    reg.db
        .execute(&format!(
            "INSERT INTO upload_claims (local_authority, batch_id, holder, claimed_until) VALUES ('AB1', 'live', 7, {}), ('AB1', 'lapsed', 7, {})",
            now + 60_000_000,
            now - 1_000_000
        ));
    let started = Instant::now();
    let status = upload(&reg, "AB1", batch("live", vec![cpp_record(&nhs(0))]))
        .await
        .expect_err("a live claim");
    assert_eq!(
        (status.code(), reason_of(&status)),
        (Code::Aborted, Some(ErrorReason::BatchInProgress)),
        "{status:?}"
    );
    // It waited one lease (twice the idle limit) for the holder, not forever.
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(count_records(&reg, "AB1").await, 0, "nothing applied");
    let answer = upload(&reg, "AB1", batch("lapsed", vec![cpp_record(&nhs(0))]))
        .await
        .expect("a lapsed claim is taken over");
    assert_eq!(answer.result.expect("result").accepted_count, 1);
}

/// More rejections than an answer carries: the answer (and GetBatch) holds the first 1,000 in
/// position order and says it is truncated; ListBatchRejections pages through every one.
/// Before, the answer carried all of them (a 1,000,000-row batch made a 62 MB answer).
async fn rejections_are_bounded_and_paged(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    reg.register_council("AB1").await;
    const ROWS: usize = 2_600;
    // Every record after the tenth has no given name.
    let records: Vec<ChildRecord> = (0..ROWS)
        .map(|i| {
            let mut r = cpp_record(&nhs(i));
            if i >= 10 {
                r.given_name.clear();
            }
            r
        })
        .collect();
    let answer = upload(&reg, "AB1", batch("many", records.clone()))
        .await
        .expect("upload");
    let result = answer.result.expect("result");
    assert_eq!(
        (result.accepted_count, result.rejected_count),
        (10, ROWS as u64 - 10)
    );
    assert_eq!(result.rejections.len(), 1000);
    assert!(result.rejections_truncated);
    let positions: Vec<u64> = result.rejections.iter().map(|r| r.position).collect();
    assert_eq!(positions, (11..=1010).collect::<Vec<u64>>());

    let stored = stored_batch(&reg, "AB1", "many").await;
    let mut client = reg.council().await;
    assert_eq!(stored.rejections.len(), 1000);

    // Every rejection, a page at a time.
    let (mut all, mut token, mut pages): (Vec<RecordRejection>, String, usize) =
        (Vec::new(), String::new(), 0);
    loop {
        let page = client
            .list_batch_rejections(reg.as_council(
                "AB1",
                ListBatchRejectionsRequest {
                    batch_id: "many".into(),
                    page_size: 700,
                    page_token: token,
                    ..Default::default()
                },
            ))
            .await
            .expect("page")
            .into_inner();
        pages += 1;
        all.extend(page.rejections);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 4);
    let positions: Vec<u64> = all.iter().map(|r| r.position).collect();
    assert_eq!(positions, (11..=ROWS as u64).collect::<Vec<u64>>());
    assert!(all.iter().all(|r| r.field == "given_name"));

    // The replay answers the same bounded outcome.
    let replay = upload(&reg, "AB1", batch("many", records))
        .await
        .expect("replay");
    assert!(replay.replayed);
    assert_eq!(replay.result.expect("result").rejections.len(), 1000);

    // A batch that never completed, and another council's batch, are not found.
    for (ods, id) in [("AB1", "never"), ("CD2", "many")] {
        if ods == "CD2" {
            reg.register_council("CD2").await;
        }
        let status = client
            .list_batch_rejections(reg.as_council(
                ods,
                ListBatchRejectionsRequest {
                    batch_id: id.into(),
                    ..Default::default()
                },
            ))
            .await
            .expect_err("not found");
        assert_eq!(
            (status.code(), reason_of(&status)),
            (Code::NotFound, Some(ErrorReason::BatchNotFound)),
            "{ods} {id}"
        );
    }
}
