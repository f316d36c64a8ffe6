//! Whatever a caller sends, validation never panics: it accepts a record whose every date
//! is within the contract's bounds, or names real fields.
use proptest::prelude::*;

use super::*;
use crate::domain::dates::LAST_WIRE_DATE;

/// Any google.type.Date: anything at all, near the plausible range, or at the edges.
pub(crate) fn any_wire_date() -> impl Strategy<Value = Date> {
    let edge = prop::sample::select(vec![
        i32::MIN,
        -1,
        0,
        1,
        1899,
        1900,
        9999,
        10_000,
        262_142,
        262_143,
        262_144,
        i32::MAX,
    ]);
    prop_oneof![
        (any::<i32>(), any::<i32>(), any::<i32>()),
        (1890..2060i32, -1..14i32, -1..33i32),
        (edge, 0..14i32, 0..33i32),
    ]
    .prop_map(|(year, month, day)| Date { year, month, day })
}

fn any_period() -> impl Strategy<Value = Option<wire::PlanPeriod>> {
    let date = || prop::option::weighted(0.8, any_wire_date());
    prop::option::weighted(
        0.9,
        (date(), date(), date()).prop_map(|(start_date, end_date, delete_date)| wire::PlanPeriod {
            start_date,
            end_date,
            delete_date,
        }),
    )
}

fn any_record() -> impl Strategy<Value = wire::ChildRecord> {
    let nhs = prop::sample::select(vec!["9990000018", "9991234560", "", "99900000189"]);
    let text = "(?s).{0,110}";
    let cpp =
        prop::option::of(any_period().prop_map(|period| wire::ChildProtectionPlan { period }));
    let lac = prop::option::of((any_period(), -1..6i32).prop_map(|(period, legal_basis)| {
        wire::LookedAfterChild {
            period,
            legal_basis,
        }
    }));
    let ucpp = prop::option::of(
        (any_period(), prop::option::weighted(0.9, any_wire_date())).prop_map(
            |(period, expected_delivery_date)| wire::UnbornChildProtectionPlan {
                period,
                expected_delivery_date,
            },
        ),
    );
    (
        nhs,
        text,
        text,
        prop::option::weighted(0.9, any_wire_date()),
        cpp,
        lac,
        ucpp,
    )
        .prop_map(
            |(nhs, given, family, dob, cpp, lac, ucpp)| wire::ChildRecord {
                nhs_number: nhs.to_owned(),
                given_name: given,
                family_name: family,
                date_of_birth: dob,
                child_protection_plan: cpp,
                looked_after_child: lac,
                unborn_child_protection_plan: ucpp,
                ..Default::default()
            },
        )
}

/// Every field path validation may name (under "record.").
fn known_fields() -> Vec<String> {
    let mut fields: Vec<String> = [
        "nhs_number",
        "local_case_id",
        "given_name",
        "family_name",
        "date_of_birth",
        "looked_after_child.legal_basis",
        "unborn_child_protection_plan.expected_delivery_date",
    ]
    .iter()
    .map(|f| format!("record.{f}"))
    .collect();
    for block in [
        "child_protection_plan",
        "looked_after_child",
        "unborn_child_protection_plan",
    ] {
        for tail in [
            "period",
            "period.start_date",
            "period.end_date",
            "period.delete_date",
        ] {
            fields.push(format!("record.{block}.{tail}"));
        }
    }
    fields.push("record".to_owned());
    fields
}

fn check_accepted(record: &ChildRecord, today: NaiveDate) {
    let within = |d: NaiveDate| (EARLIEST_PLAUSIBLE..=LAST_WIRE_DATE).contains(&d);
    let horizon = plus_months(today, HORIZON_MONTHS).unwrap_or(LAST_WIRE_DATE);
    let start_limit = plus_months(today, 12).unwrap_or(LAST_WIRE_DATE);
    assert!(within(record.date_of_birth) && record.date_of_birth <= today);
    let periods = [
        record.child_protection_plan,
        record.looked_after_child.map(|l| l.period),
        record.unborn_child_protection_plan.map(|u| u.period),
    ];
    for p in periods.into_iter().flatten() {
        assert!(within(p.start) && p.start <= start_limit);
        for d in [p.end, p.delete].into_iter().flatten() {
            assert!(within(d) && d <= horizon);
        }
        assert!(p.end.is_none_or(|end| end >= p.start));
    }
    if let Some(u) = record.unborn_child_protection_plan {
        assert!(u.expected_delivery >= u.period.start);
        assert!(plus_months(u.period.start, 10).is_some_and(|l| u.expected_delivery <= l));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn validation_accepts_bounded_records_or_names_real_fields(
        record in any_record(),
        today_days in 0..60_000i32,
    ) {
        let today = crate::domain::dates::from_days(today_days).unwrap_or_default();
        let known = known_fields();
        match validate_record(&record, "record.", today) {
            Ok(valid) => check_accepted(&valid, today),
            Err(violations) => {
                prop_assert!(!violations.is_empty());
                for v in violations {
                    prop_assert!(known.contains(&v.field), "unknown field {}", v.field);
                    prop_assert!(v.reason != ErrorReason::Unspecified);
                }
            }
        }
    }
}
