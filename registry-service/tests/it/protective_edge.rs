//! The registry's protective edge: reads, writes and uploads per council are rate limited, each
//! with its own allowance (RESOURCE_EXHAUSTED RATE_LIMITED with a retry delay, nothing applied),
//! without touching other councils; long-lived calls (notification streams, uploads) do not count against the
//! bound on calls in progress, so an open stream never starves the calls beside it.

use std::time::Duration;

use cpis_core::status::{reason_of, retry_delay};
use cpis_proto::cpis::common::v1::ErrorReason;
use cpis_proto::cpis::registry::v1::{GetContactDetailsRequest, ListChildRecordsRequest};
use tonic::Code;

use crate::harness::{batch, count_records, cpp_record, nhs, stack, subscribe, upload};

fn assert_rate_limited<T: std::fmt::Debug>(answer: Result<T, tonic::Status>) {
    let status = answer.expect_err("rate limited");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        reason_of(&status),
        Some(ErrorReason::RateLimited),
        "{status:?}"
    );
    assert!(retry_delay(&status).is_some_and(|d| d > Duration::from_secs(60)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn council_writes_and_uploads_are_rate_limited() {
    let reg = stack(cpis_testkit::db::Backend::Sqlite)
        .registry(|c| {
            // Contacts of two councils, then two records each; one upload each.
            c.council_write_rate = "1/h,burst=3".parse().expect("rate");
            c.council_upload_rate = "1/h,burst=1".parse().expect("rate");
        })
        .start()
        .await
        .expect("sqlite");
    for ods in ["AB1", "CD2"] {
        reg.register_council(ods).await;
    }
    let put = |ods: &'static str, i: usize| reg.try_put(ods, cpp_record(&nhs(i)));
    put("AB1", 0).await.expect("within the burst");
    put("AB1", 1).await.expect("within the burst");
    assert_rate_limited(put("AB1", 2).await);
    // Reads are not writes; another council has its own allowance.
    reg.council()
        .await
        .get_contact_details(reg.as_council("AB1", GetContactDetailsRequest::default()))
        .await
        .expect("a read");
    put("CD2", 3).await.expect("another council");
    assert_eq!(
        count_records(&reg, "AB1").await,
        2,
        "the refused write applied nothing"
    );

    upload(&reg, "AB1", batch("b-1", vec![cpp_record(&nhs(10))]))
        .await
        .expect("the first upload");
    assert_rate_limited(upload(&reg, "AB1", batch("b-2", vec![cpp_record(&nhs(11))])).await);
    assert_eq!(count_records(&reg, "AB1").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn council_reads_are_rate_limited_apart_from_writes() {
    let reg = stack(cpis_testkit::db::Backend::Sqlite)
        .registry(|c| c.council_read_rate = "1/h,burst=3".parse().expect("rate"))
        .start()
        .await
        .expect("sqlite");
    for ods in ["AB1", "CD2"] {
        reg.register_council(ods).await;
    }
    let mut client = reg.council().await;
    // A runaway reader: contacts, a page of records, a record, then refused, whatever it reads.
    client
        .get_contact_details(reg.as_council("AB1", GetContactDetailsRequest::default()))
        .await
        .expect("within the burst");
    let list = || {
        reg.as_council(
            "AB1",
            ListChildRecordsRequest {
                page_size: 10,
                ..Default::default()
            },
        )
    };
    client
        .list_child_records(list())
        .await
        .expect("within the burst");
    reg.put("AB1", cpp_record(&nhs(0))).await;
    reg.get_record("AB1", &nhs(0))
        .await
        .expect("within the burst");
    assert_rate_limited(client.list_child_records(list()).await);
    assert_rate_limited(reg.get_record("AB1", &nhs(0)).await);
    assert_rate_limited(subscribe(&reg, "AB1", None).await);
    // Writes have their own allowance, and another council its own.
    reg.put("AB1", cpp_record(&nhs(1))).await;
    reg.get_record("CD2", &nhs(0))
        .await
        .expect_err("CD2 holds no such record");
    client
        .get_contact_details(reg.as_council("CD2", GetContactDetailsRequest::default()))
        .await
        .expect("another council");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_do_not_hold_the_bound_on_calls_in_progress() {
    let reg = stack(cpis_testkit::db::Backend::Sqlite)
        .registry(|c| c.server.max_in_flight = 1)
        .start()
        .await
        .expect("sqlite");
    reg.register_council("AB1").await;
    // Notification streams held open.
    let _first = subscribe(&reg, "AB1", None).await.expect("subscribe");
    let _second = subscribe(&reg, "AB1", None).await.expect("subscribe again");
    // An upload in progress (its handler runs until the stream ends): counted, it would take
    // the only slot until it finished.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut messages = batch("slow", vec![cpp_record(&nhs(9))]).into_iter();
    tx.send(messages.next().expect("header"))
        .await
        .expect("send");
    let uploading = {
        let mut client = reg.council().await;
        let request = reg.as_council("AB1", tokio_stream::wrappers::ReceiverStream::new(rx));
        tokio::spawn(async move { client.upload_batch(request).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..5 {
        reg.put("AB1", cpp_record(&nhs(i))).await;
    }
    for message in messages {
        tx.send(message).await.expect("send");
    }
    drop(tx);
    uploading
        .await
        .expect("upload task")
        .expect("the upload completes");
    assert_eq!(count_records(&reg, "AB1").await, 6);
}
