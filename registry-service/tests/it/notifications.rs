//! Council notifications: replay then live, resume from the acknowledged cursor with no gap,
//! councils see only their own, silent reads notify nobody, a stalled subscriber is cut off
//! cleanly, heartbeats, shutdown, two registries sharing PostgreSQL, and the NHS-number status
//! import.

use std::time::Duration;

use cpis_core::status::reason_of;
use cpis_proto::cpis::common::v1::{AccessMode, ErrorReason, InactiveReason};
use cpis_proto::cpis::registry::v1::{
    AcknowledgeNotificationsRequest, BatchHeader, ImportNhsNumberStatusChangesRequest,
    NhsNumberStatusChange, UploadBatchRequest, notification,
    subscribe_notifications_response::Event, upload_batch_request::Item,
};
use cpis_testkit::{both_backends, db::Backend};
use tonic::Code;

use crate::harness::{
    cpp_record, disclose, disclose_at, next_sequence, nhs, stack, start, subscribe, subscribe_at,
    with_token,
};

both_backends!(
    replay_then_live_then_resume,
    councils_see_only_their_own,
    silent_reads_notify_nobody,
    stalled_subscriber_is_cut_off,
    heartbeat_and_shutdown,
    nhs_status_import_notifies_holders,
    a_commit_wakes_its_own_councils_feed
);

const WAIT: Duration = Duration::from_secs(5);

async fn replay_then_live_then_resume(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    reg.register_council("AB1").await;
    let mut record = cpp_record(&nhs(0));
    record.local_case_id = "AB1-77".into();
    reg.put("AB1", record).await;
    for _ in 0..3 {
        disclose(&reg, &nhs(0), AccessMode::Unscheduled).await;
    }

    // Replay from the beginning, then live.
    let mut stream = subscribe(&reg, "AB1", Some(0)).await.expect("subscribe");
    for expected in 1..=3 {
        let n = next_sequence(&mut stream, WAIT).await;
        assert_eq!(n.sequence, expected);
        match n.kind {
            Some(notification::Kind::Access(access)) => {
                assert_eq!(access.local_case_id, "AB1-77");
                let event = access.access_event.expect("event");
                assert_eq!(event.nhs_number, nhs(0));
                assert_eq!(event.request_id, "req-1");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    disclose(&reg, &nhs(0), AccessMode::Unscheduled).await;
    assert_eq!(
        next_sequence(&mut stream, WAIT).await.sequence,
        4,
        "live after replay"
    );

    // Acknowledge 2, disconnect, two more happen, reconnect from the stored cursor: 3..=6.
    let acked = acknowledge(&reg, 2).await.expect("ack");
    assert_eq!(acked, 2);
    drop(stream);
    disclose(&reg, &nhs(0), AccessMode::Unscheduled).await;
    disclose(&reg, &nhs(0), AccessMode::Unscheduled).await;
    let mut stream = subscribe(&reg, "AB1", None).await.expect("resubscribe");
    let resumed: Vec<u64> = {
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(next_sequence(&mut stream, WAIT).await.sequence);
        }
        seen
    };
    assert_eq!(
        resumed,
        vec![3, 4, 5, 6],
        "no gap after reconnecting from the acknowledged cursor"
    );

    // The cursor never moves back, and cannot pass what was issued.
    let older = acknowledge(&reg, 1).await.expect("older ack");
    assert_eq!(older, 2);
    let ahead = acknowledge(&reg, 99).await.expect_err("not issued");
    assert_eq!(
        (ahead.code(), reason_of(&ahead)),
        (Code::OutOfRange, Some(ErrorReason::SequenceNotIssued))
    );
    let ahead = subscribe(&reg, "AB1", Some(99))
        .await
        .expect_err("cursor ahead");
    assert_eq!(ahead.code(), Code::OutOfRange);
}

async fn councils_see_only_their_own(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    for ods in ["AB1", "CD2"] {
        reg.register_council(ods).await;
    }
    let _client = reg.council().await;
    for (ods, i) in [("AB1", 0), ("CD2", 1)] {
        reg.try_put(ods, cpp_record(&nhs(i))).await.expect("put");
    }
    let mut ab1 = subscribe(&reg, "AB1", Some(0)).await.expect("AB1");
    let mut cd2 = subscribe(&reg, "CD2", Some(0)).await.expect("CD2");
    disclose(&reg, &nhs(1), AccessMode::Unscheduled).await; // CD2's child
    disclose(&reg, &nhs(0), AccessMode::Unscheduled).await; // AB1's child
    let a = next_sequence(&mut ab1, WAIT).await;
    let c = next_sequence(&mut cd2, WAIT).await;
    let nhs_of = |n: &cpis_proto::cpis::registry::v1::Notification| match &n.kind {
        Some(notification::Kind::Access(a)) => a
            .access_event
            .as_ref()
            .map(|e| e.nhs_number.clone())
            .unwrap_or_default(),
        _ => String::new(),
    };
    assert_eq!((a.sequence, nhs_of(&a)), (1, nhs(0)));
    assert_eq!((c.sequence, nhs_of(&c)), (1, nhs(1)));
    // Nothing else arrives for AB1.
    let extra = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            match ab1.message().await {
                Ok(Some(m)) if matches!(m.event, Some(Event::Notification(_))) => return true,
                Ok(Some(_)) => {}
                _ => return false,
            }
        }
    })
    .await;
    assert!(
        !extra.unwrap_or(false),
        "AB1 must not receive CD2's notification"
    );
}

async fn silent_reads_notify_nobody(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    reg.register_council("AB1").await;
    reg.put("AB1", cpp_record(&nhs(0))).await;
    let answer = disclose(&reg, &nhs(0), AccessMode::ScheduledSilentRead).await;
    assert_eq!(answer.alerts.len(), 1, "disclosed");
    disclose(&reg, &nhs(0), AccessMode::Unscheduled).await;
    let mut stream = subscribe(&reg, "AB1", Some(0)).await.expect("subscribe");
    let first = next_sequence(&mut stream, WAIT).await;
    assert_eq!(
        first.sequence, 1,
        "only the unscheduled access was notified"
    );
    match first.kind {
        Some(notification::Kind::Access(a)) => {
            assert_eq!(
                a.access_event.expect("event").access_mode,
                AccessMode::Unscheduled as i32
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

async fn stalled_subscriber_is_cut_off(backend: Backend) {
    let Some(reg) = stack(backend)
        .registry(|c| {
            c.subscriber_buffer = 2;
            c.subscriber_send_timeout = Duration::from_millis(300);
        })
        .start()
        .await
    else {
        return;
    };
    reg.register_council("AB1").await;
    reg.put("AB1", cpp_record(&nhs(0))).await;
    for _ in 0..150 {
        disclose(&reg, &nhs(0), AccessMode::Unscheduled).await;
    }
    // A client with a tiny HTTP/2 window that does not read: backpressure reaches the server.
    let channel = tonic::transport::Endpoint::from_shared(reg.registry.url())
        .expect("endpoint")
        .initial_stream_window_size(Some(1024))
        .initial_connection_window_size(Some(1024))
        .connect()
        .await
        .expect("connect");
    let mut client =
        cpis_proto::cpis::registry::v1::council_service_client::CouncilServiceClient::new(channel);
    let mut stream = client
        .subscribe_notifications(with_token(
            cpis_proto::cpis::registry::v1::SubscribeNotificationsRequest {
                after_sequence: Some(0),
                ..Default::default()
            },
            &reg.council_token("AB1", "read"),
        ))
        .await
        .expect("subscribe")
        .into_inner();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Reading now drains what was buffered, then the clean error.
    let mut received = 0;
    let status = loop {
        match tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("stream ends in time")
        {
            Ok(Some(_)) => received += 1,
            Ok(None) => panic!("stream closed without telling the subscriber why"),
            Err(status) => break status,
        }
    };
    assert!(
        received < 150,
        "the server stopped sending to the stalled subscriber ({received} delivered)"
    );
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(reason_of(&status), Some(ErrorReason::SubscriberTooSlow));
    // Resuming from the last one received loses nothing.
    let mut resumed = subscribe(&reg, "AB1", Some(received))
        .await
        .expect("resume");
    assert_eq!(
        next_sequence(&mut resumed, WAIT).await.sequence,
        received + 1
    );
}

async fn heartbeat_and_shutdown(backend: Backend) {
    let Some(reg) = stack(backend)
        .registry(|c| c.heartbeat_interval = Duration::from_millis(200))
        .start()
        .await
    else {
        return;
    };
    reg.register_council("AB1").await;
    let mut stream = subscribe(&reg, "AB1", None).await.expect("subscribe");
    let first = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("in time")
        .expect("ok")
        .expect("open");
    assert!(
        matches!(first.event, Some(Event::Heartbeat(_))),
        "{first:?}"
    );

    let stopping = tokio::spawn(reg.registry.stop());
    let status = loop {
        match tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("ends in time")
        {
            Ok(Some(_)) => {}
            Ok(None) => panic!("closed without a reason"),
            Err(status) => break status,
        }
    };
    assert_eq!(
        (status.code(), reason_of(&status)),
        (Code::Unavailable, Some(ErrorReason::ShuttingDown))
    );
    stopping.await.expect("join").expect("clean stop");
}

async fn nhs_status_import_notifies_holders(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    for ods in ["AB1", "CD2", "EF3"] {
        reg.register_council(ods).await;
    }
    let mut client = reg.council().await;
    // nhs(0) is held by AB1 and CD2; nhs(1) by EF3 only.
    for (ods, i) in [("AB1", 0), ("CD2", 0), ("EF3", 1)] {
        reg.try_put(ods, cpp_record(&nhs(i))).await.expect("put");
    }
    let operator = reg.operator_token();
    let changes = vec![
        NhsNumberStatusChange {
            nhs_number: nhs(0),
            reason: InactiveReason::Superseded as i32,
            replacement_nhs_number: nhs(7),
            effective_date: None,
        },
        NhsNumberStatusChange {
            nhs_number: nhs(9),
            reason: InactiveReason::Adopted as i32,
            ..Default::default()
        },
        NhsNumberStatusChange {
            nhs_number: "123".into(),
            reason: InactiveReason::Deceased as i32,
            ..Default::default()
        },
        // A date google.type.Date cannot carry is refused for that change alone.
        NhsNumberStatusChange {
            nhs_number: nhs(8),
            reason: InactiveReason::Adopted as i32,
            effective_date: Some(cpis_testkit::fixtures::date(262_142, 6, 1)),
            ..Default::default()
        },
    ];
    let import = |token: String, changes: Vec<NhsNumberStatusChange>| {
        let reg = &reg;
        async move {
            reg.operator()
                .await
                .import_nhs_number_status_changes(with_token(
                    tokio_stream::iter(
                        changes
                            .into_iter()
                            .map(|c| ImportNhsNumberStatusChangesRequest { change: Some(c) }),
                    ),
                    &token,
                ))
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let council_token = reg.council_token("AB1", "read write");
    let refused = import(council_token, changes.clone())
        .await
        .expect_err("a council is not an operator");
    assert_eq!(refused.code(), Code::PermissionDenied);

    let report = import(operator.clone(), changes.clone())
        .await
        .expect("import");
    assert_eq!(
        (
            report.received_count,
            report.applied_count,
            report.notifications_queued
        ),
        (4, 2, 2)
    );
    let rejected: Vec<(u64, &str)> = report
        .rejections
        .iter()
        .map(|r| (r.position, r.field.as_str()))
        .collect();
    assert_eq!(
        rejected,
        [(3, "change.nhs_number"), (4, "change.effective_date")]
    );
    // Re-importing the same feed notifies nobody again.
    let again = import(operator, changes).await.expect("re-import");
    assert_eq!(again.notifications_queued, 0);

    for ods in ["AB1", "CD2"] {
        let mut stream = subscribe(&reg, ods, Some(0)).await.expect("subscribe");
        let n = next_sequence(&mut stream, WAIT).await;
        match n.kind {
            Some(notification::Kind::InactiveNhsNumber(inactive)) => {
                assert_eq!(inactive.nhs_number, nhs(0));
                assert_eq!(inactive.reason, InactiveReason::Superseded as i32);
                assert_eq!(inactive.replacement_nhs_number, nhs(7));
                assert_eq!(inactive.local_case_id, format!("CASE-{}", nhs(0)));
            }
            other => panic!("{ods}: unexpected {other:?}"),
        }
    }
    let ef3 = reg
        .council()
        .await
        .list_notifications(reg.as_council(
            "EF3",
            cpis_proto::cpis::registry::v1::ListNotificationsRequest::default(),
        ))
        .await
        .expect("list")
        .into_inner();
    assert!(
        ef3.notifications.is_empty(),
        "a council without the number is not notified"
    );

    // Further writes to the superseded number are refused; EF3 never held it, so it is not told
    // the replacement (access_history.rs has the councils that are).
    let status = reg
        .try_put("EF3", cpp_record(&nhs(0)))
        .await
        .expect_err("superseded");
    assert_eq!(
        (status.code(), reason_of(&status)),
        (
            Code::FailedPrecondition,
            Some(ErrorReason::SupersededNhsNumber)
        )
    );
    let batch = vec![
        UploadBatchRequest {
            item: Some(Item::Header(BatchHeader {
                batch_id: "after-import".into(),
                ..Default::default()
            })),
        },
        UploadBatchRequest {
            item: Some(Item::Record(cpp_record(&nhs(2)))),
        },
        UploadBatchRequest {
            item: Some(Item::Record(cpp_record(&nhs(0)))),
        },
        UploadBatchRequest {
            item: Some(Item::Record(cpp_record(&nhs(9)))),
        },
    ];
    let result = client
        .upload_batch(reg.as_council("EF3", tokio_stream::iter(batch)))
        .await
        .expect("batch")
        .into_inner()
        .result
        .expect("result");
    assert_eq!((result.accepted_count, result.rejected_count), (1, 2));
    let rejected: Vec<(u64, i32, String)> = result
        .rejections
        .iter()
        .map(|r| (r.position, r.reason, r.replacement_nhs_number.clone()))
        .collect();
    assert_eq!(
        rejected,
        vec![
            (2, ErrorReason::SupersededNhsNumber as i32, String::new()),
            (3, ErrorReason::NhsNumberInactive as i32, String::new()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_registries_on_one_postgres_wake_each_other() {
    let Some(reg) = start(Backend::Postgres).await else {
        return;
    };
    reg.register_council("AB1").await;
    reg.put("AB1", cpp_record(&nhs(0))).await;
    // A second registry on the same database, polling only once a minute: a prompt delivery
    // can only come from PostgreSQL LISTEN/NOTIFY.
    let second = reg
        .another_registry(|c| c.notification_poll = Duration::from_secs(60))
        .await;
    let mut stream = subscribe_at(&second, &reg.council_token("AB1", "read"), None)
        .await
        .expect("subscribe on the second");
    // Let the subscription reach its wait before the disclosure.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    disclose_at(&reg.internal, &nhs(0), AccessMode::Unscheduled).await;
    let n = next_sequence(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(n.sequence, 1);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "woken in {:?}",
        started.elapsed()
    );
}

/// With polling all but off (once a minute), prompt delivery can only come from the wake-up a
/// commit sends to its own council's feed: each council hears its own at once, and so does a
/// feed started afresh while its predecessor still waits (the wake-up is passed on).
async fn a_commit_wakes_its_own_councils_feed(backend: Backend) {
    let Some(reg) = stack(backend)
        .registry(|c| c.notification_poll = Duration::from_secs(60))
        .start()
        .await
    else {
        return;
    };
    for (i, ods) in ["AB1", "CD2"].into_iter().enumerate() {
        reg.register_council(ods).await;
        reg.put(ods, cpp_record(&nhs(i))).await;
    }
    let mut ab1 = subscribe(&reg, "AB1", None).await.expect("subscribe AB1");
    let mut cd2 = subscribe(&reg, "CD2", None).await.expect("subscribe CD2");
    // Let both feeds reach their wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let prompt = Duration::from_secs(3);

    disclose(&reg, &nhs(0), AccessMode::Unscheduled).await;
    assert_eq!(next_sequence(&mut ab1, prompt).await.sequence, 1);
    disclose(&reg, &nhs(1), AccessMode::Unscheduled).await;
    assert_eq!(next_sequence(&mut cd2, prompt).await.sequence, 1);

    // AB1's only subscriber leaves; its feed waits out its minute. A new subscriber starts a new
    // feed beside it, and still hears the next commit at once.
    drop(ab1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = subscribe(&reg, "AB1", Some(1))
        .await
        .expect("subscribe AB1 again");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for expected in 2..=3 {
        disclose(&reg, &nhs(0), AccessMode::Unscheduled).await;
        assert_eq!(next_sequence(&mut again, prompt).await.sequence, expected);
    }
}

/// Acknowledges council AB1's notifications up to `sequence`; the cursor it now stands at.
async fn acknowledge(reg: &cpis_testkit::Stack, sequence: u64) -> Result<u64, tonic::Status> {
    reg.council()
        .await
        .acknowledge_notifications(reg.as_council(
            "AB1",
            AcknowledgeNotificationsRequest {
                sequence,
                ..Default::default()
            },
        ))
        .await
        .map(|answer| answer.into_inner().acknowledged_sequence)
}
