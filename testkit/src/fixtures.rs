//! Council records the tests of both services start from.

use cpis_proto::cpis::common::v1::{ChildProtectionPlan, ChildRecord, PlanPeriod};
use cpis_proto::google::r#type::Date;

/// A calendar date.
pub fn date(year: i32, month: i32, day: i32) -> Date {
    Date { year, month, day }
}

/// A valid record on `nhs_number` with case id `case_id`: "Alex Example", born `born`, on a
/// child protection plan from 2025-01-10 with no end.
pub fn cpp(nhs_number: &str, case_id: &str, born: Date) -> ChildRecord {
    ChildRecord {
        nhs_number: nhs_number.into(),
        local_case_id: case_id.into(),
        given_name: "Alex".into(),
        family_name: "Example".into(),
        date_of_birth: Some(born),
        child_protection_plan: Some(ChildProtectionPlan {
            period: Some(PlanPeriod {
                start_date: Some(date(2025, 1, 10)),
                end_date: None,
                delete_date: None,
            }),
        }),
        ..Default::default()
    }
}
