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

/// One concurrency level's figures: the lookups and both floors at the same concurrency.
pub(crate) struct Level {
    pub concurrency: usize,
    pub calls: usize,
    pub lookups: Measured,
    pub health: Measured,
    pub database: Measured,
    /// This process's CPU time per lookup during the lookups, in µs: the clients, and the
    /// services and their telemetry too when they run in this process.
    pub process_cpu_us: f64,
}

/// One engine's run: its levels and, when the services ran as processes, their memory after the
/// last (highest) level.
pub(crate) struct EngineRun {
    pub engine: String,
    pub levels: Vec<Level>,
    pub memory: Option<(crate::processes::Memory, crate::processes::Memory)>,
}

/// Lookups at one concurrency level, alone: at most this many (one caller at a time is slow,
/// and its median settles long before).
const MOST_UNLOADED_CALLS: usize = 2_000;

/// Runs the scenario on one engine at each of `levels` (in flight), prints each level's figures
/// as it ends, and returns them.
pub async fn run(
    backend: Backend,
    calls: usize,
    levels: &[usize],
    idle_subscribers: usize,
    enumeration_guard: bool,
    processes: bool,
) -> anyhow::Result<EngineRun> {
    let mut builder = Stack::builder(backend).registry(move |config| {
        if !enumeration_guard {
            config.enumeration_user_per_hour = 0;
            config.enumeration_user_per_day = 0;
            config.enumeration_system_per_hour = 0;
            config.enumeration_system_per_day = 0;
            config.enumeration_organisation_per_hour = 0;
        }
    });
    if !processes {
        builder = builder.with_lookup();
    }
    let mut stack = builder.start().await.context("database unavailable")?;

    let numbers = seed_children(&stack).await?;
    // As processes: the in-process registry has seeded the database; the release binaries
    // take over from here.
    let services = if processes {
        stack
            .stop_registry()
            .await
            .map_err(|e| anyhow::anyhow!("stop the seeding registry: {e}"))?;
        Some(crate::processes::Services::start(&stack, enumeration_guard, &[]).await?)
    } else {
        None
    };
    let channel: Channel = match &services {
        Some(services) => services.lookup.channel().await,
        None => stack.lookup_server().channel().await,
    };

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
    let lookup_numbers = Arc::new(numbers.clone());
    let flood = |calls: usize, concurrency: usize| {
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
    // Database floor: a point read and an insert in one transaction, through a pool of the same
    // kind and size as the registry's, beside the running registry.
    let db = FloorPool::open(&stack.db.url, 16);
    let engine = format!("{backend:?}").to_lowercase();
    let guard = if enumeration_guard { "on" } else { "off" };
    let mut run = EngineRun {
        engine: engine.clone(),
        levels: Vec::new(),
        memory: None,
    };
    for &concurrency in levels {
        let calls = if concurrency == 1 {
            calls.min(MOST_UNLOADED_CALLS)
        } else {
            calls
        }
        .max(concurrency);
        // Transport floor: the same lookup server's health check, same concurrency and count.
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
        let (pool, floor_numbers) = (db.clone(), Arc::new(numbers.clone()));
        let database = drive(calls, concurrency, move |i| {
            let db = pool.clone();
            let nhs = floor_numbers[i % floor_numbers.len()].clone();
            async move { db.read_and_insert(nhs).await.is_ok() }
        })
        .await;
        let cpu_before = services.as_ref().map(|s| s.cpu());
        let own_before = crate::processes::cpu_seconds(None);
        let database_before = crate::floors::database_cpu_seconds(&stack.db.url).await?;
        let batches_before = match &services {
            Some(s) => s.batches().await,
            None => None,
        };
        let lookups = flood(calls, concurrency).await;
        let process_cpu_us =
            (crate::processes::cpu_seconds(None) - own_before) / calls as f64 * 1e6;
        if let (Some(services), Some((registry_before, lookup_before))) = (&services, cpu_before) {
            // Where the CPU went, per lookup: each service, this process (the clients), and
            // what is left of the machine's time (the database, and whatever else runs).
            let (registry_after, lookup_after) = services.cpu();
            let own = crate::processes::cpu_seconds(None) - own_before;
            let database =
                crate::floors::database_cpu_seconds(&stack.db.url).await? - database_before;
            let per = |seconds: f64| seconds / calls as f64 * 1e6;
            // PostgreSQL's backends run in processes of their own; SQLite's work is the
            // registry's.
            let database = if stack.db.url.starts_with("sqlite://") {
                String::new()
            } else {
                format!(", PostgreSQL {:.0} µs", per(database))
            };
            let batches = match (batches_before, services.batches().await) {
                (Some((s0, c0)), Some((s1, c1))) if c1 > c0 => {
                    format!("; {:.1} disclosures a commit", (s1 - s0) / (c1 - c0))
                }
                _ => String::new(),
            };
            println!(
                "  CPU per lookup: registry {:.0} µs, lookup-service {:.0} µs, benchmark clients {:.0} µs{database}{batches}",
                per(registry_after - registry_before),
                per(lookup_after - lookup_before),
                per(own)
            );
        }
        println!(
            "lookup {engine} (enumeration guard {guard}{}): {calls} lookups, {concurrency} in flight: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, errors {}",
            if processes {
                ", services as processes"
            } else {
                ""
            },
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
        let level = Level {
            concurrency,
            calls,
            lookups,
            health,
            database,
            process_cpu_us,
        };
        println!("{}", level.json(&engine, enumeration_guard, processes));
        anyhow::ensure!(
            level.lookups.errors == 0,
            "{} lookups failed",
            level.lookups.errors
        );
        run.levels.push(level);
    }
    if let Some(services) = &services {
        let (registry, lookup) = services.memory();
        println!(
            "  memory after the last level: registry peak {:.1} MB (now {:.1} MB); lookup-service peak {:.1} MB (now {:.1} MB)",
            registry.peak_kib as f64 / 1024.0,
            registry.resident_kib as f64 / 1024.0,
            lookup.peak_kib as f64 / 1024.0,
            lookup.resident_kib as f64 / 1024.0
        );
        run.memory = Some((registry, lookup));
    }
    let (Some(last), false) = (run.levels.last(), processes) else {
        return Ok(run);
    };
    if idle_subscribers > 0 {
        let (calls, concurrency, first_rate) = (last.calls, last.concurrency, last.lookups.rate);
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
        let beside = flood(calls, concurrency).await;
        drop(streams);
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let after = flood(calls, concurrency).await;
        let without = f64::midpoint(first_rate, after.rate);
        println!(
            "  beside {idle_subscribers} idle subscribers: {:.0}/s, p99 {:.2} ms, errors {}; without them {:.0}/s before and {:.0}/s after; ratio {:.2}; process memory {:+.1} MB (server and client sides)",
            beside.rate,
            beside.p99.as_secs_f64() * 1e3,
            beside.errors,
            first_rate,
            after.rate,
            beside.rate / without,
            (rss_after - rss_before) as f64 / 1024.0
        );
        println!(
            "{}",
            serde_json::json!({
                "scenario": "lookup_beside_idle_subscribers", "engine": engine, "subscribers": idle_subscribers,
                "lookups_per_s": beside.rate.round(), "without_before_per_s": first_rate.round(),
                "without_after_per_s": after.rate.round(), "ratio": beside.rate / without,
                "memory_mb": (rss_after - rss_before) as f64 / 1024.0, "errors": beside.errors + after.errors
            })
        );
    }
    Ok(run)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Level {
    /// The level as one JSON line (the telemetry scenario reads `lookups_per_s`, `p50_ms`,
    /// `p99_ms` and `process_cpu_us_per_lookup` back).
    pub fn json(
        &self,
        engine: &str,
        enumeration_guard: bool,
        processes: bool,
    ) -> serde_json::Value {
        let (l, h, d) = (&self.lookups, &self.health, &self.database);
        serde_json::json!({
            "scenario": "lookup", "engine": engine, "enumeration_guard": enumeration_guard,
            "processes": processes, "calls": self.calls, "concurrency": self.concurrency,
            "lookups_per_s": l.rate.round(), "p50_ms": ms(l.p50), "p99_ms": ms(l.p99), "errors": l.errors,
            "health_per_s": h.rate.round(), "health_p50_ms": ms(h.p50), "health_p99_ms": ms(h.p99),
            "db_floor_per_s": d.rate.round(), "db_floor_p50_ms": ms(d.p50), "db_floor_p99_ms": ms(d.p99),
            "ratio_health": l.rate / h.rate, "ratio_db": l.rate / d.rate,
            "process_cpu_us_per_lookup": self.process_cpu_us
        })
    }
}

/// Prints every engine's levels as one table, with the memory of the services where measured.
pub(crate) fn print_table(runs: &[EngineRun]) {
    println!();
    println!(
        "| engine | in flight | lookups/s | p50 ms | p99 ms | health/s | read+insert floor/s | × health | × floor |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for run in runs {
        for level in &run.levels {
            let (l, h, d) = (&level.lookups, &level.health, &level.database);
            println!(
                "| {} | {} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} | {:.3} | {:.2} |",
                run.engine,
                level.concurrency,
                l.rate,
                ms(l.p50),
                ms(l.p99),
                h.rate,
                d.rate,
                l.rate / h.rate,
                l.rate / d.rate
            );
        }
    }
    for run in runs {
        if let Some((registry, lookup)) = run.memory {
            println!(
                "{}: registry-service peak RSS {:.1} MB, lookup-service peak RSS {:.1} MB (VmHWM, after the last level)",
                run.engine,
                registry.peak_kib as f64 / 1024.0,
                lookup.peak_kib as f64 / 1024.0
            );
        }
    }
}

/// The whole run as JSON (`--json PATH`).
pub(crate) fn runs_json(
    runs: &[EngineRun],
    enumeration_guard: bool,
    processes: bool,
) -> serde_json::Value {
    serde_json::json!({
        "scenario": "lookup",
        "runs": runs.iter().map(|run| serde_json::json!({
            "engine": run.engine,
            "levels": run.levels.iter().map(|l| l.json(&run.engine, enumeration_guard, processes)).collect::<Vec<_>>(),
            "memory": run.memory.map(|(registry, lookup)| serde_json::json!({
                "registry_peak_kib": registry.peak_kib, "registry_resident_kib": registry.resident_kib,
                "lookup_peak_kib": lookup.peak_kib, "lookup_resident_kib": lookup.resident_kib,
            })),
        })).collect::<Vec<_>>(),
    })
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
