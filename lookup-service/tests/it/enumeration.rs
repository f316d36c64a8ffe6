//! The enumeration guard, through the lookup service in front of a real registry: a clinician
//! sweeping NHS numbers is throttled once past the threshold (RESOURCE_EXHAUSTED,
//! LOOKUPS_THROTTLED, with a retry delay until the window lets them in again), nothing is
//! disclosed or recorded for the refused calls, the crossing is one security event an operator
//! lists (paged) and one log line on target "security" without child data, while an emergency
//! department's ordinary workload beside it is never refused. Silent reads count; the
//! organisation's threshold counts every user of it.

use std::time::Duration;

use cpis_core::status::{reason_of, retry_delay};
use cpis_proto::cpis::common::v1::{AccessMode, ErrorReason, accessor::Kind};
use cpis_proto::cpis::registry::v1::{
    ListSecurityEventsRequest, SecurityEvent, SecurityEventKind, ThrottledSubject,
};
use cpis_testkit::{Stack, both_backends, db::Backend, logs};
use registry_service::Clock;
use serde_json::Value;
use tonic::{Code, Status};

use crate::harness::{cpp, noon, person_named};

both_backends!(
    a_sweep_is_throttled_at_the_default_threshold,
    a_sweep_is_throttled_and_raises_one_event,
    silent_reads_count,
    the_organisation_threshold_counts_every_user
);

/// The default distinct children per user per hour (README, "Enumeration guard").
const DEFAULT_USER_PER_HOUR: usize = 100;
/// The small thresholds of these tests.
const USER_PER_HOUR: u32 = 5;
const ORGANISATION_PER_HOUR: u32 = 12;
/// When these tests start: the registry's clock is fixed there.
fn start_time() -> i64 {
    noon(2026, 6, 15)
}

/// A registry with the test thresholds (the day's off, so the hour's decides) and a lookup
/// service in front of it.
async fn start_guarded(backend: Backend) -> Option<Stack> {
    Stack::builder(backend)
        .clock(Clock::fixed(start_time()))
        .registry(|config| {
            config.enumeration_user_per_hour = USER_PER_HOUR;
            config.enumeration_user_per_day = 0;
            config.enumeration_organisation_per_hour = ORGANISATION_PER_HOUR;
        })
        .with_lookup()
        .start()
        .await
}

/// The `i`-th test-range NHS number.
fn nhs(i: usize) -> String {
    cpis_testkit::nhs::nhs(i)
}

/// A user id unique to this test and backend (both run at once, in one log).
fn user(test: u8, backend: Backend, n: u8) -> String {
    format!("55{test:02}{:02}{n:06}", backend as u8)
}

fn ed(uid: &str, org: &str) -> Value {
    person_named(uid, "Dr Test", &["B0107"], org, "EMERGENCY_DEPARTMENT")
}

fn assert_throttled(status: &Status, at_least: Duration) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason_of(status), Some(ErrorReason::LookupsThrottled));
    let delay = retry_delay(status).expect("a RetryInfo delay");
    assert!(
        delay >= at_least && delay <= Duration::from_secs(3600),
        "{delay:?}"
    );
}

/// How many access events the registry holds for `nhs_number` (silent reads included).
fn recorded(stack: &Stack, nhs_number: &str) -> i64 {
    stack.db.count(&format!(
        "SELECT COUNT(*) AS n FROM access_events WHERE nhs_number = '{nhs_number}'"
    ))
}

/// Every security event, a page of one at a time (so paging is exercised), newest first.
async fn security_events(stack: &Stack) -> Vec<SecurityEvent> {
    let mut client = stack.operator().await;
    let (mut token, mut all) = (String::new(), Vec::new());
    loop {
        let page = client
            .list_security_events(stack.as_operator(ListSecurityEventsRequest {
                page_size: 1,
                page_token: token,
            }))
            .await
            .expect("list security events")
            .into_inner();
        assert!(page.security_events.len() <= 1);
        // Page tokens carry no child data (they are sealed), and never an NHS number.
        assert!(
            !page.next_page_token.contains("999"),
            "{}",
            page.next_page_token
        );
        all.extend(page.security_events);
        if page.next_page_token.is_empty() {
            return all;
        }
        token = page.next_page_token;
    }
}

fn user_id_of(event: &SecurityEvent) -> &str {
    match event.accessor.as_ref().and_then(|a| a.kind.as_ref()) {
        Some(Kind::Person(p)) => &p.user_id,
        _ => "",
    }
}

async fn a_sweep_is_throttled_at_the_default_threshold(backend: Backend) {
    let Some(stack) = crate::harness::start(backend).await else {
        return;
    };
    let sweeper = ed("555000000777", "RXX01");
    for i in 0..DEFAULT_USER_PER_HOUR {
        stack
            .lookup(&sweeper, &nhs(i), AccessMode::Unscheduled)
            .await
            .expect("under the threshold");
    }
    let refused = nhs(DEFAULT_USER_PER_HOUR);
    let status = stack
        .lookup(&sweeper, &refused, AccessMode::Unscheduled)
        .await
        .expect_err("the sweep is throttled past the threshold");
    assert_throttled(&status, Duration::from_secs(3599));
    assert_eq!(
        recorded(&stack, &refused),
        0,
        "a refused lookup is not recorded"
    );
}

async fn a_sweep_is_throttled_and_raises_one_event(backend: Backend) {
    let captured = logs::capture();
    let Some(stack) = start_guarded(backend).await else {
        return;
    };
    // A council holds a record on a number the sweeper will be refused: it must learn nothing
    // (no notification) and the sweeper must see nothing.
    let threshold = USER_PER_HOUR as usize;
    let refused = nhs(threshold);
    stack.register_council("LA1").await;
    stack.put("LA1", cpp(&refused)).await;
    stack.put("LA1", cpp(&nhs(0))).await;

    let sweeper_id = user(1, backend, 1);
    let sweeper = ed(&sweeper_id, "RSW01");
    // An emergency department's ordinary work at another organisation, interleaved: three
    // clinicians each seeing four children twice (one child the sweeper also saw), ten
    // distinct children for the department, under its threshold of twelve.
    let clinicians: Vec<Value> = (2..5).map(|n| ed(&user(1, backend, n), "RXX01")).collect();
    let mut ordinary = 0;
    for i in 0..threshold {
        stack
            .lookup(&sweeper, &nhs(i), AccessMode::Unscheduled)
            .await
            .expect("under the threshold");
        for (c, clinician) in clinicians.iter().enumerate() {
            if i < 4 {
                let child = if i == 3 {
                    nhs(0)
                } else {
                    nhs(100 + c * 10 + i)
                };
                for _ in 0..2 {
                    stack
                        .lookup(clinician, &child, AccessMode::Unscheduled)
                        .await
                        .expect("an emergency department's ordinary work is never throttled");
                    ordinary += 1;
                }
            }
        }
    }
    assert_eq!(ordinary, 24);

    // One more distinct child crosses the threshold: refused, with the time until the window
    // lets the sweeper in again (everything happened at one instant: the whole hour).
    let notified_before = stack.notifications("LA1").await.len();
    let status = stack
        .lookup(&sweeper, &refused, AccessMode::Unscheduled)
        .await
        .expect_err("throttled past the threshold");
    assert_throttled(&status, Duration::from_secs(3600));
    // Throttled now: another new child, and even one seen before, are refused too.
    for again in [nhs(threshold + 1), nhs(0)] {
        let status = stack
            .lookup(&sweeper, &again, AccessMode::Unscheduled)
            .await
            .expect_err("still throttled");
        assert_throttled(&status, Duration::from_secs(3600));
    }
    // Nothing recorded or notified for the refused calls.
    assert_eq!(recorded(&stack, &refused), 0);
    assert_eq!(recorded(&stack, &nhs(threshold + 1)), 0);
    assert_eq!(stack.notifications("LA1").await.len(), notified_before);
    // The ED next door carries on.
    for clinician in &clinicians {
        stack
            .lookup(clinician, &nhs(0), AccessMode::Unscheduled)
            .await
            .expect("the ED is not throttled by the sweeper");
    }

    // A second sweeper, elsewhere, so the listing has two events to page through.
    let second_id = user(1, backend, 8);
    let second = ed(&second_id, "RSW02");
    for i in 0..threshold {
        stack
            .lookup(&second, &nhs(200 + i), AccessMode::Unscheduled)
            .await
            .expect("under the threshold");
    }
    let status = stack
        .lookup(&second, &nhs(200 + threshold), AccessMode::Unscheduled)
        .await
        .expect_err("throttled past the threshold");
    assert_throttled(&status, Duration::from_secs(3600));

    // Exactly one event per crossing, however many refusals followed; newest first.
    let events = security_events(&stack).await;
    let users: Vec<&str> = events.iter().map(user_id_of).collect();
    assert_eq!(
        users,
        [second_id.as_str(), sweeper_id.as_str()],
        "{events:?}"
    );
    let event = &events[1];
    assert_eq!(event.kind, SecurityEventKind::LookupsThrottled as i32);
    assert_eq!(event.subject, ThrottledSubject::User as i32);
    assert_eq!(user_id_of(event), sweeper_id);
    assert_eq!(event.threshold, USER_PER_HOUR);
    assert_eq!(event.window.map(|w| w.seconds), Some(3600));
    assert_eq!(
        event.throttled_until.map(|t| t.seconds),
        Some(start_time() / 1_000_000 + 3600)
    );

    // One log line on target "security", naming the user and never a child.
    let lines: Vec<String> = captured
        .json_lines_with("enumeration threshold crossed")
        .into_iter()
        .filter(|line| line.contains(&sweeper_id))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line: Value = serde_json::from_str(&lines[0]).expect("json log line");
    assert_eq!(line["target"], "security", "{line}");
    assert_eq!(line["org"], "RSW01", "{line}");
    assert_eq!(line["threshold"], USER_PER_HOUR, "{line}");
    for i in 0..threshold + 2 {
        assert!(!lines[0].contains(&nhs(i)), "an NHS number in {line}");
    }

    // Once the window has moved past the sweep, the user is let in again.
    stack.clock.set(start_time() + 3_600_000_000);
    stack
        .lookup(&sweeper, &refused, AccessMode::Unscheduled)
        .await
        .expect("let in again once the window has passed");
    assert_eq!(recorded(&stack, &refused), 1);
}

async fn silent_reads_count(backend: Backend) {
    let Some(stack) = start_guarded(backend).await else {
        return;
    };
    let gp = person_named(
        &user(2, backend, 1),
        "Dr GP",
        &["B0170"],
        "AGP01",
        "GP_IN_HOURS",
    );
    for i in 0..USER_PER_HOUR as usize {
        stack
            .lookup(&gp, &nhs(i), AccessMode::ScheduledSilentRead)
            .await
            .expect("under the threshold");
    }
    let refused = nhs(USER_PER_HOUR as usize);
    let status = stack
        .lookup(&gp, &refused, AccessMode::ScheduledSilentRead)
        .await
        .expect_err("silent reads are counted");
    assert_throttled(&status, Duration::from_secs(3600));
    assert_eq!(
        recorded(&stack, &refused),
        0,
        "not even audited: nothing was read"
    );
    let events = security_events(&stack).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].subject, ThrottledSubject::User as i32);
}

async fn the_organisation_threshold_counts_every_user(backend: Backend) {
    let Some(stack) = start_guarded(backend).await else {
        return;
    };
    // Three clinicians of one trust, four children each (under their own threshold of five):
    // twelve distinct children, the organisation's threshold.
    let staff: Vec<Value> = (1..=4).map(|n| ed(&user(3, backend, n), "RORG1")).collect();
    for (s, clinician) in staff.iter().take(3).enumerate() {
        for i in 0..4 {
            stack
                .lookup(clinician, &nhs(s * 4 + i), AccessMode::Unscheduled)
                .await
                .expect("under both thresholds");
        }
    }
    // A fourth clinician's first child crosses the organisation's threshold.
    let status = stack
        .lookup(&staff[3], &nhs(50), AccessMode::Unscheduled)
        .await
        .expect_err("the organisation is throttled");
    assert_throttled(&status, Duration::from_secs(3600));
    assert!(status.message().contains("organisation"), "{status:?}");
    // The whole organisation: a colleague re-viewing a child seen before is refused too, while
    // another trust is not.
    let status = stack
        .lookup(&staff[0], &nhs(0), AccessMode::Unscheduled)
        .await
        .expect_err("the organisation is throttled");
    assert_throttled(&status, Duration::from_secs(3600));
    stack
        .lookup(
            &ed(&user(3, backend, 9), "ROTH1"),
            &nhs(50),
            AccessMode::Unscheduled,
        )
        .await
        .expect("another organisation is not throttled");
    assert_eq!(
        recorded(&stack, &nhs(50)),
        1,
        "only the other trust's lookup"
    );

    let events = security_events(&stack).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].subject, ThrottledSubject::Organisation as i32);
    assert_eq!(events[0].threshold, ORGANISATION_PER_HOUR);
    assert_eq!(user_id_of(&events[0]), user(3, backend, 4));
}
