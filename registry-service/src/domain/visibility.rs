//! What health may see of a record on a given day (domain: "What a care setting sees"): a plan
//! is shown from its start date until 365 days after its end date; an unborn child plan also
//! only until 28 days after the expected delivery date; a child's plans (CPP, LAC) not on or
//! after the 18th birthday; a plan with a delete date on or before today never. This is the one
//! place a care-setting visibility rule lives.

use chrono::NaiveDate;
use cpis_proto::cpis::common::v1::{LookedAfterLegalBasis, PlanType};

use crate::domain::dates::{plus_days, plus_months};
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

/// `date + days` has not passed on `today`. A sum beyond the calendar's end has not passed
/// either: checked arithmetic, so a far-future date a caller stored cannot panic a disclosure.
fn not_past(date: NaiveDate, days: u64, today: NaiveDate) -> bool {
    plus_days(date, days).is_none_or(|limit| today <= limit)
}

fn period_visible(period: &PlanPeriod, today: NaiveDate) -> bool {
    if period.delete.is_some_and(|d| d <= today) || period.start > today {
        return false;
    }
    period
        .end
        .is_none_or(|end| not_past(end, AFTER_END_DAYS, today))
}

/// The plans of `record` health may see on `today`, in CPP, LAC, UCPP order.
pub(crate) fn visible_plans(record: &ChildRecord, today: NaiveDate) -> Vec<VisiblePlan> {
    let mut plans = Vec::new();
    // An 18th birthday beyond the calendar's end has not happened yet.
    let under_18 = plus_months(record.date_of_birth, 18 * 12).is_none_or(|adult| today < adult);
    if let Some(p) = record.child_protection_plan
        && under_18
        && period_visible(&p, today)
    {
        plans.push(VisiblePlan {
            plan_type: PlanType::ChildProtectionPlan,
            start: p.start,
            end: p.end,
            legal_basis: None,
            expected_delivery: None,
        });
    }
    if let Some(lac) = record.looked_after_child
        && under_18
        && period_visible(&lac.period, today)
    {
        plans.push(VisiblePlan {
            plan_type: PlanType::LookedAfterChild,
            start: lac.period.start,
            end: lac.period.end,
            legal_basis: Some(lac.legal_basis),
            expected_delivery: None,
        });
    }
    if let Some(ucpp) = record.unborn_child_protection_plan
        && period_visible(&ucpp.period, today)
        && not_past(ucpp.expected_delivery, AFTER_DELIVERY_DAYS, today)
    {
        plans.push(VisiblePlan {
            plan_type: PlanType::UnbornChildProtectionPlan,
            start: ucpp.period.start,
            end: ucpp.period.end,
            legal_basis: None,
            expected_delivery: Some(ucpp.expected_delivery),
        });
    }
    plans
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
        assert!(period_visible(&p, end + chrono::Days::new(365)));
        assert!(!period_visible(&p, end + chrono::Days::new(366)));
    }

    #[test]
    fn delete_date_hides_from_that_day() {
        assert!(period_visible(
            &period(d(2024, 1, 1), None, Some(d(2025, 1, 2))),
            d(2025, 1, 1)
        ));
        assert!(!period_visible(
            &period(d(2024, 1, 1), None, Some(d(2025, 1, 1))),
            d(2025, 1, 1)
        ));
    }

    #[test]
    fn eighteenth_birthday_ends_a_childs_plans() {
        let record = cpp_record(d(2008, 6, 15), period(d(2020, 1, 1), None, None));
        assert_eq!(visible_plans(&record, d(2026, 6, 14)).len(), 1);
        assert!(visible_plans(&record, d(2026, 6, 15)).is_empty());
    }

    #[test]
    fn dates_at_the_end_of_the_calendar_do_not_panic() {
        let record = cpp_record(
            NaiveDate::MAX,
            period(d(2020, 1, 1), Some(NaiveDate::MAX), None),
        );
        assert_eq!(visible_plans(&record, d(2026, 6, 15)).len(), 1);
    }
}
