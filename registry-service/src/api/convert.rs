//! Domain types to wire messages, at the edge: stored records, councils, visible plans and
//! accesses become the messages callers receive, and dates cross between chrono and
//! google.type.Date. (A council's record coming in is validated in `validate`.) Adding a field
//! to the lookup answer means a domain field (`domain::visibility::VisiblePlan`) and its line
//! in `disclosed_plan` here.

use chrono::NaiveDate;
use cpis_proto::cpis::common::v1::{
    self as wire, AccessEvent, DisclosedPlan, LocalAuthority, LookedAfterLegalBasis, Organisation,
    RecentAccess, accessor::Kind,
};
use cpis_proto::google::r#type::Date;

use crate::domain::contacts::Council;
use crate::domain::dates::{on_the_wire, timestamp, ymd};
use crate::domain::record::{PlanPeriod, StoredRecord};
use crate::domain::visibility::VisiblePlan;

/// Converts a google.type.Date with year, month and day all set, within google.type.Date's own
/// range (year 1..=9999): chrono accepts years up to 262143, which the wire cannot carry back.
pub(crate) fn to_naive(date: &Date) -> Option<NaiveDate> {
    let month = u32::try_from(date.month).ok()?;
    let day = u32::try_from(date.day).ok()?;
    NaiveDate::from_ymd_opt(date.year, month, day).filter(|d| on_the_wire(*d))
}

/// The wire form of a date.
pub(crate) fn to_wire_date(date: NaiveDate) -> Date {
    let (year, month, day) = ymd(date);
    // month is 1..=12 and day 1..=31: both fit an i32.
    Date {
        year,
        month: i32::try_from(month).unwrap_or_default(),
        day: i32::try_from(day).unwrap_or_default(),
    }
}
fn wire_period(period: &PlanPeriod) -> wire::PlanPeriod {
    wire::PlanPeriod {
        start_date: Some(to_wire_date(period.start)),
        end_date: period.end.map(to_wire_date),
        delete_date: period.delete.map(to_wire_date),
    }
}

/// A stored record as its council sees it (delete dates included).
pub(crate) fn record_to_wire(stored: &StoredRecord) -> wire::ChildRecord {
    let record = &stored.record;
    wire::ChildRecord {
        nhs_number: record.nhs_number.to_string(),
        local_case_id: record.local_case_id.clone().unwrap_or_default(),
        given_name: record.given_name.clone(),
        family_name: record.family_name.clone(),
        date_of_birth: Some(to_wire_date(record.date_of_birth)),
        child_protection_plan: record
            .child_protection_plan
            .map(|p| wire::ChildProtectionPlan {
                period: Some(wire_period(&p)),
            }),
        looked_after_child: record.looked_after_child.map(|l| wire::LookedAfterChild {
            period: Some(wire_period(&l.period)),
            legal_basis: l.legal_basis as i32,
        }),
        unborn_child_protection_plan: record.unborn_child_protection_plan.map(|u| {
            wire::UnbornChildProtectionPlan {
                period: Some(wire_period(&u.period)),
                expected_delivery_date: Some(to_wire_date(u.expected_delivery)),
            }
        }),
        local_authority_ods_code: stored.local_authority.to_string(),
        version: stored.version,
        create_time: Some(timestamp(stored.create_time)),
        update_time: Some(timestamp(stored.update_time)),
    }
}

/// A council's contact details on the wire; `update_time` only for the council itself.
pub(crate) fn council_to_wire(council: &Council, with_update_time: bool) -> LocalAuthority {
    LocalAuthority {
        ods_code: council.ods_code.to_string(),
        name: council.contacts.name.clone(),
        emergency_duty_phone: council.contacts.emergency_duty_phone.clone(),
        office_hours_phone: council
            .contacts
            .office_hours_phone
            .clone()
            .unwrap_or_default(),
        update_time: with_update_time.then(|| timestamp(council.update_time)),
    }
}

/// A plan as health sees it.
pub(crate) fn disclosed_plan(plan: &VisiblePlan) -> DisclosedPlan {
    DisclosedPlan {
        plan_type: plan.plan_type as i32,
        start_date: Some(to_wire_date(plan.start)),
        end_date: plan.end.map(to_wire_date),
        legal_basis: plan
            .legal_basis
            .map_or(0, |b: LookedAfterLegalBasis| b as i32),
        expected_delivery_date: plan.expected_delivery.map(to_wire_date),
    }
}

/// A recorded access as health sees it: when, where, who and their role.
pub(crate) fn recent_access(event: &AccessEvent) -> RecentAccess {
    let accessor = event.accessor.clone().unwrap_or_default();
    let (name, role) = match &accessor.kind {
        Some(Kind::Person(p)) => (p.name.clone(), p.job_role_name.clone()),
        Some(Kind::System(s)) => s
            .responsible_person
            .as_ref()
            .map(|p| (p.name.clone(), p.job_role_name.clone()))
            .unwrap_or_default(),
        None => (String::new(), String::new()),
    };
    RecentAccess {
        access_time: event.access_time,
        organisation: accessor.organisation.map(|o| Organisation {
            ods_code: o.ods_code,
            name: o.name,
        }),
        care_setting: accessor.care_setting,
        accessor_name: name,
        job_role_name: role,
        access_mode: event.access_mode,
    }
}
