//! Dates a caller cannot use to blind or crash the registry: every date is refused outside the
//! contract's calendar and plausible bounds (naming the field, in a put and per record in an
//! upload), and a stored record whose dates cannot be evaluated (old data from before the
//! bounds) is left out of a disclosure without hiding any other council's plan. "Today" is fixed
//! at 2026-06-15.

use chrono::{Datelike as _, NaiveDate};
use cpis_core::status::{reason_of, violated_fields};
use cpis_proto::cpis::common::v1::{
    AccessMode, ChildRecord, ErrorReason, PlanPeriod, PlanType, UnbornChildProtectionPlan,
};
use cpis_testkit::{Stack, both_backends, db::Backend};
use registry_service::Clock;
use tonic::Code;

use crate::harness::{
    assert_rejections, batch, cpp_record, date, disclose, full_record, nhs, shown_plans, stack,
    upload,
};

both_backends!(
    dates_beyond_the_calendar_are_refused_naming_the_field,
    an_unevaluable_record_never_hides_another_councils_plan,
    an_upload_rejects_bad_dates_per_record_and_completes
);

/// 2026-06-15T12:00:00Z in microseconds.
const TODAY_MICROS: i64 = 1_781_524_800_000_000;

/// The far-future date of the report: valid for chrono, outside google.type.Date.
const FAR: (i32, i32, i32) = (262_142, 6, 1);

async fn start(backend: Backend) -> Option<Stack> {
    let reg = stack(backend)
        .clock(Clock::fixed(TODAY_MICROS))
        .start()
        .await?;
    for ods in ["AB1", "CD2", "EF3"] {
        reg.register_council(ods).await;
    }
    Some(reg)
}

/// Days since 1970-01-01, as the registry stores dates.
fn stored_days(year: i32, month: u32, day: u32) -> i32 {
    let date = NaiveDate::from_ymd_opt(year, month, day).expect("a chrono date");
    date.num_days_from_ce() - 719_163
}

fn ucpp(start: (i32, i32, i32), edd: (i32, i32, i32)) -> Option<UnbornChildProtectionPlan> {
    Some(UnbornChildProtectionPlan {
        period: Some(PlanPeriod {
            start_date: Some(date(start.0, start.1, start.2)),
            end_date: None,
            delete_date: None,
        }),
        expected_delivery_date: Some(date(edd.0, edd.1, edd.2)),
    })
}

type Mutation = Box<dyn Fn(&mut ChildRecord)>;

/// (case, mutation of a valid CPP record, the one field refused and why).
fn cases() -> Vec<(&'static str, Mutation, &'static str, ErrorReason)> {
    let period = |r: &mut ChildRecord| {
        r.child_protection_plan
            .and_then(|p| p.period)
            .expect("a cpp period")
    };
    let set = move |r: &mut ChildRecord, f: &dyn Fn(&mut PlanPeriod)| {
        let mut p = period(r);
        f(&mut p);
        r.child_protection_plan =
            Some(cpis_proto::cpis::common::v1::ChildProtectionPlan { period: Some(p) });
    };
    let (y, m, d) = FAR;
    vec![
        (
            "end date in year 262142",
            Box::new(move |r| set(r, &|p| p.end_date = Some(date(y, m, d)))),
            "child_protection_plan.period.end_date",
            ErrorReason::FieldFormat,
        ),
        (
            "delete date in year 10000",
            Box::new(move |r| set(r, &|p| p.delete_date = Some(date(10_000, 1, 1)))),
            "child_protection_plan.period.delete_date",
            ErrorReason::FieldFormat,
        ),
        (
            "start date in year i32::MIN",
            Box::new(move |r| set(r, &|p| p.start_date = Some(date(i32::MIN, 1, 1)))),
            "child_protection_plan.period.start_date",
            ErrorReason::FieldFormat,
        ),
        (
            "start date before 1900",
            Box::new(move |r| set(r, &|p| p.start_date = Some(date(1899, 12, 31)))),
            "child_protection_plan.period.start_date",
            ErrorReason::FieldFormat,
        ),
        (
            "end date beyond 25 years ahead",
            Box::new(move |r| set(r, &|p| p.end_date = Some(date(2051, 6, 16)))),
            "child_protection_plan.period.end_date",
            ErrorReason::DateInFuture,
        ),
        (
            "delete date beyond 25 years ahead",
            Box::new(move |r| set(r, &|p| p.delete_date = Some(date(2051, 6, 16)))),
            "child_protection_plan.period.delete_date",
            ErrorReason::DateInFuture,
        ),
        (
            "delete date before 1900",
            Box::new(move |r| set(r, &|p| p.delete_date = Some(date(1899, 12, 31)))),
            "child_protection_plan.period.delete_date",
            ErrorReason::FieldFormat,
        ),
        (
            "date of birth before 1900",
            Box::new(|r| r.date_of_birth = Some(date(1899, 12, 31))),
            "date_of_birth",
            ErrorReason::DateOfBirthImplausible,
        ),
        (
            "date of birth in year 262142",
            Box::new(move |r| r.date_of_birth = Some(date(y, m, d))),
            "date_of_birth",
            ErrorReason::FieldFormat,
        ),
        (
            "ucpp start in year 262142",
            Box::new(move |r| {
                r.child_protection_plan = None;
                r.date_of_birth = Some(date(1990, 3, 3));
                r.unborn_child_protection_plan = ucpp(FAR, (2026, 7, 1));
            }),
            "unborn_child_protection_plan.period.start_date",
            ErrorReason::FieldFormat,
        ),
        (
            "expected delivery in year 262142",
            Box::new(move |r| {
                r.child_protection_plan = None;
                r.date_of_birth = Some(date(1990, 3, 3));
                r.unborn_child_protection_plan = ucpp((2026, 1, 1), FAR);
            }),
            "unborn_child_protection_plan.expected_delivery_date",
            ErrorReason::FieldFormat,
        ),
    ]
}

/// (a) A put naming each bad date is refused INVALID_ARGUMENT, naming that field; the bounds
/// themselves are accepted.
async fn dates_beyond_the_calendar_are_refused_naming_the_field(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    let _client = reg.council().await;
    for (i, (name, mutate, field, reason)) in cases().into_iter().enumerate() {
        let mut record = cpp_record(&nhs(i));
        mutate(&mut record);
        let status = reg.try_put("AB1", record).await.expect_err(name);
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert_eq!(reason_of(&status), Some(reason), "{name}: {status:?}");
        assert_eq!(
            violated_fields(&status),
            [format!("record.{field}")],
            "{name}"
        );
    }
    // The bounds themselves: 1900-01-01 and 25 years from today.
    let mut record = cpp_record(&nhs(100));
    record.child_protection_plan = Some(cpis_proto::cpis::common::v1::ChildProtectionPlan {
        period: Some(PlanPeriod {
            start_date: Some(date(2025, 1, 10)),
            end_date: Some(date(2051, 6, 15)),
            delete_date: Some(date(2051, 6, 15)),
        }),
    });
    reg.put("AB1", record).await;
    let mut mother = cpp_record(&nhs(101));
    mother.date_of_birth = Some(date(1900, 1, 1));
    mother.child_protection_plan = None;
    mother.unborn_child_protection_plan = ucpp((2026, 1, 1), (2026, 7, 1));
    reg.put("AB1", mother).await;
}

/// (b) Old rows written before the bounds existed: AB1's plan ends in year 262142 and EF3's
/// record carries a date of birth in that year. Neither hides CD2's plan; AB1's plan and EF3's
/// child plans (which need the date of birth) are left out; EF3's unborn plan, which does not
/// depend on it, is still shown.
async fn an_unevaluable_record_never_hides_another_councils_plan(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    let child = nhs(0);
    reg.put("AB1", cpp_record(&child)).await;
    reg.put("CD2", full_record(&child)).await;
    let mut ef3 = cpp_record(&child);
    ef3.unborn_child_protection_plan = ucpp((2026, 1, 1), (2026, 7, 1));
    reg.put("EF3", ef3).await;

    let far = stored_days(262_142, 6, 1);
    let changed = reg.db.execute(&format!(
        "UPDATE child_records SET cpp_end = {far} WHERE local_authority = 'AB1'"
    ));
    assert_eq!(changed, 1);
    let changed = reg.db.execute(&format!(
        "UPDATE child_records SET date_of_birth = {far} WHERE local_authority = 'EF3'"
    ));
    assert_eq!(changed, 1);

    for _ in 0..2 {
        let answer = disclose(&reg, &child, AccessMode::Unscheduled).await;
        let shown = shown_plans(&answer);
        let (cpp, lac, ucpp) = (
            PlanType::ChildProtectionPlan as i32,
            PlanType::LookedAfterChild as i32,
            PlanType::UnbornChildProtectionPlan as i32,
        );
        assert_eq!(
            shown,
            [
                ("CD2".to_owned(), vec![cpp, lac]),
                ("EF3".to_owned(), vec![ucpp])
            ]
        );
        // Every date disclosed is a google.type.Date (year 1..=9999).
        for plan in answer.alerts.iter().flat_map(|a| &a.plans) {
            for d in [
                &plan.start_date,
                &plan.end_date,
                &plan.expected_delivery_date,
            ]
            .into_iter()
            .flatten()
            {
                assert!((1..=9999).contains(&d.year), "{d:?}");
            }
        }
    }
}

/// (c) An upload carrying such dates rejects exactly those records and completes, across
/// several commits.
async fn an_upload_rejects_bad_dates_per_record_and_completes(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    let cases = cases();
    let total = 1_200;
    let mut expected = Vec::new();
    let records: Vec<ChildRecord> = (0..total)
        .map(|i| {
            let mut record = cpp_record(&nhs(i));
            if i % 100 == 7 {
                let (_, mutate, field, reason) = &cases[(i / 100) % cases.len()];
                mutate(&mut record);
                expected.push((
                    u64::try_from(i + 1).unwrap_or(0),
                    (*field).to_owned(),
                    *reason as i32,
                ));
            }
            record
        })
        .collect();
    let result = upload(&reg, "AB1", batch("far-dates", records))
        .await
        .expect("the batch completes")
        .result
        .expect("a result");
    assert_rejections(&result, total, &expected);
}
