//! Turning contract values into text for people and JSON for scripts: dates, timestamps and
//! enum names without their prefixes.

use cpis_proto::cpis::common::v1::{
    AccessEvent, AccessMode, Accessor, CareSetting, LocalAuthority, LookedAfterLegalBasis,
    PlanType, accessor::Kind,
};
use cpis_proto::google::r#type::Date;
use cpis_proto::prost_types::Timestamp;
use serde_json::{Value, json};

/// `YYYY-MM-DD`, or empty for an absent date.
pub fn date(value: Option<&Date>) -> String {
    value.map_or_else(String::new, |d| {
        format!("{:04}-{:02}-{:02}", d.year, d.month, d.day)
    })
}

/// `YYYY-MM-DD` as a JSON string, or `null` for an absent date.
pub fn date_json(value: Option<&Date>) -> Value {
    value.map_or(Value::Null, |_| Value::String(date(value)))
}

/// `YYYY-MM-DD`, or `-` for an absent date (for people: an empty column reads as a mistake).
pub fn date_or_dash(value: Option<&Date>) -> String {
    value.map_or_else(|| "-".to_owned(), |_| date(value))
}

/// A timestamp as a JSON string, or `null`.
pub fn timestamp_json(value: Option<&Timestamp>) -> Value {
    let text = timestamp(value);
    if text.is_empty() {
        Value::Null
    } else {
        Value::String(text)
    }
}

/// A count with thousands separators, as the progress bar prints its counts (`12,345`).
pub fn number(value: u64) -> String {
    indicatif::HumanCount(value).to_string()
}

/// `1 row`, `2 rows`, `12,345 rows`.
pub fn count(value: u64, one: &str, many: &str) -> String {
    format!("{} {}", number(value), if value == 1 { one } else { many })
}

/// RFC 3339 in UTC to the second, or empty.
pub fn timestamp(value: Option<&Timestamp>) -> String {
    value
        .and_then(|t| {
            chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
        })
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

fn strip<'a>(name: &'a str, prefix: &str) -> &'a str {
    name.strip_prefix(prefix).unwrap_or(name)
}

/// `EMERGENCY_DEPARTMENT` for a care setting value.
pub fn care_setting(value: i32) -> &'static str {
    CareSetting::try_from(value).map_or("UNSPECIFIED", |v| strip(v.as_str_name(), "CARE_SETTING_"))
}

/// `UNSCHEDULED` or `SCHEDULED_SILENT_READ`.
pub fn access_mode(value: i32) -> &'static str {
    AccessMode::try_from(value).map_or("UNSPECIFIED", |v| strip(v.as_str_name(), "ACCESS_MODE_"))
}

/// `CHILD_PROTECTION_PLAN`, `LOOKED_AFTER_CHILD` or `UNBORN_CHILD_PROTECTION_PLAN`.
pub fn plan_type(value: i32) -> &'static str {
    PlanType::try_from(value).map_or("UNSPECIFIED", |v| strip(v.as_str_name(), "PLAN_TYPE_"))
}

/// `SECTION_31_CARE_ORDER` and so on; empty when unspecified.
pub fn legal_basis(value: i32) -> &'static str {
    match LookedAfterLegalBasis::try_from(value) {
        Ok(LookedAfterLegalBasis::Unspecified) | Err(_) => "",
        Ok(v) => strip(v.as_str_name(), "LOOKED_AFTER_LEGAL_BASIS_"),
    }
}

/// A council's contact details as JSON.
pub fn local_authority_json(la: &LocalAuthority) -> Value {
    json!({
        "ods_code": la.ods_code,
        "name": la.name,
        "emergency_duty_phone": la.emergency_duty_phone,
        "office_hours_phone": la.office_hours_phone,
        "update_time": timestamp(la.update_time.as_ref()),
    })
}

/// Who accessed, where, as JSON (person or system with its responsible person).
pub fn accessor_json(accessor: Option<&Accessor>) -> Value {
    let Some(accessor) = accessor else {
        return Value::Null;
    };
    let organisation = accessor.organisation.clone().unwrap_or_default();
    let who = match &accessor.kind {
        Some(Kind::Person(p)) => json!({
            "person": {
                "user_id": p.user_id, "name": p.name, "role_profile_id": p.role_profile_id,
                "job_role_code": p.job_role_code, "job_role_name": p.job_role_name,
                "activity_codes": p.activity_codes,
            }
        }),
        Some(Kind::System(s)) => {
            let r = s.responsible_person.clone().unwrap_or_default();
            json!({
                "system": {
                    "system_id": s.system_id, "system_name": s.system_name,
                    "activity_codes": s.activity_codes,
                    "responsible_person": {
                        "user_id": r.user_id, "name": r.name,
                        "job_role_code": r.job_role_code, "job_role_name": r.job_role_name,
                    },
                }
            })
        }
        None => json!({}),
    };
    let mut value = who;
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "organisation".into(),
            json!({ "ods_code": organisation.ods_code, "name": organisation.name }),
        );
        map.insert(
            "care_setting".into(),
            json!(care_setting(accessor.care_setting)),
        );
    }
    value
}

/// An access event as JSON.
pub fn access_event_json(event: &AccessEvent) -> Value {
    json!({
        "access_id": event.access_id,
        "access_time": timestamp(event.access_time.as_ref()),
        "nhs_number": event.nhs_number,
        "access_mode": access_mode(event.access_mode),
        "accessor": accessor_json(event.accessor.as_ref()),
        "request_id": event.request_id,
    })
}

/// "Dr A (Clinical Lead) at Royal Devon ED [RDEV1], EMERGENCY_DEPARTMENT" for a person.
pub fn accessor_line(accessor: Option<&Accessor>) -> String {
    let Some(accessor) = accessor else {
        return "unknown accessor".into();
    };
    let organisation = accessor.organisation.clone().unwrap_or_default();
    let who = match &accessor.kind {
        Some(Kind::Person(p)) => format!("{} ({}, user {})", p.name, p.job_role_name, p.user_id),
        Some(Kind::System(s)) => {
            let r = s.responsible_person.clone().unwrap_or_default();
            format!(
                "system {} ({}) for {} ({})",
                s.system_name, s.system_id, r.name, r.job_role_name
            )
        }
        None => "unknown accessor".into(),
    };
    format!(
        "{who} at {} [{}], {}",
        organisation.name,
        organisation.ods_code,
        care_setting(accessor.care_setting)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_render_in_iso_form() {
        let d = Date {
            year: 2026,
            month: 3,
            day: 4,
        };
        assert_eq!(date(Some(&d)), "2026-03-04");
        assert_eq!(date(None), "");
        let t = Timestamp {
            seconds: 1_764_000_000,
            nanos: 0,
        };
        assert_eq!(timestamp(Some(&t)), "2025-11-24T16:00:00Z");
    }

    #[test]
    fn enum_names_lose_their_prefix() {
        assert_eq!(
            care_setting(CareSetting::EmergencyDepartment as i32),
            "EMERGENCY_DEPARTMENT"
        );
        assert_eq!(access_mode(AccessMode::Unscheduled as i32), "UNSCHEDULED");
        assert_eq!(
            legal_basis(LookedAfterLegalBasis::Section20VoluntaryAccommodation as i32),
            "SECTION_20_VOLUNTARY_ACCOMMODATION"
        );
        assert_eq!(legal_basis(0), "");
        assert_eq!(care_setting(9999), "UNSPECIFIED");
    }
}
