//! The NHS caller, from a verified token modelled on an NHS CIS2 ID token: a person with their
//! selected role (`selected_roleid` within `nhsid_nrbac_roles`), or a system acting for a service
//! such as NHS 111 with a named responsible person. Becomes the `Accessor` the registry records.

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

/// An authenticated NHS caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// As recorded by the registry.
    pub accessor: Accessor,
    /// The activity codes the policy judges.
    pub activity_codes: Vec<String>,
    /// The care setting (Unspecified when the token names none or an unknown one).
    pub care_setting: CareSetting,
}

fn invalid(why: &str) -> AuthError {
    AuthError::Invalid(why.to_owned())
}

fn bounded(value: &str, max: usize, what: &str) -> Result<String, AuthError> {
    if value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(invalid(&format!("claim {what} is too long or malformed")));
    }
    Ok(value.to_owned())
}

impl NhsClaims {
    /// The caller these claims describe.
    pub fn into_caller(self) -> Result<Caller, AuthError> {
        let care_setting =
            CareSetting::from_str_name(&format!("CARE_SETTING_{}", self.care_setting))
                .unwrap_or(CareSetting::Unspecified);
        if !self.system_id.is_empty() {
            let person = self
                .responsible_person
                .filter(|p| !p.uid.is_empty())
                .ok_or_else(|| invalid("a system token must name its responsible person"))?;
            if self.org_code.is_empty() {
                return Err(invalid(
                    "a system token must name its organisation (org_code)",
                ));
            }
            let accessor = Accessor {
                kind: Some(Kind::System(SystemAccessor {
                    system_id: bounded(&self.system_id, 64, "system_id")?,
                    system_name: bounded(&self.system_name, 200, "system_name")?,
                    responsible_person: Some(PersonAccessor {
                        user_id: bounded(&person.uid, 64, "responsible_person.uid")?,
                        name: bounded(&person.name, 200, "responsible_person.name")?,
                        role_profile_id: String::new(),
                        job_role_code: bounded(
                            &person.role_code,
                            64,
                            "responsible_person.role_code",
                        )?,
                        job_role_name: bounded(
                            &person.role_name,
                            200,
                            "responsible_person.role_name",
                        )?,
                        activity_codes: Vec::new(),
                    }),
                    activity_codes: self.activity_codes.clone(),
                })),
                organisation: Some(Organisation {
                    ods_code: bounded(&self.org_code, 10, "org_code")?,
                    name: bounded(&self.org_name, 200, "org_name")?,
                }),
                care_setting: care_setting as i32,
            };
            return Ok(Caller {
                accessor,
                activity_codes: self.activity_codes,
                care_setting,
            });
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
                user_id: bounded(&user_id, 64, "uid")?,
                name: bounded(&self.name, 200, "name")?,
                role_profile_id: bounded(&role.person_roleid, 64, "person_roleid")?,
                job_role_code: bounded(&role.role_code, 64, "role_code")?,
                job_role_name: bounded(&role.role_name, 200, "role_name")?,
                activity_codes: role.activity_codes.clone(),
            })),
            organisation: Some(Organisation {
                ods_code: bounded(&role.org_code, 10, "org_code")?,
                name: bounded(&self.org_name, 200, "org_name")?,
            }),
            care_setting: care_setting as i32,
        };
        Ok(Caller {
            accessor,
            activity_codes: role.activity_codes,
            care_setting,
        })
    }
}
