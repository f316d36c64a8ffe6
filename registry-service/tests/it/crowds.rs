//! Subscribers at bounded cost: a thousand idle notification streams share one feed per council,
//! so they barely touch the database, every one still gets each new notification, and the
//! subscriber limits refuse the excess with RESOURCE_EXHAUSTED. Bounded in count and time; the
//! precise throughput ratio is the benchmark's (`cpis-bench notify`), this is the floor a
//! regression must not cross.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cpis_core::status::reason_of;
use cpis_proto::cpis::common::v1::{AccessMode, ErrorReason};
use cpis_proto::cpis::registry::v1::{
    DiscloseRequest, SubscribeNotificationsRequest, SubscribeNotificationsResponse,
    council_service_client::CouncilServiceClient,
    disclosure_service_client::DisclosureServiceClient,
};
use cpis_testkit::{Stack, both_backends, db::Backend};
use tonic::{Code, Streaming, transport::Channel};

use crate::harness::{cpp_record, disclose, ed_clinician, next_sequence, nhs, stack, with_token};

both_backends!(
    a_thousand_idle_subscribers_cost_little_and_all_hear,
    subscriber_limits_refuse_the_excess
);

const SUBSCRIBERS: usize = 1000;
/// Connections the subscribers share (each carries at most 256 streams).
const CONNECTIONS: usize = 8;

async fn open(
    channel: Channel,
    token: &str,
) -> Result<Streaming<SubscribeNotificationsResponse>, tonic::Status> {
    CouncilServiceClient::new(channel)
        .subscribe_notifications(with_token(SubscribeNotificationsRequest::default(), token))
        .await
        .map(tonic::Response::into_inner)
}

/// Disclosures per second from 4 workers over `span`.
async fn disclosure_rate(reg: &Stack, span: Duration) -> f64 {
    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    let started = Instant::now();
    let workers = (0..4).map(|worker| {
        let (stop, done) = (&stop, &done);
        async move {
            let mut client = DisclosureServiceClient::new(reg.internal.channel().await);
            let mut i = worker;
            while !stop.load(Ordering::SeqCst) {
                client
                    .disclose(reg.as_lookup_service(DiscloseRequest {
                        nhs_number: nhs(i % 50),
                        accessor: Some(ed_clinician("555000000001")),
                        access_mode: AccessMode::ScheduledSilentRead as i32,
                        request_id: String::new(),
                    }))
                    .await
                    .expect("disclose");
                done.fetch_add(1, Ordering::SeqCst);
                i += 4;
            }
        }
    });
    let timer = async {
        tokio::time::sleep(span).await;
        stop.store(true, Ordering::SeqCst);
    };
    tokio::join!(futures::future::join_all(workers), timer);
    done.load(Ordering::SeqCst) as f64 / started.elapsed().as_secs_f64()
}

async fn a_thousand_idle_subscribers_cost_little_and_all_hear(backend: Backend) {
    let Some(reg) = stack(backend)
        .registry(|config| config.max_subscribers_per_council = SUBSCRIBERS)
        .start()
        .await
    else {
        return;
    };
    reg.register_council("AB1").await;
    for i in 0..50 {
        reg.put("AB1", cpp_record(&nhs(i))).await;
    }
    let span = Duration::from_secs(2);
    let without = disclosure_rate(&reg, span).await;

    let token = reg.council_token("AB1", "read");
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(reg.registry.channel().await);
    }
    let opened = futures::future::join_all(
        (0..SUBSCRIBERS).map(|i| open(channels[i % CONNECTIONS].clone(), &token)),
    )
    .await;
    let mut streams: Vec<_> = opened.into_iter().map(|s| s.expect("subscribe")).collect();
    // Let every replay finish and the streams go idle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with = disclosure_rate(&reg, span).await;
    let ratio = with / without;
    eprintln!(
        "{backend:?}: silent disclosures {without:.0}/s alone, {with:.0}/s beside {SUBSCRIBERS} idle subscribers (ratio {ratio:.2})"
    );
    assert!(
        ratio > 0.5,
        "{SUBSCRIBERS} idle subscribers took the disclosure rate from {without:.0}/s to {with:.0}/s"
    );

    // Every one of them hears the next notification.
    let sent = disclose(&reg, &nhs(0), AccessMode::Unscheduled).await;
    assert_eq!(sent.alerts.len(), 1);
    let heard = futures::future::join_all(
        streams
            .iter_mut()
            .map(|stream| next_sequence(stream, Duration::from_secs(20))),
    )
    .await;
    assert!(
        heard.iter().all(|n| n.sequence == 1),
        "every subscriber hears sequence 1"
    );
}

async fn subscriber_limits_refuse_the_excess(backend: Backend) {
    let Some(reg) = stack(backend)
        .registry(|config| config.max_subscribers_per_council = 3)
        .start()
        .await
    else {
        return;
    };
    reg.register_council("AB1").await;
    reg.register_council("CD2").await;
    let channel = reg.registry.channel().await;
    let token = reg.council_token("AB1", "read");
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            open(channel.clone(), &token)
                .await
                .expect("within the limit"),
        );
    }
    let refused = open(channel.clone(), &token)
        .await
        .expect_err("over the limit");
    assert_eq!(
        (refused.code(), reason_of(&refused)),
        (Code::ResourceExhausted, Some(ErrorReason::Overloaded))
    );
    // Another council has its own share.
    open(channel.clone(), &reg.council_token("CD2", "read"))
        .await
        .expect("another council");
    // A closed stream gives its place back.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match open(channel.clone(), &token).await {
            Ok(_) => break,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted);
                assert!(Instant::now() < deadline, "the place was not given back");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
