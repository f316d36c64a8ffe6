//! What health may see of a record on a given day (domain: "What a care setting sees"): a plan
//! is shown from its start date until 365 days after its end date; an unborn child plan also
//! only until 28 days after the expected delivery date; a child's plans (CPP, LAC) not on or
//! after the 18th birthday; a plan with a delete date on or before today never. This is the one
//! place a care-setting visibility rule lives.

use chrono::NaiveDate;
use cpis_proto::cpis::common::v1::{LookedAfterLegalBasis, PlanType};

use crate::domain::dates::{on_the_wire, plus_days, plus_months};
use crate::domain::record::{ChildRecord, PlanPeriod};

/// Days a plan stays visible after its end date.
pub(crate) const AFTER_END_DAYS: u64 = 365;
/// Days an unborn child plan stays visible after the expected delivery date.
pub(crate) const AFTER_DELIVERY_DAYS: u64 = 28;

/// A plan health may see: its kind and dates, never why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VisiblePlan {
    /// CPP, LAC or UCPP.
    pub plan_type: PlanType,
    /// Start date.
    pub start: NaiveDate,
    /// End date, if any.
    pub end: Option<NaiveDate>,
    /// LAC only.
    pub legal_basis: Option<LookedAfterLegalBasis>,
    /// UCPP only.
    pub expected_delivery: Option<NaiveDate>,
}

/// What health may see of one record on a given day.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Evaluation {
    /// The plans health may see, in CPP, LAC, UCPP order.
    pub plans: Vec<VisiblePlan>,
    /// Plan blocks that cannot be evaluated: a date google.type.Date cannot carry (a row stored
    /// before the contract bounded dates) or a rule's arithmetic past the calendar's end. They
    /// are left out for the caller to report, and never stop any other block or record being
    /// shown.
    pub unevaluable: Vec<PlanType>,
}

/// `date + days` has not passed on `today`; `None` past the calendar's end.
fn not_past(date: NaiveDate, days: u64, today: NaiveDate) -> Option<bool> {
    Some(today <= plus_days(date, days)?)
}

/// `None` when a date of the period is outside the wire calendar.
fn period_visible(period: &PlanPeriod, today: NaiveDate) -> Option<bool> {
    let dates = [Some(period.start), period.end, period.delete];
    if !dates.into_iter().flatten().all(on_the_wire) {
        return None;
    }
    if period.delete.is_some_and(|d| d <= today) || period.start > today {
        return Some(false);
    }
    match period.end {
        None => Some(true),
        Some(end) => not_past(end, AFTER_END_DAYS, today),
    }
}

/// Whether the person is under 18 on `today`; `None` when the date of birth is outside the wire
/// calendar.
fn under_18(date_of_birth: NaiveDate, today: NaiveDate) -> Option<bool> {
    if !on_the_wire(date_of_birth) {
        return None;
    }
    Some(today < plus_months(date_of_birth, 18 * 12)?)
}

/// The plans of `record` health may see on `today`, each block evaluated on its own.
pub(crate) fn evaluate(record: &ChildRecord, today: NaiveDate) -> Evaluation {
    let mut evaluation = Evaluation::default();
    let mut outcome = |shown: Option<bool>, plan: VisiblePlan| match shown {
        Some(true) => evaluation.plans.push(plan),
        Some(false) => {}
        None => evaluation.unevaluable.push(plan.plan_type),
    };
    // A child's plans end at the 18th birthday.
    let child = under_18(record.date_of_birth, today);
    if let Some(p) = record.child_protection_plan {
        let shown = child.zip(period_visible(&p, today)).map(|(c, v)| c && v);
        outcome(
            shown,
            VisiblePlan {
                plan_type: PlanType::ChildProtectionPlan,
                start: p.start,
                end: p.end,
                legal_basis: None,
                expected_delivery: None,
            },
        );
    }
    if let Some(lac) = record.looked_after_child {
        let shown = child
            .zip(period_visible(&lac.period, today))
            .map(|(c, v)| c && v);
        outcome(
            shown,
            VisiblePlan {
                plan_type: PlanType::LookedAfterChild,
                start: lac.period.start,
                end: lac.period.end,
                legal_basis: Some(lac.legal_basis),
                expected_delivery: None,
            },
        );
    }
    if let Some(ucpp) = record.unborn_child_protection_plan {
        // Held on the mother's number: her date of birth plays no part.
        let delivery = on_the_wire(ucpp.expected_delivery)
            .then(|| not_past(ucpp.expected_delivery, AFTER_DELIVERY_DAYS, today))
            .flatten();
        let shown = period_visible(&ucpp.period, today)
            .zip(delivery)
            .map(|(v, d)| v && d);
        outcome(
            shown,
            VisiblePlan {
                plan_type: PlanType::UnbornChildProtectionPlan,
                start: ucpp.period.start,
                end: ucpp.period.end,
                legal_basis: None,
                expected_delivery: Some(ucpp.expected_delivery),
            },
        );
    }
    evaluation
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpis_core::nhs_number::NhsNumber;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap_or_default()
    }

    fn period(start: NaiveDate, end: Option<NaiveDate>, delete: Option<NaiveDate>) -> PlanPeriod {
        PlanPeriod { start, end, delete }
    }

    fn cpp_record(dob: NaiveDate, plan: PlanPeriod) -> ChildRecord {
        ChildRecord {
            nhs_number: NhsNumber::parse("9990000018").unwrap_or_else(|e| panic!("{e}")),
            local_case_id: None,
            given_name: String::new(),
            family_name: String::new(),
            date_of_birth: dob,
            child_protection_plan: Some(plan),
            looked_after_child: None,
            unborn_child_protection_plan: None,
        }
    }

    #[test]
    fn end_date_tail_is_365_days() {
        let end = d(2025, 1, 1);
        let p = period(d(2024, 1, 1), Some(end), None);
        assert_eq!(period_visible(&p, end + chrono::Days::new(365)), Some(true));
        assert_eq!(
            period_visible(&p, end + chrono::Days::new(366)),
            Some(false)
        );
    }

    #[test]
    fn delete_date_hides_from_that_day() {
        assert_eq!(
            period_visible(
                &period(d(2024, 1, 1), None, Some(d(2025, 1, 2))),
                d(2025, 1, 1)
            ),
            Some(true)
        );
        assert_eq!(
            period_visible(
                &period(d(2024, 1, 1), None, Some(d(2025, 1, 1))),
                d(2025, 1, 1)
            ),
            Some(false)
        );
    }

    #[test]
    fn eighteenth_birthday_ends_a_childs_plans() {
        let record = cpp_record(d(2008, 6, 15), period(d(2020, 1, 1), None, None));
        assert_eq!(evaluate(&record, d(2026, 6, 14)).plans.len(), 1);
        assert_eq!(evaluate(&record, d(2026, 6, 15)), Evaluation::default());
    }

    #[test]
    fn dates_beyond_the_wire_calendar_are_unevaluable_not_shown() {
        let today = d(2026, 6, 15);
        let far = d(262_142, 6, 1);
        let unevaluable = Evaluation {
            plans: Vec::new(),
            unevaluable: vec![PlanType::ChildProtectionPlan],
        };
        let record = cpp_record(d(2020, 1, 1), period(d(2025, 1, 1), Some(far), None));
        assert_eq!(evaluate(&record, today), unevaluable);
        let record = cpp_record(far, period(d(2025, 1, 1), None, None));
        assert_eq!(evaluate(&record, today), unevaluable);
        let record = cpp_record(
            NaiveDate::MAX,
            period(d(2020, 1, 1), Some(NaiveDate::MAX), None),
        );
        assert_eq!(evaluate(&record, today), unevaluable);
        // The last day google.type.Date can carry still evaluates.
        let record = cpp_record(
            d(2020, 1, 1),
            period(d(2025, 1, 1), Some(d(9999, 12, 31)), None),
        );
        assert_eq!(evaluate(&record, today).plans.len(), 1);
    }
}

#[cfg(test)]
mod properties {
    //! Whatever dates a stored record carries (chrono's whole calendar, far beyond the wire's),
    //! evaluating it never panics, and each plan block is either evaluated or reported
    //! unevaluable, never silently lost.
    use cpis_core::nhs_number::NhsNumber;
    use proptest::prelude::*;

    use super::*;
    use crate::domain::dates::from_days;
    use crate::domain::record::{LookedAfter, UnbornPlan};

    /// Any date chrono can hold, biased towards the edges and today's neighbourhood.
    fn any_date() -> impl Strategy<Value = NaiveDate> {
        prop_oneof![
            any::<i32>().prop_filter_map("outside chrono", from_days),
            (-30_000..60_000i32).prop_filter_map("outside chrono", from_days),
            prop::sample::select(vec![
                NaiveDate::MIN,
                NaiveDate::MAX,
                crate::domain::dates::LAST_WIRE_DATE,
                crate::domain::dates::FIRST_WIRE_DATE,
            ]),
        ]
    }

    fn any_period() -> impl Strategy<Value = PlanPeriod> {
        (
            any_date(),
            prop::option::of(any_date()),
            prop::option::of(any_date()),
        )
            .prop_map(|(start, end, delete)| PlanPeriod { start, end, delete })
    }

    fn any_record() -> impl Strategy<Value = ChildRecord> {
        (
            any_date(),
            prop::option::of(any_period()),
            prop::option::of(any_period()),
            prop::option::of((any_period(), any_date())),
        )
            .prop_map(|(dob, cpp, lac, ucpp)| ChildRecord {
                nhs_number: NhsNumber::parse("9990000018").unwrap_or_else(|e| panic!("{e}")),
                local_case_id: None,
                given_name: String::new(),
                family_name: String::new(),
                date_of_birth: dob,
                child_protection_plan: cpp,
                looked_after_child: lac.map(|period| LookedAfter {
                    period,
                    legal_basis: LookedAfterLegalBasis::Section20VoluntaryAccommodation,
                }),
                unborn_child_protection_plan: ucpp.map(|(period, expected_delivery)| UnbornPlan {
                    period,
                    expected_delivery,
                }),
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn every_block_is_evaluated_or_reported(record in any_record(), today in any_date()) {
            let evaluation = evaluate(&record, today);
            let mut present = Vec::new();
            if record.child_protection_plan.is_some() {
                present.push(PlanType::ChildProtectionPlan);
            }
            if record.looked_after_child.is_some() {
                present.push(PlanType::LookedAfterChild);
            }
            if record.unborn_child_protection_plan.is_some() {
                present.push(PlanType::UnbornChildProtectionPlan);
            }
            // Nothing is counted twice, and nothing that is not there is invented.
            let mut seen: Vec<PlanType> = evaluation.plans.iter().map(|p| p.plan_type).collect();
            seen.extend(&evaluation.unevaluable);
            seen.sort_by_key(|t| *t as i32);
            seen.dedup();
            prop_assert_eq!(
                seen.len(),
                evaluation.plans.len() + evaluation.unevaluable.len()
            );
            prop_assert!(seen.iter().all(|t| present.contains(t)));
            // A shown plan carries only dates the wire can carry.
            for plan in &evaluation.plans {
                let dates = [Some(plan.start), plan.end, plan.expected_delivery];
                prop_assert!(dates.into_iter().flatten().all(on_the_wire));
            }
            // A block is unevaluable only if one of the dates it depends on is off the wire.
            for plan in &evaluation.unevaluable {
                let explained = match plan {
                    PlanType::ChildProtectionPlan => record
                        .child_protection_plan
                        .is_some_and(|p| off_wire(&p) || !on_the_wire(record.date_of_birth)),
                    PlanType::LookedAfterChild => record
                        .looked_after_child
                        .is_some_and(|l| off_wire(&l.period) || !on_the_wire(record.date_of_birth)),
                    PlanType::UnbornChildProtectionPlan => record
                        .unborn_child_protection_plan
                        .is_some_and(|u| off_wire(&u.period) || !on_the_wire(u.expected_delivery)),
                    PlanType::Unspecified => false,
                };
                prop_assert!(explained, "{plan:?} unevaluable without cause");
            }
            // A record whose dates are all on the wire is always fully evaluated.
            let all_on_the_wire = on_the_wire(record.date_of_birth)
                && record.child_protection_plan.is_none_or(|p| !off_wire(&p))
                && record.looked_after_child.is_none_or(|l| !off_wire(&l.period))
                && record
                    .unborn_child_protection_plan
                    .is_none_or(|u| !off_wire(&u.period) && on_the_wire(u.expected_delivery));
            if all_on_the_wire {
                prop_assert!(evaluation.unevaluable.is_empty());
            }
        }
    }

    fn off_wire(p: &PlanPeriod) -> bool {
        ![Some(p.start), p.end, p.delete]
            .into_iter()
            .flatten()
            .all(on_the_wire)
    }
}
