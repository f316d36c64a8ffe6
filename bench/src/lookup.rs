//! Lookup throughput and latency: concurrent clinicians' lookups through the lookup service and
//! the registry's disclose-and-record transaction, against two floors measured in the same run:
//! the same lookup server's gRPC health check (transport floor), and the engine's own point read
//! plus insert in one transaction through a pool like the registry's (database floor, see
//! `floors`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cpis_proto::cpis::common::v1::AccessMode;
use cpis_proto::cpis::lookup::v1::{
    LookupChildRequest, lookup_service_client::LookupServiceClient,
};
use cpis_proto::cpis::registry::v1::{
    BatchHeader, SubscribeNotificationsRequest, UploadBatchRequest,
    council_service_client::CouncilServiceClient, upload_batch_request::Item,
};
use cpis_testkit::{Stack, db::Backend, nhs::nhs_numbers};
use tonic::{Request, metadata::MetadataValue, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{cpp_child, floors::FloorPool};

/// Children on record.
const CHILDREN: usize = 5_000;
/// Councils holding them.
const COUNCILS: usize = 20;
/// Clinicians looking them up, each under the enumeration guard's thresholds as a real one is
/// (each sees 25 children, each several times, per flood of 20,000)...
const CLINICIANS: usize = 400;
/// ...in this many emergency departments (an organisation's window holds a few hundred
/// lookups, as a busy one's hour does).
const ORGANISATIONS: usize = 100;

fn bearer(token: &str) -> anyhow::Result<MetadataValue<tonic::metadata::Ascii>> {
    Ok(format!("Bearer {token}").parse()?)
}

/// Latency percentiles and rate of `calls` operations run by `concurrency` workers.
pub(crate) struct Measured {
    pub rate: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub errors: usize,
}

pub(crate) async fn drive<F, Fut>(calls: usize, concurrency: usize, op: F) -> Measured
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let per_worker = calls / concurrency;
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_worker);
                let mut errors = 0;
                for i in 0..per_worker {
                    let t = Instant::now();
                    if !op(w * per_worker + i).await {
                        errors += 1;
                    }
                    latencies.push(t.elapsed());
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(calls);
    let mut errors = 0;
    for worker in workers {
        if let Ok((latencies, e)) = worker.await {
            all.extend(latencies);
            errors += e;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let at = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Measured {
        rate: all.len() as f64 / elapsed,
        p50: at(0.50),
        p99: at(0.99),
        errors,
    }
}

/// Puts CHILDREN records on CPP plans, spread over COUNCILS councils (each council's
/// notification sequence is a serialisation point, as in real life where 152 councils share the
/// load); returns their NHS numbers.
pub(crate) async fn seed_children(stack: &Stack) -> anyhow::Result<Vec<String>> {
    let numbers: Vec<String> = nhs_numbers().take(CHILDREN).collect();
    let mut client = stack.council().await;
    for c in 0..COUNCILS {
        let ods = format!("BEN{c:02}");
        stack.register_council(&ods).await;
        let mut messages = vec![UploadBatchRequest {
            item: Some(Item::Header(BatchHeader {
                batch_id: "seed".into(),
                ..Default::default()
            })),
        }];
        messages.extend(
            numbers
                .iter()
                .skip(c)
                .step_by(COUNCILS)
                .map(|n| UploadBatchRequest {
                    item: Some(Item::Record(cpp_child(n.clone(), String::new(), 1))),
                }),
        );
        client
            .upload_batch(stack.as_council(&ods, tokio_stream::iter(messages)))
            .await?;
    }

    Ok(numbers)
}

/// The bearer metadata of an emergency-department clinician.
pub(crate) fn ed_clinician(stack: &Stack) -> anyhow::Result<MetadataValue<tonic::metadata::Ascii>> {
    bearer(&stack.nhs_token(&serde_json::json!({
        "sub": "555021935107", "uid": "555021935107", "name": "Dr Bench", "selected_roleid": "r1",
        "nhsid_nrbac_roles": [{"person_roleid": "r1", "org_code": "RBEN1", "role_code": "R8000", "role_name": "Clinician", "activity_codes": ["B0107"]}],
        "org_name": "Bench Hospital", "care_setting": "EMERGENCY_DEPARTMENT"
    })))
}

/// Runs the scenario on one engine and prints the figures.
pub async fn run(
    backend: Backend,
    calls: usize,
    concurrency: usize,
    idle_subscribers: usize,
    enumeration_guard: bool,
) -> anyhow::Result<()> {
    let stack = Stack::builder(backend)
        .registry(move |config| {
            if !enumeration_guard {
                config.enumeration_user_per_hour = 0;
                config.enumeration_user_per_day = 0;
                config.enumeration_system_per_hour = 0;
                config.enumeration_system_per_day = 0;
                config.enumeration_organisation_per_hour = 0;
            }
        })
        .with_lookup()
        .start()
        .await
        .context("database unavailable")?;

    let numbers = seed_children(&stack).await?;

    // Transport floor: the same lookup server's health check, same concurrency and count.
    let channel: Channel = stack.lookup_server().channel().await;
    let health_channel = channel.clone();
    let health = drive(calls, concurrency, move |_| {
        let mut client = HealthClient::new(health_channel.clone());
        async move {
            client
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .is_ok()
        }
    })
    .await;

    // Database floor: a point read and an insert in one transaction, through a pool of the same
    // kind and size as the registry's, beside the running registry.
    let db = FloorPool::open(&stack.db.url, 16);
    let floor_numbers = Arc::new(numbers.clone());
    let database = drive(calls, concurrency, move |i| {
        let db = db.clone();
        let nhs = floor_numbers[i % floor_numbers.len()].clone();
        async move { db.read_and_insert(nhs).await.is_ok() }
    })
    .await;

    // The real thing: unscheduled lookups by ED clinicians, spread over the children.
    let clinicians: Vec<_> = (0..CLINICIANS)
        .map(|c| {
            let (uid, org) = (format!("5550{c:08}"), format!("RB{:03}", c % ORGANISATIONS));
            bearer(&stack.nhs_token(&serde_json::json!({
                "sub": uid, "uid": uid, "name": "Dr Bench", "selected_roleid": "r1",
                "nhsid_nrbac_roles": [{"person_roleid": "r1", "org_code": org, "role_code": "R8000", "role_name": "Clinician", "activity_codes": ["B0107"]}],
                "org_name": "Bench Hospital", "care_setting": "EMERGENCY_DEPARTMENT"
            })))
        })
        .collect::<anyhow::Result<_>>()?;
    let clinicians: Arc<Vec<_>> = Arc::new(clinicians);
    let lookup_numbers = Arc::new(numbers);
    let flood = || {
        let (channel, clinicians, lookup_numbers) =
            (channel.clone(), clinicians.clone(), lookup_numbers.clone());
        drive(calls, concurrency, move |i| {
            let mut client = LookupServiceClient::new(channel.clone());
            let mut request = Request::new(LookupChildRequest {
                nhs_number: lookup_numbers[i % lookup_numbers.len()].clone(),
                access_mode: AccessMode::Unscheduled as i32,
            });
            request
                .metadata_mut()
                .insert("authorization", clinicians[i % clinicians.len()].clone());
            async move {
                client
                    .lookup_child(request)
                    .await
                    .is_ok_and(|r| !r.into_inner().alerts.is_empty())
            }
        })
    };
    let lookups = flood().await;

    let engine = format!("{backend:?}").to_lowercase();
    let guard = if enumeration_guard { "on" } else { "off" };
    println!(
        "lookup {engine} (enumeration guard {guard}): {calls} lookups, {concurrency} concurrent: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, errors {}",
        lookups.rate,
        lookups.p50.as_secs_f64() * 1e3,
        lookups.p99.as_secs_f64() * 1e3,
        lookups.errors
    );
    println!(
        "  floors: health check {:.0}/s (p50 {:.2} ms); {engine} read+insert transaction {:.0}/s (p50 {:.2} ms)",
        health.rate,
        health.p50.as_secs_f64() * 1e3,
        database.rate,
        database.p50.as_secs_f64() * 1e3
    );
    println!(
        "  ratios: lookups/health {:.3}; lookups/database {:.2}",
        lookups.rate / health.rate,
        lookups.rate / database.rate
    );
    println!(
        "{}",
        serde_json::json!({
            "scenario": "lookup", "engine": engine, "enumeration_guard": enumeration_guard, "calls": calls, "concurrency": concurrency,
            "lookups_per_s": lookups.rate.round(), "p50_ms": lookups.p50.as_secs_f64() * 1e3, "p99_ms": lookups.p99.as_secs_f64() * 1e3,
            "errors": lookups.errors, "health_per_s": health.rate.round(), "db_floor_per_s": database.rate.round(),
            "ratio_health": lookups.rate / health.rate, "ratio_db": lookups.rate / database.rate
        })
    );
    anyhow::ensure!(lookups.errors == 0, "{} lookups failed", lookups.errors);
    if idle_subscribers > 0 {
        // Idle subscribers: councils listening for their own notifications while the flood
        // touches none of their children (most of the 152 councils, most of the time). They are
        // spread over councils outside the flood (each within the per-council limit) on a few
        // connections. The flood runs beside them, then once more after they have gone: the
        // database grows with every flood, so the ratio is taken against the mean of the floods
        // before and after, not against the first alone.
        let per_council = 100;
        let rss_before = resident_kib();
        let mut connections = Vec::new();
        for _ in 0..8 {
            connections.push(stack.registry.channel().await);
        }
        let mut streams = Vec::with_capacity(idle_subscribers);
        for i in 0..idle_subscribers {
            let ods = format!("IDL{:02}", i / per_council);
            if i % per_council == 0 {
                stack.register_council(&ods).await;
            }
            let request = stack.as_council(&ods, SubscribeNotificationsRequest::default());
            let stream = CouncilServiceClient::new(connections[i % connections.len()].clone())
                .subscribe_notifications(request)
                .await?
                .into_inner();
            streams.push(stream);
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let rss_after = resident_kib();
        let beside = flood().await;
        drop(streams);
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let after = flood().await;
        let without = f64::midpoint(lookups.rate, after.rate);
        println!(
            "  beside {idle_subscribers} idle subscribers: {:.0}/s, p99 {:.2} ms, errors {}; without them {:.0}/s before and {:.0}/s after; ratio {:.2}; process memory {:+.1} MB (server and client sides)",
            beside.rate,
            beside.p99.as_secs_f64() * 1e3,
            beside.errors,
            lookups.rate,
            after.rate,
            beside.rate / without,
            (rss_after - rss_before) as f64 / 1024.0
        );
        println!(
            "{}",
            serde_json::json!({
                "scenario": "lookup_beside_idle_subscribers", "engine": engine, "subscribers": idle_subscribers,
                "lookups_per_s": beside.rate.round(), "without_before_per_s": lookups.rate.round(),
                "without_after_per_s": after.rate.round(), "ratio": beside.rate / without,
                "memory_mb": (rss_after - rss_before) as f64 / 1024.0, "errors": beside.errors + after.errors
            })
        );
    }
    Ok(())
}

/// The process's resident memory in KiB (0 where /proc is not there).
pub(crate) fn resident_kib() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}
