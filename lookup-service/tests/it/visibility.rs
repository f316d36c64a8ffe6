//! Visibility rules on both sides of each boundary day, against the registry's injected clock:
//! 365 days after a plan's end; 28 days after an unborn plan's expected delivery; nothing from a
//! child's 18th birthday; nothing from a delete date; nothing before a plan starts.

use cpis_proto::cpis::common::v1::{
    AccessMode, ChildProtectionPlan, ChildRecord, LookedAfterChild, LookedAfterLegalBasis,
    PlanPeriod, PlanType, UnbornChildProtectionPlan,
};
use cpis_testkit::{both_backends, db::Backend, nhs::nhs};

use crate::harness::{cpp, date, ed_clinician, noon, start};

both_backends!(boundaries);

fn period(
    start: (i32, i32, i32),
    end: Option<(i32, i32, i32)>,
    delete: Option<(i32, i32, i32)>,
) -> Option<PlanPeriod> {
    let d = |(y, m, day): (i32, i32, i32)| date(y, m, day);
    Some(PlanPeriod {
        start_date: Some(d(start)),
        end_date: end.map(d),
        delete_date: delete.map(d),
    })
}

/// A calendar day (year, month, day).
type Day = (i32, u32, u32);

/// (name, record, last visible day, first hidden day).
fn cases() -> Vec<(&'static str, ChildRecord, Day, Day)> {
    let mut ended = cpp(&nhs(100));
    ended.child_protection_plan = Some(ChildProtectionPlan {
        period: period((2024, 1, 10), Some((2025, 3, 1)), None),
    });

    let mut lac_ended = cpp(&nhs(101));
    lac_ended.child_protection_plan = None;
    lac_ended.looked_after_child = Some(LookedAfterChild {
        period: period((2024, 1, 10), Some((2024, 2, 29)), None),
        legal_basis: LookedAfterLegalBasis::Section31CareOrder as i32,
    });

    let mut unborn = cpp(&nhs(102));
    unborn.date_of_birth = Some(date(1995, 7, 7));
    unborn.child_protection_plan = None;
    unborn.unborn_child_protection_plan = Some(UnbornChildProtectionPlan {
        period: period((2025, 12, 1), None, None),
        expected_delivery_date: Some(date(2026, 6, 1)),
    });

    let mut turning_18 = cpp(&nhs(103));
    turning_18.date_of_birth = Some(date(2008, 9, 20));
    turning_18.child_protection_plan = Some(ChildProtectionPlan {
        period: period((2025, 1, 10), None, None),
    });

    let mut withdrawn = cpp(&nhs(104));
    withdrawn.child_protection_plan = Some(ChildProtectionPlan {
        period: period((2025, 1, 10), None, Some((2026, 7, 1))),
    });

    vec![
        ("cpp 365 days after end", ended, (2026, 3, 1), (2026, 3, 2)),
        (
            "lac 365 days after a leap-day end",
            lac_ended,
            (2025, 2, 28),
            (2025, 3, 1),
        ),
        (
            "ucpp 28 days after delivery",
            unborn,
            (2026, 6, 29),
            (2026, 6, 30),
        ),
        ("18th birthday", turning_18, (2026, 9, 19), (2026, 9, 20)),
        ("delete date", withdrawn, (2026, 6, 30), (2026, 7, 1)),
    ]
}

async fn boundaries(backend: Backend) {
    let Some(stack) = start(backend).await else {
        return;
    };
    stack.register_council("AB1").await;
    // Records are written at "today" 2026-06-15 (validation needs dates on the right side of it).
    stack.clock.set(noon(2026, 6, 15));
    for (_, record, _, _) in cases() {
        stack.put("AB1", record).await;
    }
    let mut future = cpp(&nhs(105));
    future.child_protection_plan = Some(ChildProtectionPlan {
        period: period((2026, 6, 16), None, None),
    });
    stack.put("AB1", future).await;

    let ed = ed_clinician();
    for (name, record, visible, hidden) in cases() {
        for ((y, m, d), expect_visible) in [(visible, true), (hidden, false)] {
            stack.clock.set(noon(y, m, d));
            let answer = stack
                .lookup(&ed, &record.nhs_number, AccessMode::Unscheduled)
                .await
                .expect(name);
            assert_eq!(
                !answer.alerts.is_empty(),
                expect_visible,
                "{name} on {y}-{m}-{d}"
            );
            if expect_visible {
                let plan = &answer.alerts[0].plans[0];
                assert_ne!(plan.plan_type, PlanType::Unspecified as i32);
                assert!(plan.start_date.is_some());
            }
        }
    }
    // A plan is not shown before its start date.
    for ((y, m, d), expect_visible) in [((2026, 6, 15), false), ((2026, 6, 16), true)] {
        stack.clock.set(noon(y, m, d));
        let answer = stack
            .lookup(&ed, &nhs(105), AccessMode::Unscheduled)
            .await
            .expect("future plan");
        assert_eq!(
            !answer.alerts.is_empty(),
            expect_visible,
            "future plan on {y}-{m}-{d}"
        );
    }
}
