//! Group commit of disclosures, for real: many lookups at once share transactions (the batch-size
//! histogram moves past 1) and every answered one is recorded with its notifications, each
//! council's sequence gap-free; a member the enumeration guard refuses, or whose deadline is too
//! short, is answered alone while the rest of its batch is disclosed; the guard counts members of
//! one batch as if they came one after another; a database stopped mid-flood fails whole batches
//! as UNAVAILABLE and never answers an unrecorded access.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cpis_core::status::reason_of;
use cpis_proto::cpis::common::v1::{AccessMode, ErrorReason};
use cpis_proto::cpis::registry::v1::{
    DiscloseRequest, DiscloseResponse, disclosure_service_client::DisclosureServiceClient,
    notification,
};
use cpis_testkit::metrics::scrape;
use cpis_testkit::pg_cluster::PgCluster;
use cpis_testkit::{Stack, both_backends, db::Backend};
use registry_service::{Clock, DatabaseUrl};
use tonic::Code;
use tonic::transport::Channel;

use crate::harness::{cpp_record, ed_clinician, nhs, stack, start};

both_backends!(
    concurrent_lookups_share_commits_and_all_are_recorded,
    a_throttled_member_leaves_its_batch_disclosed,
    one_batch_counts_its_members_one_after_another,
    a_member_out_of_time_is_not_recorded_and_the_rest_are,
);

/// One disclosure straight to the registry, by clinician `user_id`, with request id `id`.
async fn disclose(
    stack: &Stack,
    channel: &Channel,
    user_id: impl AsRef<str>,
    nhs_number: String,
    mode: AccessMode,
    id: String,
    timeout: Option<Duration>,
) -> Result<DiscloseResponse, tonic::Status> {
    let mut request = stack.as_lookup_service(DiscloseRequest {
        nhs_number,
        accessor: Some(ed_clinician(user_id.as_ref())),
        access_mode: mode as i32,
        request_id: id,
    });
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    DisclosureServiceClient::new(channel.clone())
        .disclose(request)
        .await
        .map(tonic::Response::into_inner)
}

/// The batch-size histogram's (sum, count) on `stack`'s admin port. Every server of this test
/// binary shares one meter, so other tests add to it too; with group commit off everywhere
/// (`--disclosure-batch-max 1`) sum and count move together and the assertion below fails.
async fn batch_sizes(stack: &Stack) -> Option<(f64, f64)> {
    let page = scrape(stack.registry.admin?).await?;
    Some((
        page.value("cpis_disclosure_batch_size_sum", &[]),
        page.value("cpis_disclosure_batch_size_count", &[]),
    ))
}

async fn concurrent_lookups_share_commits_and_all_are_recorded(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    let channel = reg.internal.channel().await;
    let channel = &channel;
    // Three councils; children 0..12 at GC1, 8..20 at GC2 (eight held by two), 20..24 at GC3.
    for ods in ["GC1", "GC2", "GC3"] {
        reg.register_council(ods).await;
    }
    let holders = |child: usize| -> Vec<&'static str> {
        let mut held = Vec::new();
        if child < 12 {
            held.push("GC1");
        }
        if (8..20).contains(&child) {
            held.push("GC2");
        }
        if child >= 20 {
            held.push("GC3");
        }
        held
    };
    for child in 0..24 {
        for ods in holders(child) {
            reg.put(ods, cpp_record(&nhs(child))).await;
        }
    }
    let before = batch_sizes(&reg).await;
    const LOOKUPS: usize = 96;
    let lookups = (0..LOOKUPS).map(|i| {
        let reg = &reg;
        // Every fifth a silent read: recorded, notifies nobody.
        let mode = if i % 5 == 4 {
            AccessMode::ScheduledSilentRead
        } else {
            AccessMode::Unscheduled
        };
        async move {
            let child = i % 24;
            let answer = disclose(
                reg,
                channel,
                format!("5550001{:05}", i % 40),
                nhs(child),
                mode,
                format!("gc-{i}"),
                None,
            )
            .await;
            (i, child, mode, answer)
        }
    });
    let answers = futures::future::join_all(lookups).await;
    let after = batch_sizes(&reg).await;

    let mut expected: HashMap<&str, Vec<String>> = HashMap::new();
    let mut access_ids = HashSet::new();
    for (i, child, mode, answer) in &answers {
        let answer = answer
            .as_ref()
            .unwrap_or_else(|status| panic!("lookup {i} failed: {status:?}"));
        assert_eq!(answer.alerts.len(), holders(*child).len(), "lookup {i}");
        assert!(access_ids.insert(answer.access_id.clone()));
        if *mode == AccessMode::Unscheduled {
            for ods in holders(*child) {
                expected
                    .entry(ods)
                    .or_default()
                    .push(answer.access_id.clone());
            }
        }
    }
    assert_eq!(
        reg.db.count("SELECT COUNT(*) AS n FROM access_events"),
        i64::try_from(LOOKUPS).unwrap()
    );
    // Every answered unscheduled access is in each holder's history, under its request id.
    for child in 0..24 {
        let wanted: HashSet<String> = answers
            .iter()
            .filter(|(_, c, mode, _)| *c == child && *mode == AccessMode::Unscheduled)
            .map(|(i, _, _, _)| format!("gc-{i}"))
            .collect();
        for ods in holders(child) {
            let seen: HashSet<String> = reg
                .access_history(ods, &nhs(child))
                .await
                .into_iter()
                .map(|event| event.request_id)
                .collect();
            assert_eq!(seen, wanted, "history of child {child} at {ods}");
        }
    }
    // Each council's notifications: one per unscheduled access of its children, numbered
    // 1, 2, 3... with no gap, each naming an answered access.
    for (ods, mut ids) in expected {
        let notifications = reg.notifications(ods).await;
        let sequences: Vec<u64> = notifications.iter().map(|n| n.sequence).collect();
        assert_eq!(
            sequences,
            (1..=u64::try_from(ids.len()).unwrap()).collect::<Vec<_>>(),
            "{ods}"
        );
        let mut notified: Vec<String> = notifications
            .into_iter()
            .filter_map(|n| match n.kind {
                Some(notification::Kind::Access(access)) => {
                    access.access_event.map(|event| event.access_id)
                }
                _ => None,
            })
            .collect();
        notified.sort();
        ids.sort();
        assert_eq!(notified, ids, "{ods}");
    }
    // The lookups did share transactions.
    if let (Some((sum_before, count_before)), Some((sum_after, count_after))) = (before, after) {
        let (members, batches) = (sum_after - sum_before, count_after - count_before);
        eprintln!("{backend:?}: {members} disclosures in {batches} batches");
        assert!(
            members > batches,
            "no batch held more than one disclosure ({members} in {batches})"
        );
    } else {
        panic!("the registry's admin port did not answer a scrape");
    }
}

const THRESHOLD: u32 = 3;

/// A registry with a user threshold of `THRESHOLD` (the day's off) and one council holding
/// children 0..40; batches committed one at a time, so each sees the last one's commit.
async fn guarded(backend: Backend) -> Option<Stack> {
    let reg = stack(backend)
        .clock(Clock::fixed(1_780_000_000_000_000))
        .registry(|config| {
            config.enumeration_user_per_hour = THRESHOLD;
            config.enumeration_user_per_day = 0;
            config.group_commit.committers = 1;
        })
        .start()
        .await?;
    reg.register_council("GC4").await;
    for child in 0..40 {
        reg.put("GC4", cpp_record(&nhs(child))).await;
    }
    Some(reg)
}

async fn a_throttled_member_leaves_its_batch_disclosed(backend: Backend) {
    let Some(reg) = guarded(backend).await else {
        return;
    };
    let channel = reg.internal.channel().await;
    let channel = &channel;
    let sweeper = "555000000900";
    for child in 0..THRESHOLD as usize {
        disclose(
            &reg,
            channel,
            sweeper,
            nhs(child),
            AccessMode::Unscheduled,
            format!("s-{child}"),
            None,
        )
        .await
        .expect("under the threshold");
    }
    // The sweeper's next new child among thirty other clinicians' lookups, all at once.
    let others = (0..30).map(|i| {
        disclose(
            &reg,
            channel,
            format!("5550002{i:05}"),
            nhs(10 + i),
            AccessMode::Unscheduled,
            format!("o-{i}"),
            None,
        )
    });
    let refused = disclose(
        &reg,
        channel,
        sweeper,
        nhs(5),
        AccessMode::Unscheduled,
        "s-5".into(),
        None,
    );
    let (refused, others) = tokio::join!(refused, futures::future::join_all(others));
    let status = refused.expect_err("past the threshold");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason_of(&status), Some(ErrorReason::LookupsThrottled));
    for (i, answer) in others.into_iter().enumerate() {
        let answer = answer.unwrap_or_else(|status| panic!("lookup {i}: {status:?}"));
        assert_eq!(answer.alerts.len(), 1);
        let history = reg.access_history("GC4", &nhs(10 + i)).await;
        assert_eq!(history.len(), 1, "lookup {i} recorded once");
    }
    assert_eq!(reg.access_history("GC4", &nhs(5)).await.len(), 0);
    assert_eq!(
        reg.db.count("SELECT COUNT(*) AS n FROM access_events"),
        i64::from(THRESHOLD) + 30
    );
    assert_eq!(reg.db.count("SELECT COUNT(*) AS n FROM security_events"), 1);
    assert_eq!(
        reg.notifications("GC4").await.len(),
        THRESHOLD as usize + 30
    );
}

async fn one_batch_counts_its_members_one_after_another(backend: Backend) {
    let Some(reg) = guarded(backend).await else {
        return;
    };
    let channel = reg.internal.channel().await;
    let channel = &channel;
    // Eight new children at once by one clinician with none looked up yet: exactly the
    // threshold's worth are let through, however the batches fell, and one crossing is raised.
    let sweep = (0..8).map(|child| {
        disclose(
            &reg,
            channel,
            "555000000901",
            nhs(child),
            AccessMode::Unscheduled,
            format!("b-{child}"),
            None,
        )
    });
    let answers = futures::future::join_all(sweep).await;
    let admitted = answers.iter().filter(|a| a.is_ok()).count();
    for status in answers.iter().filter_map(|a| a.as_ref().err()) {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    }
    assert_eq!(admitted, THRESHOLD as usize);
    assert_eq!(
        reg.db.count("SELECT COUNT(*) AS n FROM access_events"),
        i64::from(THRESHOLD)
    );
    assert_eq!(reg.db.count("SELECT COUNT(*) AS n FROM security_events"), 1);
}

async fn a_member_out_of_time_is_not_recorded_and_the_rest_are(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    let channel = reg.internal.channel().await;
    let channel = &channel;
    reg.register_council("GC5").await;
    reg.put("GC5", cpp_record(&nhs(0))).await;
    // Forty lookups with time to spare and, among them, twenty with a millisecond or two: the
    // short ones may be answered (then recorded) or refused as not recorded (then not), and
    // the others are all disclosed.
    let lookups = (0..60).map(|i| {
        let reg = &reg;
        let short = i % 3 == 1;
        let timeout = short.then(|| Duration::from_millis(1 + (i % 8) as u64));
        async move {
            let id = format!("t-{i}");
            let answer = disclose(
                reg,
                channel,
                format!("5550003{i:05}"),
                nhs(0),
                AccessMode::Unscheduled,
                id.clone(),
                timeout,
            )
            .await;
            (id, short, answer.map(|_| ()).map_err(|s| reason_of(&s)))
        }
    });
    let outcomes = futures::future::join_all(lookups).await;
    for (id, short, outcome) in &outcomes {
        assert!(*short || outcome.is_ok(), "{id}: {outcome:?}");
    }
    let outcomes: Vec<_> = outcomes.into_iter().map(|(id, _, o)| (id, o)).collect();
    let tally = reg.tally_sweep("GC5", &nhs(0), &outcomes).await;
    eprintln!(
        "{backend:?}: {} answered, {} not recorded, {} may be recorded, {} cut off",
        tally.answered, tally.not_recorded, tally.may_be_recorded, tally.other
    );
    assert!(
        tally.unrecorded_answers.is_empty(),
        "{:?}",
        tally.unrecorded_answers
    );
    assert!(tally.lies.is_empty(), "{:?}", tally.lies);
    assert!(tally.answered >= 40);
}

/// A private PostgreSQL stopped under a flood of lookups and started again: while it is down,
/// whole batches fail as UNAVAILABLE (or run out of time); no answered lookup is missing from
/// the history afterwards and none told "not recorded" is in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_stopped_mid_flood_fails_whole_batches_honestly() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let cluster = Arc::new(cluster);
    let url = DatabaseUrl::parse(&cluster.create_database("cpis")).expect("url");
    let reg = stack(Backend::Postgres)
        .registry(move |config| {
            config.database_url = Some(url);
            config.db_acquire_timeout = Duration::from_secs(1);
        })
        .start()
        .await
        .expect("stack");
    let channel = reg.internal.channel().await;
    let channel = &channel;
    reg.register_council("GC6").await;
    reg.put("GC6", cpp_record(&nhs(0))).await;
    let done = Arc::new(AtomicBool::new(false));
    let workers = (0..24).map(|w| {
        let (reg, done) = (&reg, done.clone());
        async move {
            let mut outcomes = Vec::new();
            let mut i = 0;
            while !done.load(Ordering::SeqCst) {
                let id = format!("f-{w}-{i}");
                let answer = disclose(
                    reg,
                    channel,
                    format!("5550004{w:05}"),
                    nhs(0),
                    AccessMode::Unscheduled,
                    id.clone(),
                    Some(Duration::from_secs(3)),
                )
                .await;
                if let Err(status) = &answer {
                    assert!(
                        matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded),
                        "{status:?}"
                    );
                }
                outcomes.push((id, answer.map(|_| ()).map_err(|s| reason_of(&s))));
                i += 1;
                if outcomes.last().is_some_and(|(_, o)| o.is_err()) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            outcomes
        }
    });
    let faults = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let c = cluster.clone();
        tokio::task::spawn_blocking(move || c.stop())
            .await
            .expect("stop");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let c = cluster.clone();
        tokio::task::spawn_blocking(move || c.start_again())
            .await
            .expect("start again");
        tokio::time::sleep(Duration::from_secs(2)).await;
        done.store(true, Ordering::SeqCst);
    };
    let (outcomes, ()) = tokio::join!(futures::future::join_all(workers), faults);
    let outcomes: Vec<_> = outcomes.into_iter().flatten().collect();
    let failed = outcomes.iter().filter(|(_, o)| o.is_err()).count();
    let tally = reg.tally_sweep("GC6", &nhs(0), &outcomes).await;
    eprintln!(
        "stopped mid-flood: {} answered, {} not recorded, {} may be recorded, {} other; recorded {}",
        tally.answered, tally.not_recorded, tally.may_be_recorded, tally.other, tally.recorded
    );
    assert!(failed > 0, "the outage failed no lookup: it tested nothing");
    assert!(tally.answered > 0);
    assert!(
        tally.unrecorded_answers.is_empty(),
        "{:?}",
        tally.unrecorded_answers
    );
    assert!(tally.lies.is_empty(), "{:?}", tally.lies);
}
