//! The accessor: who viewed a child's CP-IS information and from where. The lookup service
//! builds one from a verified token and the registry records it; both validate it here, with the
//! same limits and texts, so the edge refuses (UNAUTHENTICATED, naming the claim) exactly what the
//! registry would refuse (INVALID_ARGUMENT, naming the field).

use cpis_proto::cpis::common::v1::{
    self as wire, CareSetting, ErrorReason, PersonAccessor, accessor::Kind,
};

use crate::ods::{ODS_CODE_RULE, OdsCode};
use crate::status::FieldViolation;

/// Longest identifier (user id, role profile id, job role code, system id), in UTF-8 bytes.
pub const MAX_ID_BYTES: usize = 64;
/// Longest name (person, job role, system, organisation), in UTF-8 bytes: the access event is
/// stored and sent as bytes, so the limit is in bytes on both sides.
pub const MAX_TEXT_BYTES: usize = 200;
/// Most activity codes an accessor may carry: generous (a CIS2 role profile lists every B-code
/// its job role grants), but bounded before anything is stored or logged.
pub const MAX_ACTIVITY_CODES: usize = 256;
/// Longest activity code ("B0107"), in bytes.
pub const MAX_ACTIVITY_CODE_BYTES: usize = 32;

/// A part of an accessor, named as the wire field and as the token claim it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessorField {
    /// A person or a system.
    Kind,
    PersonUserId,
    PersonName,
    PersonRoleProfileId,
    PersonJobRoleCode,
    PersonJobRoleName,
    PersonActivityCodes,
    SystemId,
    SystemName,
    SystemActivityCodes,
    ResponsiblePerson,
    ResponsibleUserId,
    ResponsibleName,
    ResponsibleJobRoleCode,
    ResponsibleJobRoleName,
    OrganisationOdsCode,
    OrganisationName,
    CareSetting,
}

impl AccessorField {
    /// The field's path in a registry request.
    pub fn wire_path(self) -> &'static str {
        match self {
            Self::Kind => "accessor.kind",
            Self::PersonUserId => "accessor.person.user_id",
            Self::PersonName => "accessor.person.name",
            Self::PersonRoleProfileId => "accessor.person.role_profile_id",
            Self::PersonJobRoleCode => "accessor.person.job_role_code",
            Self::PersonJobRoleName => "accessor.person.job_role_name",
            Self::PersonActivityCodes => "accessor.person.activity_codes",
            Self::SystemId => "accessor.system.system_id",
            Self::SystemName => "accessor.system.system_name",
            Self::SystemActivityCodes => "accessor.system.activity_codes",
            Self::ResponsiblePerson => "accessor.system.responsible_person",
            Self::ResponsibleUserId => "accessor.system.responsible_person.user_id",
            Self::ResponsibleName => "accessor.system.responsible_person.name",
            Self::ResponsibleJobRoleCode => "accessor.system.responsible_person.job_role_code",
            Self::ResponsibleJobRoleName => "accessor.system.responsible_person.job_role_name",
            Self::OrganisationOdsCode => "accessor.organisation.ods_code",
            Self::OrganisationName => "accessor.organisation.name",
            Self::CareSetting => "accessor.care_setting",
        }
    }

    /// The CIS2-style token claim the lookup service reads the part from.
    pub fn claim(self) -> &'static str {
        match self {
            Self::Kind => "uid",
            Self::PersonUserId => "uid",
            Self::PersonName => "name",
            Self::PersonRoleProfileId => "selected_roleid",
            Self::PersonJobRoleCode => "role_code",
            Self::PersonJobRoleName => "role_name",
            Self::PersonActivityCodes | Self::SystemActivityCodes => "activity_codes",
            Self::SystemId => "system_id",
            Self::SystemName => "system_name",
            Self::ResponsiblePerson => "responsible_person",
            Self::ResponsibleUserId => "responsible_person.uid",
            Self::ResponsibleName => "responsible_person.name",
            Self::ResponsibleJobRoleCode => "responsible_person.role_code",
            Self::ResponsibleJobRoleName => "responsible_person.role_name",
            Self::OrganisationOdsCode => "org_code",
            Self::OrganisationName => "org_name",
            Self::CareSetting => "care_setting",
        }
    }
}

/// One thing wrong with an accessor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessorViolation {
    /// Which part.
    pub field: AccessorField,
    /// The stable reason.
    pub reason: ErrorReason,
    /// What the rule is.
    pub description: &'static str,
}

impl AccessorViolation {
    /// As a violation of a registry request field.
    pub fn to_field_violation(&self) -> FieldViolation {
        FieldViolation::new(self.field.wire_path(), self.reason, self.description)
    }
}

/// An accessor that satisfies every rule: a person with a user id, or a system with an id and a
/// named responsible person; an organisation with a valid ODS code; a known care setting; every
/// text bounded in bytes and free of control characters.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidAccessor {
    wire: wire::Accessor,
    ods_code: OdsCode,
    care_setting: CareSetting,
}

struct Checks(Vec<AccessorViolation>);

impl Checks {
    fn fail(&mut self, field: AccessorField, reason: ErrorReason, description: &'static str) {
        self.0.push(AccessorViolation {
            field,
            reason,
            description,
        });
    }

    fn text(&mut self, field: AccessorField, value: &str, max: usize, required: bool) {
        if value.is_empty() {
            if required {
                self.fail(field, ErrorReason::FieldRequired, "is required");
            }
        } else if value.len() > max {
            self.fail(
                field,
                ErrorReason::FieldTooLong,
                if max == MAX_ID_BYTES {
                    "must be at most 64 bytes"
                } else {
                    "must be at most 200 bytes"
                },
            );
        } else if value.chars().any(char::is_control) {
            self.fail(
                field,
                ErrorReason::FieldFormat,
                "must not contain control characters",
            );
        } else if value.chars().any(crate::text::is_bidi_control) {
            // They reorder what the council and the next clinician read.
            self.fail(
                field,
                ErrorReason::FieldFormat,
                "must not contain bidirectional control characters",
            );
        } else if !crate::text::has_visible(value) {
            self.fail(
                field,
                ErrorReason::FieldFormat,
                "must contain a visible character",
            );
        }
    }

    fn codes(&mut self, field: AccessorField, codes: &[String]) {
        let well_formed = |c: &String| {
            !c.is_empty()
                && c.len() <= MAX_ACTIVITY_CODE_BYTES
                && c.bytes().all(|b| b.is_ascii_alphanumeric())
        };
        if codes.len() > MAX_ACTIVITY_CODES || !codes.iter().all(well_formed) {
            self.fail(
                field,
                ErrorReason::FieldFormat,
                "must be at most 256 codes of 1 to 32 letters and digits",
            );
        }
    }

    fn person(&mut self, p: &PersonAccessor, responsible: bool) {
        use AccessorField as F;
        let (uid, name, code, role) = if responsible {
            (
                F::ResponsibleUserId,
                F::ResponsibleName,
                F::ResponsibleJobRoleCode,
                F::ResponsibleJobRoleName,
            )
        } else {
            (
                F::PersonUserId,
                F::PersonName,
                F::PersonJobRoleCode,
                F::PersonJobRoleName,
            )
        };
        self.text(uid, &p.user_id, MAX_ID_BYTES, true);
        self.text(name, &p.name, MAX_TEXT_BYTES, false);
        self.text(code, &p.job_role_code, MAX_ID_BYTES, false);
        self.text(role, &p.job_role_name, MAX_TEXT_BYTES, false);
        if !responsible {
            self.text(
                F::PersonRoleProfileId,
                &p.role_profile_id,
                MAX_ID_BYTES,
                false,
            );
            self.codes(F::PersonActivityCodes, &p.activity_codes);
        }
    }
}

impl TryFrom<wire::Accessor> for ValidAccessor {
    type Error = Vec<AccessorViolation>;

    fn try_from(accessor: wire::Accessor) -> Result<Self, Self::Error> {
        use AccessorField as F;
        let mut checks = Checks(Vec::new());
        match &accessor.kind {
            Some(Kind::Person(p)) => checks.person(p, false),
            Some(Kind::System(s)) => {
                checks.text(F::SystemId, &s.system_id, MAX_ID_BYTES, true);
                checks.text(F::SystemName, &s.system_name, MAX_TEXT_BYTES, false);
                checks.codes(F::SystemActivityCodes, &s.activity_codes);
                match &s.responsible_person {
                    Some(p) => checks.person(p, true),
                    None => checks.fail(
                        F::ResponsiblePerson,
                        ErrorReason::FieldRequired,
                        "a named responsible person is required",
                    ),
                }
            }
            None => checks.fail(
                F::Kind,
                ErrorReason::FieldRequired,
                "a person or a system is required",
            ),
        }
        let organisation = accessor.organisation.as_ref();
        let ods_code = organisation.and_then(|o| OdsCode::parse(&o.ods_code).ok());
        if ods_code.is_none() {
            checks.fail(
                F::OrganisationOdsCode,
                ErrorReason::FieldFormat,
                ODS_CODE_RULE,
            );
        }
        checks.text(
            F::OrganisationName,
            organisation.map_or("", |o| o.name.as_str()),
            MAX_TEXT_BYTES,
            false,
        );
        let care_setting = CareSetting::try_from(accessor.care_setting)
            .ok()
            .filter(|s| *s != CareSetting::Unspecified);
        if care_setting.is_none() {
            checks.fail(
                F::CareSetting,
                ErrorReason::FieldRequired,
                "a known care setting is required",
            );
        }
        match (ods_code, care_setting, checks.0.is_empty()) {
            (Some(ods_code), Some(care_setting), true) => Ok(Self {
                wire: accessor,
                ods_code,
                care_setting,
            }),
            _ => Err(checks.0),
        }
    }
}

impl ValidAccessor {
    /// The organisation the access was made from.
    pub fn ods_code(&self) -> &OdsCode {
        &self.ods_code
    }

    /// The kind of care setting.
    pub fn care_setting(&self) -> CareSetting {
        self.care_setting
    }

    /// Who, for collapsing repeat views: "person:<uid>" or "system:<id>:<responsible uid>".
    pub fn key(&self) -> String {
        match &self.wire.kind {
            Some(Kind::Person(p)) => format!("person:{}", p.user_id),
            Some(Kind::System(s)) => format!(
                "system:{}:{}",
                s.system_id,
                s.responsible_person
                    .as_ref()
                    .map_or("", |p| p.user_id.as_str())
            ),
            // Unreachable for a validated accessor; a stable value rather than a panic.
            None => "unknown".into(),
        }
    }

    /// The wire form, as recorded and sent.
    pub fn as_wire(&self) -> &wire::Accessor {
        &self.wire
    }

    /// The wire form, by value.
    pub fn into_wire(self) -> wire::Accessor {
        self.wire
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpis_proto::cpis::common::v1::{Organisation, SystemAccessor};

    fn person(name: &str, org: &str) -> wire::Accessor {
        wire::Accessor {
            kind: Some(Kind::Person(PersonAccessor {
                user_id: "555000000001".into(),
                name: name.into(),
                activity_codes: vec!["B0107".into()],
                ..Default::default()
            })),
            organisation: Some(Organisation {
                ods_code: org.into(),
                name: "Test Hospital".into(),
            }),
            care_setting: CareSetting::EmergencyDepartment as i32,
        }
    }

    fn fields(result: Result<ValidAccessor, Vec<AccessorViolation>>) -> Vec<AccessorField> {
        result
            .err()
            .unwrap_or_default()
            .iter()
            .map(|v| v.field)
            .collect()
    }

    #[test]
    fn a_well_formed_person_is_valid() {
        let valid = ValidAccessor::try_from(person("Dr Test", "RXX01"));
        assert!(valid.is_ok(), "{valid:?}");
        let valid = valid.unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(valid.ods_code().as_str(), "RXX01");
        assert_eq!(valid.key(), "person:555000000001");
    }

    #[test]
    fn org_codes_must_be_ods_codes() {
        for bad in ["", "rxx01", "R", "RXX01RXX01R"] {
            assert_eq!(
                fields(ValidAccessor::try_from(person("Dr Test", bad))),
                [AccessorField::OrganisationOdsCode],
                "{bad:?}"
            );
        }
    }

    #[test]
    fn names_are_bounded_in_bytes_not_characters() {
        // 160 characters, 480 bytes: within a character limit, over the byte limit.
        let wide = "é".repeat(40) + &"日".repeat(120);
        assert_eq!(wide.chars().count(), 160);
        assert!(wide.len() > MAX_TEXT_BYTES);
        assert_eq!(
            fields(ValidAccessor::try_from(person(&wide, "RXX01"))),
            [AccessorField::PersonName]
        );
        let fits = "é".repeat(MAX_TEXT_BYTES / 2);
        assert!(ValidAccessor::try_from(person(&fits, "RXX01")).is_ok());
    }

    #[test]
    fn control_characters_are_refused() {
        assert_eq!(
            fields(ValidAccessor::try_from(person("Dr\nForged line", "RXX01"))),
            [AccessorField::PersonName]
        );
    }

    #[test]
    fn names_need_something_visible_and_no_bidi_controls() {
        for bad in [
            "\u{200b}\u{200c}\u{200d}\u{2060}\u{feff}",
            "   ",
            "Dr \u{202e}reversed",
            "\u{2066}Dr Who\u{2069}",
            "Dr\u{200f}",
            "Dr\u{061c}",
        ] {
            let Err(refused) = ValidAccessor::try_from(person(bad, "RXX01")) else {
                panic!("{bad:?} accepted");
            };
            assert_eq!(refused.len(), 1, "{bad:?}");
            assert_eq!(refused[0].field, AccessorField::PersonName, "{bad:?}");
            assert_eq!(refused[0].reason, ErrorReason::FieldFormat, "{bad:?}");
        }
        // Zero-width characters inside a visible name are kept (ZWNJ is ordinary in Persian).
        assert!(ValidAccessor::try_from(person("Dr Test\u{200c}a", "RXX01")).is_ok());
    }

    #[test]
    fn a_system_needs_its_responsible_person() {
        let mut system = person("", "NHS111");
        system.kind = Some(Kind::System(SystemAccessor {
            system_id: "sys-111".into(),
            ..Default::default()
        }));
        assert_eq!(
            fields(ValidAccessor::try_from(system)),
            [AccessorField::ResponsiblePerson]
        );
    }

    #[test]
    fn every_field_has_a_wire_path_and_a_claim() {
        assert_eq!(AccessorField::OrganisationOdsCode.claim(), "org_code");
        assert_eq!(
            AccessorField::PersonName.wire_path(),
            "accessor.person.name"
        );
    }
}
