//! The role policy: which activity codes may make which kind of access from which kind of care
//! setting. Defaults follow national RBAC (B0107 "View CP-IS flag" for unscheduled care, B0170
//! "View CP-IS flag without ASN" for scheduled care); the codes are configuration.

use cpis_proto::cpis::common::v1::{AccessMode, CareSetting};

/// Activity codes per access mode.
#[derive(Clone, Debug, clap::Args)]
pub struct RolePolicy {
    /// Activity codes allowed an unscheduled access (which notifies councils).
    #[arg(
        long,
        env = "CPIS_UNSCHEDULED_ACTIVITY_CODES",
        value_delimiter = ',',
        default_value = "B0107"
    )]
    pub unscheduled_activity_codes: Vec<String>,

    /// Activity codes allowed a scheduled silent read.
    #[arg(
        long,
        env = "CPIS_SCHEDULED_ACTIVITY_CODES",
        value_delimiter = ',',
        default_value = "B0170,B0107"
    )]
    pub scheduled_activity_codes: Vec<String>,
}

impl Default for RolePolicy {
    fn default() -> Self {
        Self {
            unscheduled_activity_codes: vec!["B0107".into()],
            scheduled_activity_codes: vec!["B0170".into(), "B0107".into()],
        }
    }
}

/// Whether a care setting is unscheduled (values 1-99) or scheduled (100-199) care.
pub fn setting_mode(setting: CareSetting) -> Option<AccessMode> {
    match setting as i32 {
        1..=99 => Some(AccessMode::Unscheduled),
        100..=199 => Some(AccessMode::ScheduledSilentRead),
        _ => None,
    }
}

impl RolePolicy {
    /// Allows `mode` for a caller holding `codes` in `setting`, or says why not. The setting
    /// decides the kind of access: an unscheduled setting cannot make a silent read (that would
    /// hide a safeguarding notification), and a scheduled one cannot claim an unscheduled access.
    pub fn decide(
        &self,
        codes: &[String],
        setting: CareSetting,
        mode: AccessMode,
    ) -> Result<(), &'static str> {
        let Some(setting_kind) = setting_mode(setting) else {
            return Err("the care setting is not one CP-IS serves");
        };
        if setting_kind != mode {
            return Err("the access mode does not match the care setting");
        }
        let allowed = match mode {
            AccessMode::Unscheduled => &self.unscheduled_activity_codes,
            AccessMode::ScheduledSilentRead => &self.scheduled_activity_codes,
            AccessMode::Unspecified => return Err("no access mode"),
        };
        if codes.iter().any(|code| allowed.contains(code)) {
            Ok(())
        } else {
            Err("the selected role lacks the activity code for this access")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(list: &[&str]) -> Vec<String> {
        list.iter().map(|c| (*c).to_owned()).collect()
    }

    #[test]
    fn defaults() {
        let policy = RolePolicy::default();
        let ed = CareSetting::EmergencyDepartment;
        let gp = CareSetting::GpInHours;
        assert!(
            policy
                .decide(&codes(&["B0107"]), ed, AccessMode::Unscheduled)
                .is_ok()
        );
        assert!(
            policy
                .decide(&codes(&["B0170"]), ed, AccessMode::Unscheduled)
                .is_err()
        );
        assert!(
            policy
                .decide(&codes(&["B0170"]), gp, AccessMode::ScheduledSilentRead)
                .is_ok()
        );
        assert!(
            policy
                .decide(&codes(&["B0107"]), gp, AccessMode::ScheduledSilentRead)
                .is_ok()
        );
        assert!(
            policy
                .decide(&codes(&["B0107"]), ed, AccessMode::ScheduledSilentRead)
                .is_err()
        );
        assert!(
            policy
                .decide(&codes(&["B0170"]), gp, AccessMode::Unscheduled)
                .is_err()
        );
        assert!(
            policy
                .decide(&codes(&["B0001"]), ed, AccessMode::Unscheduled)
                .is_err()
        );
        assert!(
            policy
                .decide(
                    &codes(&["B0107"]),
                    CareSetting::Unspecified,
                    AccessMode::Unscheduled
                )
                .is_err()
        );
    }
}
