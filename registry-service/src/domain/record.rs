//! A council's record of a child, as the registry holds it: who the child is (for matching) and
//! up to three plan blocks (child protection, looked after, unborn child protection). Built only
//! from a validated wire record (`api::convert`) or a stored row (`db::models`).

use chrono::NaiveDate;
use cpis_core::{nhs_number::NhsNumber, ods::OdsCode};
use cpis_proto::cpis::common::v1::LookedAfterLegalBasis;

/// Longest given or family name, in characters.
pub(crate) const MAX_NAME: usize = 100;
/// Longest council case id, in characters.
pub(crate) const MAX_CASE_ID: usize = 64;

/// A plan's dates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PlanPeriod {
    /// Start date.
    pub start: NaiveDate,
    /// End date, if any.
    pub end: Option<NaiveDate>,
    /// Delete (sent in error) date, if any; never shown to health.
    pub delete: Option<NaiveDate>,
}

impl PlanPeriod {
    /// The one "active" rule: a plan is active on `today` while it has not ended (no end date,
    /// or one not yet passed) and is not withdrawn (no delete date, or one still ahead).
    /// Listings apply the same rule in SQL (`db::records::active_plan_sql`); a test there holds
    /// the two together.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn is_active(&self, today: NaiveDate) -> bool {
        self.end.is_none_or(|end| end >= today) && self.delete.is_none_or(|delete| delete > today)
    }
}

/// A looked-after-child block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LookedAfter {
    /// The placement's dates.
    pub period: PlanPeriod,
    /// Children Act 1989 s31, s38 or s20.
    pub legal_basis: LookedAfterLegalBasis,
}

/// An unborn-child-protection block, held on the mother's NHS number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UnbornPlan {
    /// The plan's dates.
    pub period: PlanPeriod,
    /// The expected delivery date.
    pub expected_delivery: NaiveDate,
}

/// A council's record for one NHS number: the content a council controls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ChildRecord {
    /// The NHS number the record is held on.
    pub nhs_number: NhsNumber,
    /// The council's case id.
    pub local_case_id: Option<String>,
    /// Given name(s).
    pub given_name: String,
    /// Family name.
    pub family_name: String,
    /// Date of birth (the mother's for an unborn-only record).
    pub date_of_birth: NaiveDate,
    /// Child protection plan.
    pub child_protection_plan: Option<PlanPeriod>,
    /// Looked after child.
    pub looked_after_child: Option<LookedAfter>,
    /// Unborn child protection plan.
    pub unborn_child_protection_plan: Option<UnbornPlan>,
}

/// A record as stored: the content, whose it is, and its bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoredRecord {
    /// The council holding it.
    pub local_authority: OdsCode,
    /// The content.
    pub record: ChildRecord,
    /// Incremented by every change.
    pub version: i64,
    /// Microseconds since the epoch.
    pub create_time: i64,
    /// Microseconds since the epoch.
    pub update_time: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_until_the_end_date_and_before_the_delete_date() {
        let d = |day| NaiveDate::from_ymd_opt(2026, 1, day).unwrap_or_default();
        let plan = PlanPeriod {
            start: d(1),
            end: Some(d(10)),
            delete: Some(d(20)),
        };
        assert!(plan.is_active(d(10)));
        assert!(!plan.is_active(d(11)));
        let withdrawn = PlanPeriod {
            end: None,
            delete: Some(d(5)),
            ..plan
        };
        assert!(withdrawn.is_active(d(4)));
        assert!(!withdrawn.is_active(d(5)));
    }
}
