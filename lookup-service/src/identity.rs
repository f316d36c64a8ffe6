//! The NHS caller, from a verified token modelled on an NHS CIS2 ID token: a person with their
//! selected role (`selected_roleid` within `nhsid_nrbac_roles`), or a system acting for a service
//! such as NHS 111 with a named responsible person. Becomes the `ValidAccessor` the registry
//! records.

use cpis_core::accessor::{AccessorField, ValidAccessor};
use cpis_core::auth::AuthError;
use cpis_proto::cpis::common::v1::{
    Accessor, CareSetting, Organisation, PersonAccessor, SystemAccessor, accessor::Kind,
};
use serde::Deserialize;

/// One national RBAC role of a person (CIS2 `nhsid_nrbac_roles` entry).
#[derive(Debug, Default, Deserialize)]
pub struct RbacRole {
    /// The role profile's id; the selected one decides.
    #[serde(default)]
    pub person_roleid: String,
    /// The organisation's ODS code.
    #[serde(default)]
    pub org_code: String,
    /// Job role code ("R" code).
    #[serde(default)]
    pub role_code: String,
    /// Job role name.
    #[serde(default)]
    pub role_name: String,
    /// Activity codes ("B" codes).
    #[serde(default)]
    pub activity_codes: Vec<String>,
}

/// A system's responsible person.
#[derive(Debug, Default, Deserialize)]
pub struct ResponsiblePerson {
    /// User id.
    #[serde(default)]
    pub uid: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Job role code.
    #[serde(default)]
    pub role_code: String,
    /// Job role name.
    #[serde(default)]
    pub role_name: String,
}

/// The claims an NHS token carries beyond iss/aud/exp.
#[derive(Debug, Default, Deserialize)]
pub struct NhsClaims {
    #[serde(default)]
    sub: String,
    #[serde(default)]
    uid: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    selected_roleid: String,
    #[serde(default)]
    nhsid_nrbac_roles: Vec<RbacRole>,
    #[serde(default)]
    org_name: String,
    #[serde(default)]
    care_setting: String,
    // A system (device) identity.
    #[serde(default)]
    system_id: String,
    #[serde(default)]
    system_name: String,
    #[serde(default)]
    org_code: String,
    #[serde(default)]
    activity_codes: Vec<String>,
    responsible_person: Option<ResponsiblePerson>,
}

/// An authenticated NHS caller, whose accessor satisfies every rule the registry applies.
#[derive(Clone, Debug)]
pub struct Caller {
    /// As the registry records it.
    pub accessor: ValidAccessor,
    /// The activity codes the policy judges.
    pub activity_codes: Vec<String>,
}

/// Why a token's claims cannot make a caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimsError {
    /// The identity claims are missing or malformed: UNAUTHENTICATED.
    Invalid(AuthError),
    /// The token names no care setting CP-IS serves (all else valid): the role policy refuses
    /// it. Carries the organisation's ODS code for the security log.
    UnknownCareSetting {
        /// The caller's organisation.
        org: String,
    },
}

fn invalid(why: impl Into<String>) -> ClaimsError {
    ClaimsError::Invalid(AuthError::Invalid(why.into()))
}

impl NhsClaims {
    /// The accessor these claims describe, before validation.
    fn accessor(self) -> Result<(Accessor, Vec<String>), ClaimsError> {
        let care_setting =
            CareSetting::from_str_name(&format!("CARE_SETTING_{}", self.care_setting))
                .unwrap_or(CareSetting::Unspecified) as i32;
        if !self.system_id.is_empty() {
            let person = self
                .responsible_person
                .filter(|p| !p.uid.is_empty())
                .ok_or_else(|| invalid("a system token must name its responsible person"))?;
            let accessor = Accessor {
                kind: Some(Kind::System(SystemAccessor {
                    system_id: self.system_id,
                    system_name: self.system_name,
                    responsible_person: Some(PersonAccessor {
                        user_id: person.uid,
                        name: person.name,
                        role_profile_id: String::new(),
                        job_role_code: person.role_code,
                        job_role_name: person.role_name,
                        activity_codes: Vec::new(),
                    }),
                    activity_codes: self.activity_codes.clone(),
                })),
                organisation: Some(Organisation {
                    ods_code: self.org_code,
                    name: self.org_name,
                }),
                care_setting,
            };
            return Ok((accessor, self.activity_codes));
        }
        let user_id = if self.uid.is_empty() {
            self.sub
        } else {
            self.uid
        };
        if user_id.is_empty() {
            return Err(invalid("the token names no user (uid or sub)"));
        }
        let role = self
            .nhsid_nrbac_roles
            .into_iter()
            .find(|r| !self.selected_roleid.is_empty() && r.person_roleid == self.selected_roleid)
            .ok_or_else(|| invalid("selected_roleid does not name one of nhsid_nrbac_roles"))?;
        let accessor = Accessor {
            kind: Some(Kind::Person(PersonAccessor {
                user_id,
                name: self.name,
                role_profile_id: role.person_roleid,
                job_role_code: role.role_code,
                job_role_name: role.role_name,
                activity_codes: role.activity_codes.clone(),
            })),
            organisation: Some(Organisation {
                ods_code: role.org_code,
                name: self.org_name,
            }),
            care_setting,
        };
        Ok((accessor, role.activity_codes))
    }

    /// The caller these claims describe. Refuses (naming the claim) whatever the registry would
    /// refuse in the accessor, with the same rules (`cpis_core::accessor`), so a malformed token
    /// is UNAUTHENTICATED here and never a registry error; a care setting CP-IS does not serve
    /// is left to the role policy.
    pub fn into_caller(self) -> Result<Caller, ClaimsError> {
        let (accessor, activity_codes) = self.accessor()?;
        let org = accessor
            .organisation
            .as_ref()
            .map(|o| o.ods_code.clone())
            .unwrap_or_default();
        match ValidAccessor::try_from(accessor) {
            Ok(accessor) => Ok(Caller {
                accessor,
                activity_codes,
            }),
            Err(violations) => {
                let claim = violations
                    .iter()
                    .find(|v| v.field != AccessorField::CareSetting);
                match claim {
                    Some(v) => Err(invalid(format!(
                        "claim {}: {}",
                        v.field.claim(),
                        v.description
                    ))),
                    None => Err(ClaimsError::UnknownCareSetting { org }),
                }
            }
        }
    }
}
