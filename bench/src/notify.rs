//! Notification latency: the time from a disclosure's commit (its answer arriving back at the
//! caller) to the council's live subscriber receiving the notification. On one node, and across
//! two registries sharing PostgreSQL (disclosed through one, subscribed on the other, woken by
//! LISTEN/NOTIFY). Reported beside the floor of the same server's health-check round trip.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use cpis_proto::cpis::common::v1::{
    AccessMode, Accessor, CareSetting, Organisation, PersonAccessor, accessor::Kind,
};
use cpis_proto::cpis::registry::v1::{
    DiscloseRequest, SubscribeNotificationsRequest, council_service_client::CouncilServiceClient,
    subscribe_notifications_response::Event,
};
use cpis_testkit::{Stack, db::Backend, nhs::nhs};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::cpp_child;

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// Runs `count` disclosures one after another and measures each notification's delay.
pub async fn run(backend: Backend, count: usize, two_nodes: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        !two_nodes || backend == Backend::Postgres,
        "two nodes need PostgreSQL"
    );
    let stack = Stack::start(backend)
        .await
        .context("database unavailable")?;
    let first = &stack.registry;
    let second = if two_nodes {
        // Polling far slower than the measurement: only LISTEN/NOTIFY can explain fast delivery.
        Some(
            stack
                .another_registry(|config| config.notification_poll = Duration::from_secs(60))
                .await,
        )
    } else {
        None
    };
    let subscribed_on = second.as_ref().unwrap_or(first);

    stack.register_council("BEN01").await;
    stack
        .put("BEN01", cpp_child(nhs(0), String::new(), 1))
        .await;

    let mut stream = CouncilServiceClient::new(subscribed_on.channel().await)
        .subscribe_notifications(
            stack.as_council("BEN01", SubscribeNotificationsRequest::default()),
        )
        .await?
        .into_inner();
    let (arrived_tx, mut arrived_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let reader = tokio::spawn(async move {
        while let Ok(Some(message)) = stream.message().await {
            if let Some(Event::Notification(n)) = message.event
                && arrived_tx.send((n.sequence, Instant::now())).is_err()
            {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let accessor = Accessor {
        kind: Some(Kind::Person(PersonAccessor {
            user_id: "555021935107".into(),
            name: "Dr Bench".into(),
            ..Default::default()
        })),
        organisation: Some(Organisation {
            ods_code: "RBEN1".into(),
            name: "Bench Hospital".into(),
        }),
        care_setting: CareSetting::EmergencyDepartment as i32,
    };
    let mut disclosure = stack.disclosure().await;
    let mut health = HealthClient::new(first.channel().await);
    let mut from_commit = Vec::with_capacity(count);
    let mut from_request = Vec::with_capacity(count);
    let mut health_rtt = Vec::with_capacity(count);
    for i in 0..count {
        let t = Instant::now();
        health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await?;
        health_rtt.push(t.elapsed());

        let request = stack.as_lookup_service(DiscloseRequest {
            nhs_number: nhs(0),
            accessor: Some(accessor.clone()),
            access_mode: AccessMode::Unscheduled as i32,
            request_id: String::new(),
        });
        let sent = Instant::now();
        disclosure.disclose(request).await?;
        let committed = Instant::now();
        let expected = u64::try_from(i + 1)?;
        let (sequence, arrived) = tokio::time::timeout(Duration::from_secs(5), arrived_rx.recv())
            .await
            .context("no notification within 5 s")?
            .context("subscriber ended")?;
        anyhow::ensure!(
            sequence == expected,
            "sequence {sequence}, expected {expected}"
        );
        from_commit.push(arrived.saturating_duration_since(committed));
        from_request.push(arrived.saturating_duration_since(sent));
    }
    reader.abort();
    from_commit.sort_unstable();
    from_request.sort_unstable();
    health_rtt.sort_unstable();
    let engine = format!("{backend:?}").to_lowercase();
    let nodes = if two_nodes { 2 } else { 1 };
    println!(
        "notify {engine}, {nodes} node(s), {count} notifications: after commit p50 {:.2} ms p99 {:.2} ms max {:.2} ms; \
         after request p50 {:.2} ms p99 {:.2} ms; floor health round trip p50 {:.2} ms p99 {:.2} ms",
        percentile(&from_commit, 0.5),
        percentile(&from_commit, 0.99),
        percentile(&from_commit, 1.0),
        percentile(&from_request, 0.5),
        percentile(&from_request, 0.99),
        percentile(&health_rtt, 0.5),
        percentile(&health_rtt, 0.99),
    );
    println!(
        "{}",
        serde_json::json!({
            "scenario": "notify", "engine": engine, "nodes": nodes, "count": count,
            "after_commit_p50_ms": percentile(&from_commit, 0.5), "after_commit_p99_ms": percentile(&from_commit, 0.99),
            "health_p50_ms": percentile(&health_rtt, 0.5), "target_p99_ms": 100.0
        })
    );
    Ok(())
}
