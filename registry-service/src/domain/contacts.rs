//! A council's contact details: its name and the phone numbers health rings. Contacts are per
//! council, not per child; the emergency duty team number is mandatory (health must always have
//! a 24/7 number).

use cpis_core::{ods::OdsCode, status::FieldViolation};
use cpis_proto::cpis::common::v1::ErrorReason;

/// Longest council name, in characters.
pub(crate) const MAX_ORG_NAME: usize = 200;

const PHONE_RULE: &str = "must be 10 to 15 digits, optionally with spaces, hyphens and a leading +";

/// Validated contact details.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Contacts {
    /// The council's name.
    pub name: String,
    /// The emergency duty team's 24/7 number.
    pub emergency_duty_phone: String,
    /// The office-hours number, if any.
    pub office_hours_phone: Option<String>,
}

/// A council as stored: its contacts and its notification cursors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Council {
    /// The council's ODS code.
    pub ods_code: OdsCode,
    /// Its contacts.
    pub contacts: Contacts,
    /// When the contacts last changed (microseconds since the epoch).
    pub update_time: i64,
    /// The council's notifications acknowledged so far.
    pub acknowledged_sequence: i64,
}

/// A UK phone number as the contract describes it: digits with optional spaces and hyphens, an
/// optional leading '+', 10 to 15 digits.
fn is_phone(value: &str) -> bool {
    let body = value.strip_prefix('+').unwrap_or(value);
    let digits = body.bytes().filter(u8::is_ascii_digit).count();
    (10..=15).contains(&digits)
        && body
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b' ' || b == b'-')
        && value.len() <= 24
}

impl Contacts {
    /// Validates contact details as sent (`field` prefixes the violations' paths).
    pub fn parse(
        field: &str,
        name: &str,
        emergency_duty_phone: &str,
        office_hours_phone: &str,
    ) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        let mut fail = |name: &str, reason, description: &str| {
            violations.push(FieldViolation::new(
                format!("{field}.{name}"),
                reason,
                description,
            ));
        };
        let name = name.trim();
        if name.is_empty() {
            fail("name", ErrorReason::FieldRequired, "is required");
        } else if name.chars().count() > MAX_ORG_NAME {
            fail(
                "name",
                ErrorReason::FieldTooLong,
                "must be at most 200 characters",
            );
        } else if name.chars().any(char::is_control) {
            fail(
                "name",
                ErrorReason::FieldFormat,
                "must not contain control characters",
            );
        }
        let emergency = emergency_duty_phone.trim();
        if emergency.is_empty() {
            fail(
                "emergency_duty_phone",
                ErrorReason::FieldRequired,
                "is required: health must always have a 24/7 number to ring",
            );
        } else if !is_phone(emergency) {
            fail("emergency_duty_phone", ErrorReason::FieldFormat, PHONE_RULE);
        }
        let office = office_hours_phone.trim();
        if !office.is_empty() && !is_phone(office) {
            fail("office_hours_phone", ErrorReason::FieldFormat, PHONE_RULE);
        }
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(Self {
            name: name.to_owned(),
            emergency_duty_phone: emergency.to_owned(),
            office_hours_phone: Some(office.to_owned()).filter(|p| !p.is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones() {
        assert!(is_phone("020 7946 0000"));
        assert!(is_phone("+44-20-7946-0000"));
        assert!(!is_phone("999"));
        assert!(!is_phone("020 7946 000x"));
    }
}
