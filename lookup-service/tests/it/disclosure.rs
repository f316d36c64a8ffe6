//! What a disclosure shows and records: every council holding a visible record, the 25 most
//! recent accesses with repeat views collapsed and silent reads left out (but audited), nothing
//! when the access cannot be recorded, an UNAVAILABLE answer within the deadline when the
//! registry is down, and exactly one access event per successful lookup under concurrency.

use std::time::{Duration, Instant};

use cpis_core::status::reason_of;
use cpis_proto::cpis::common::v1::{AccessMode, ErrorReason, PlanType};
use cpis_proto::cpis::lookup::v1::{
    LookupChildRequest, lookup_service_client::LookupServiceClient,
};
use cpis_proto::cpis::registry::v1::notification;
use cpis_testkit::{Stack, both_backends, db::Backend};
use diesel::{Connection as _, RunQueryDsl as _};
use registry_service::Clock;
use tonic::Code;

use crate::harness::{
    NHS_A, NHS_B, NHS_C, cpp, ed_clinician, noon, person, person_named, start, unscheduled_lookup,
    with_token,
};

both_backends!(
    several_councils,
    recent_accesses_cap_and_collapse,
    silent_reads_stay_silent,
    nothing_disclosed_when_not_recorded,
    concurrent_lookups
);

async fn several_councils(backend: Backend) {
    let Some(stack) = start(backend).await else {
        return;
    };
    for ods in ["ZZ9", "AB1", "MM5"] {
        stack.register_council(ods).await;
    }
    let mut placed = cpp(NHS_A);
    placed.local_case_id = "AB1-CASE".into();
    stack.put("AB1", placed).await;
    let mut home = cpp(NHS_A);
    home.local_case_id = "ZZ9-CASE".into();
    home.child_protection_plan = None;
    home.looked_after_child = Some(cpis_proto::cpis::common::v1::LookedAfterChild {
        period: cpp(NHS_A).child_protection_plan.and_then(|p| p.period),
        legal_basis: cpis_proto::cpis::common::v1::LookedAfterLegalBasis::Section38InterimCareOrder
            as i32,
    });
    stack.put("ZZ9", home).await;
    stack.put("MM5", cpp(NHS_B)).await; // another child: must not appear

    let answer = stack
        .lookup(&ed_clinician(), NHS_A, AccessMode::Unscheduled)
        .await
        .expect("lookup");
    let councils: Vec<&str> = answer
        .alerts
        .iter()
        .map(|a| {
            a.local_authority
                .as_ref()
                .map_or("", |l| l.ods_code.as_str())
        })
        .collect();
    assert_eq!(
        councils,
        vec!["AB1", "ZZ9"],
        "one alert per council, ordered by ODS code"
    );
    let zz9 = &answer.alerts[1];
    let la = zz9.local_authority.as_ref().expect("council");
    assert_eq!(
        (
            la.name.as_str(),
            la.emergency_duty_phone.as_str(),
            la.office_hours_phone.as_str()
        ),
        ("Council ZZ9", "020 7946 0000", "020 7946 0001")
    );
    assert_eq!(zz9.plans.len(), 1);
    assert_eq!(zz9.plans[0].plan_type, PlanType::LookedAfterChild as i32);
    assert_eq!(
        zz9.plans[0].legal_basis,
        cpis_proto::cpis::common::v1::LookedAfterLegalBasis::Section38InterimCareOrder as i32
    );
    assert_eq!(
        answer.recent_accesses.len(),
        1,
        "the current access is listed"
    );

    // Each holding council is notified once, with its own case id; the other council is not.
    for (ods, case_id) in [("AB1", "AB1-CASE"), ("ZZ9", "ZZ9-CASE")] {
        let queued = stack.notifications(ods).await;
        assert_eq!(queued.len(), 1, "{ods}");
        assert_eq!(queued[0].sequence, 1);
        match &queued[0].kind {
            Some(notification::Kind::Access(access)) => {
                assert_eq!(access.local_case_id, case_id);
                let event = access.access_event.as_ref().expect("event");
                assert_eq!(event.nhs_number, NHS_A);
                assert_eq!(
                    event
                        .accessor
                        .as_ref()
                        .and_then(|a| a.organisation.as_ref())
                        .map(|o| o.ods_code.as_str()),
                    Some("RXX01")
                );
            }
            other => panic!("{ods}: unexpected {other:?}"),
        }
    }
    assert!(stack.notifications("MM5").await.is_empty());

    // A silent read notifies nobody and is not part of the council's access history.
    stack
        .lookup(
            &person(&["B0170"], "AGP01", "GP_IN_HOURS"),
            NHS_A,
            AccessMode::ScheduledSilentRead,
        )
        .await
        .expect("silent read");
    assert_eq!(stack.notifications("AB1").await.len(), 1);
    assert_eq!(stack.access_events("AB1", NHS_A).await, 1);
}

/// Scheduled silent reads (B0170) are audited but never shown: not in the recent accesses of
/// their own answer or the next clinician's, not in the council's history.
async fn silent_reads_stay_silent(backend: Backend) {
    let Some(stack) = start(backend).await else {
        return;
    };
    stack.register_council("AB1").await;
    stack.put("AB1", cpp(NHS_A)).await;
    let minute = 60_000_000;
    let ed = |uid: &str, name: &str| {
        person_named(uid, name, &["B0107"], "RXX01", "EMERGENCY_DEPARTMENT")
    };
    stack.clock.set(noon(2026, 6, 15) + minute);
    stack
        .lookup(
            &ed("555000000001", "Dr First"),
            NHS_A,
            AccessMode::Unscheduled,
        )
        .await
        .expect("first ED lookup");

    stack.clock.set(noon(2026, 6, 15) + 2 * minute);
    let sarc = person_named(
        "555000000002",
        "Dr Sarc",
        &["B0170"],
        "SARC1",
        "SEXUAL_ASSAULT_REFERRAL_CENTRE",
    );
    let silent = stack
        .lookup(&sarc, NHS_A, AccessMode::ScheduledSilentRead)
        .await
        .expect("silent read");
    assert_eq!(silent.alerts.len(), 1, "a silent read still sees the plan");
    let names = |answer: &cpis_proto::cpis::lookup::v1::LookupChildResponse| -> Vec<String> {
        answer
            .recent_accesses
            .iter()
            .map(|a| a.accessor_name.clone())
            .collect()
    };
    assert_eq!(names(&silent), vec!["Dr First"]);

    stack.clock.set(noon(2026, 6, 15) + 3 * minute);
    let next = stack
        .lookup(
            &ed("555000000003", "Dr Next"),
            NHS_A,
            AccessMode::Unscheduled,
        )
        .await
        .expect("next ED lookup");
    assert_eq!(names(&next), vec!["Dr Next", "Dr First"]);
    assert!(
        next.recent_accesses
            .iter()
            .all(|a| a.access_mode == AccessMode::Unscheduled as i32)
    );

    let history = stack.access_history("AB1", NHS_A).await;
    assert_eq!(history.len(), 2);
    assert!(
        history
            .iter()
            .all(|e| e.access_mode == AccessMode::Unscheduled as i32),
        "the council's history has no silent read"
    );
    // The silent read is still audited.
    assert_eq!(
        stack.db.count(&format!(
            "SELECT COUNT(*) AS n FROM access_events WHERE nhs_number = '{NHS_A}' \
             AND access_mode = {} AND organisation_ods_code = 'SARC1'",
            AccessMode::ScheduledSilentRead as i32
        )),
        1
    );
}

async fn recent_accesses_cap_and_collapse(backend: Backend) {
    let Some(stack) = start(backend).await else {
        return;
    };
    stack.register_council("AB1").await;
    stack.put("AB1", cpp(NHS_A)).await;
    let start = noon(2026, 6, 15);
    let minute = 60_000_000;

    // The same clinician three times within 24 hours is listed once (the newest).
    let repeat = person_named(
        "555000000777",
        "Dr Repeat",
        &["B0107"],
        "RXX01",
        "EMERGENCY_DEPARTMENT",
    );
    for i in 0..3 {
        stack.clock.set(start + i * 60 * minute);
        stack
            .lookup(&repeat, NHS_A, AccessMode::Unscheduled)
            .await
            .expect("repeat");
    }
    let answer = stack
        .lookup(&repeat, NHS_A, AccessMode::Unscheduled)
        .await
        .expect("repeat");
    assert_eq!(answer.recent_accesses.len(), 1);
    // 24 hours and more after the earlier view, the next one is listed separately.
    stack
        .clock
        .set(start + 2 * 60 * minute + 24 * 60 * minute + minute);
    let answer = stack
        .lookup(&repeat, NHS_A, AccessMode::Unscheduled)
        .await
        .expect("next day");
    assert_eq!(answer.recent_accesses.len(), 2);

    // 30 different clinicians: only the newest 25 are shown, newest first, current one included.
    let base = start + 3 * 24 * 60 * minute;
    for i in 0..30i64 {
        stack.clock.set(base + i * minute);
        let who = person_named(
            &format!("5550000010{i:02}"),
            &format!("Dr {i:02}"),
            &["B0107"],
            "RXX01",
            "EMERGENCY_DEPARTMENT",
        );
        let answer = stack
            .lookup(&who, NHS_A, AccessMode::Unscheduled)
            .await
            .expect("lookup");
        assert_eq!(
            answer.recent_accesses[0].accessor_name,
            format!("Dr {i:02}"),
            "the current access comes first"
        );
        if i == 29 {
            assert_eq!(answer.recent_accesses.len(), 25);
            let names: Vec<&str> = answer
                .recent_accesses
                .iter()
                .map(|a| a.accessor_name.as_str())
                .collect();
            let expected: Vec<String> = (5..30).rev().map(|n| format!("Dr {n:02}")).collect();
            assert_eq!(names, expected);
        }
    }
    assert_eq!(
        stack.access_events("AB1", NHS_A).await,
        35,
        "every access is recorded even when not listed"
    );
}

async fn nothing_disclosed_when_not_recorded(backend: Backend) {
    let Some(stack) = start(backend).await else {
        return;
    };
    stack.register_council("AB1").await;
    stack.put("AB1", cpp(NHS_C)).await;
    // Break the access log behind the registry's back: the access cannot be recorded.
    let url = stack.db.url.clone();
    tokio::task::spawn_blocking(move || match backend {
        Backend::Sqlite => {
            let path = url.trim_start_matches("sqlite://").to_owned();
            let mut conn = diesel::sqlite::SqliteConnection::establish(&path).expect("sqlite");
            diesel::sql_query("DROP TABLE access_events")
                .execute(&mut conn)
                .expect("drop");
        }
        Backend::Postgres => {
            let mut conn = diesel::pg::PgConnection::establish(&url).expect("pg");
            diesel::sql_query("DROP TABLE access_events")
                .execute(&mut conn)
                .expect("drop");
        }
    })
    .await
    .expect("break");
    let status = stack
        .lookup(&ed_clinician(), NHS_C, AccessMode::Unscheduled)
        .await
        .expect_err("cannot record, so cannot disclose");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(reason_of(&status), Some(ErrorReason::AccessNotRecorded));
    assert!(
        stack.notifications("AB1").await.is_empty(),
        "nothing queued either"
    );
}

async fn concurrent_lookups(backend: Backend) {
    // Fifty lookups of one child serialise on its council's commits: on a loaded machine the
    // last ones wait longer than the default 2 s registry budget, which is not what this tests.
    let Some(stack) = Stack::builder(backend)
        .clock(Clock::fixed(noon(2026, 6, 15)))
        .lookup(|config| config.registry_timeout = Duration::from_secs(20))
        .start()
        .await
    else {
        return;
    };
    stack.register_council("AB1").await;
    stack.put("AB1", cpp(NHS_A)).await;
    let ed = ed_clinician();
    let wrong = person(&["B0170"], "RXX01", "EMERGENCY_DEPARTMENT");
    let ok_token = stack
        .nhs_signer
        .mint(&ed, Duration::from_secs(600))
        .expect("mint");
    let refused_token = stack
        .nhs_signer
        .mint(&wrong, Duration::from_secs(600))
        .expect("mint");
    let channel = stack.lookup_server().channel().await;
    let calls = (0..50).map(|i| {
        let token = if i % 5 == 0 {
            refused_token.clone()
        } else {
            ok_token.clone()
        };
        let mut client = LookupServiceClient::new(channel.clone());
        async move {
            client
                .lookup_child(with_token(
                    LookupChildRequest {
                        nhs_number: NHS_A.into(),
                        access_mode: AccessMode::Unscheduled as i32,
                    },
                    &token,
                ))
                .await
        }
    });
    let results = futures::future::join_all(calls).await;
    let successes = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| {
            r.as_ref()
                .is_err_and(|s| s.code() == Code::PermissionDenied)
        })
        .count();
    assert_eq!(
        (successes, refused),
        (40, 10),
        "{:?}",
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .collect::<Vec<_>>()
    );
    assert_eq!(stack.access_events("AB1", NHS_A).await, 40);
    let queued = stack.notifications("AB1").await;
    let sequences: Vec<u64> = queued.iter().map(|n| n.sequence).collect();
    assert_eq!(
        sequences,
        (1..=40).collect::<Vec<u64>>(),
        "per-council sequences strictly increasing, no gaps"
    );
}

#[tokio::test]
async fn registry_down_is_unavailable_within_the_deadline() {
    let Some(mut stack) = start(Backend::Sqlite).await else {
        return;
    };
    let ed = ed_clinician();
    stack
        .lookup(&ed, NHS_A, AccessMode::Unscheduled)
        .await
        .expect("registry up");
    stack.stop_registry().await.expect("stop registry");

    let token = stack
        .nhs_signer
        .mint(&ed, Duration::from_secs(60))
        .expect("mint");
    let mut client = stack.lookup_client().await;
    let started = Instant::now();
    let mut request = unscheduled_lookup(NHS_A, &token);
    request.set_timeout(Duration::from_millis(1500));
    let status = client
        .lookup_child(request)
        .await
        .expect_err("registry down");
    let elapsed = started.elapsed();
    assert!(
        matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded),
        "{status:?}"
    );
    assert!(
        elapsed < Duration::from_millis(1600),
        "answered in {elapsed:?}, past the caller's deadline"
    );

    // A registry that never answers (a listener that accepts nothing): the deadline still holds.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let hung = stack
        .another_lookup(|config| {
            config.registry_url = format!("http://{silent_addr}");
        })
        .await;
    let mut client = LookupServiceClient::new(hung.channel().await);
    let started = Instant::now();
    let mut request = unscheduled_lookup(NHS_A, &token);
    request.set_timeout(Duration::from_millis(800));
    let status = client
        .lookup_child(request)
        .await
        .expect_err("hung registry");
    assert!(
        matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded),
        "{status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "answered in {:?}",
        started.elapsed()
    );
    drop(silent);
}
