//! What health may see of a stored record on a given day (domain: "What a care setting sees"):
//! a plan is shown from its start date until 365 days after its end date; an unborn child plan
//! also only until 28 days after the expected delivery date; a child's plans (CPP, LAC) not on
//! or after the 18th birthday; a plan with a delete date on or before today never.

use chrono::{Days, Months, NaiveDate};
use cpis_proto::cpis::common::v1::{DisclosedPlan, PlanType};

use crate::db::models::ChildRecordRow;
use crate::record::{from_days, to_wire_date};

/// Days a plan stays visible after its end date.
pub const AFTER_END_DAYS: u64 = 365;
/// Days an unborn child plan stays visible after the expected delivery date.
pub const AFTER_DELIVERY_DAYS: u64 = 28;

fn period_visible(
    start: NaiveDate,
    end: Option<NaiveDate>,
    delete: Option<NaiveDate>,
    today: NaiveDate,
) -> bool {
    if delete.is_some_and(|d| d <= today) {
        return false;
    }
    if start > today {
        return false;
    }
    end.is_none_or(|end| today <= end + Days::new(AFTER_END_DAYS))
}

/// The plans of `row` health may see on `today`, in CPP, LAC, UCPP order. Dates that fail to
/// decode (a corrupt row) hide the plan rather than show something wrong.
pub fn visible_plans(row: &ChildRecordRow, today: NaiveDate) -> Vec<DisclosedPlan> {
    let day = |d: Option<i32>| d.and_then(from_days);
    let mut plans = Vec::new();
    let under_18 =
        from_days(row.date_of_birth).is_some_and(|dob| today < dob + Months::new(18 * 12));

    if let (Some(start), true) = (day(row.cpp_start), under_18)
        && period_visible(start, day(row.cpp_end), day(row.cpp_delete), today)
    {
        plans.push(DisclosedPlan {
            plan_type: PlanType::ChildProtectionPlan as i32,
            start_date: Some(to_wire_date(start)),
            end_date: day(row.cpp_end).map(to_wire_date),
            ..Default::default()
        });
    }
    if let (Some(start), true) = (day(row.lac_start), under_18)
        && period_visible(start, day(row.lac_end), day(row.lac_delete), today)
    {
        plans.push(DisclosedPlan {
            plan_type: PlanType::LookedAfterChild as i32,
            start_date: Some(to_wire_date(start)),
            end_date: day(row.lac_end).map(to_wire_date),
            legal_basis: row.lac_legal_basis.unwrap_or_default(),
            ..Default::default()
        });
    }
    if let (Some(start), Some(edd)) = (day(row.ucpp_start), day(row.ucpp_expected_delivery))
        && period_visible(start, day(row.ucpp_end), day(row.ucpp_delete), today)
        && today <= edd + Days::new(AFTER_DELIVERY_DAYS)
    {
        plans.push(DisclosedPlan {
            plan_type: PlanType::UnbornChildProtectionPlan as i32,
            start_date: Some(to_wire_date(start)),
            end_date: day(row.ucpp_end).map(to_wire_date),
            expected_delivery_date: Some(to_wire_date(edd)),
            ..Default::default()
        });
    }
    plans
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::to_days;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap_or_default()
    }

    #[test]
    fn end_date_tail_is_365_days() {
        let end = d(2025, 1, 1);
        assert!(period_visible(
            d(2024, 1, 1),
            Some(end),
            None,
            end + Days::new(365)
        ));
        assert!(!period_visible(
            d(2024, 1, 1),
            Some(end),
            None,
            end + Days::new(366)
        ));
    }

    #[test]
    fn delete_date_hides_from_that_day() {
        assert!(period_visible(
            d(2024, 1, 1),
            None,
            Some(d(2025, 1, 2)),
            d(2025, 1, 1)
        ));
        assert!(!period_visible(
            d(2024, 1, 1),
            None,
            Some(d(2025, 1, 1)),
            d(2025, 1, 1)
        ));
    }

    #[test]
    fn eighteenth_birthday_ends_a_childs_plans() {
        let row = ChildRecordRow {
            id: 1,
            local_authority: "AB1".into(),
            nhs_number: "9990000018".into(),
            local_case_id: None,
            given_name: String::new(),
            family_name: String::new(),
            date_of_birth: to_days(d(2008, 6, 15)),
            cpp_start: Some(to_days(d(2020, 1, 1))),
            cpp_end: None,
            cpp_delete: None,
            lac_start: None,
            lac_end: None,
            lac_delete: None,
            lac_legal_basis: None,
            ucpp_start: None,
            ucpp_end: None,
            ucpp_delete: None,
            ucpp_expected_delivery: None,
            version: 1,
            create_time: 0,
            update_time: 0,
        };
        assert_eq!(visible_plans(&row, d(2026, 6, 14)).len(), 1);
        assert!(visible_plans(&row, d(2026, 6, 15)).is_empty());
    }
}
