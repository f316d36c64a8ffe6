//! The enumeration guard's rules: how many distinct NHS numbers a person, a system or a whole
//! organisation may look up in a sliding window before its lookups are refused. What is counted
//! and how is `db::enumeration`; here are only the thresholds and whom each one counts.

use cpis_core::accessor::ValidAccessor;
use cpis_proto::cpis::common::v1::accessor::Kind;
use cpis_proto::cpis::registry::v1::ThrottledSubject;

/// Microseconds in an hour.
pub(crate) const HOUR: i64 = 3_600_000_000;
/// Microseconds in a day.
pub(crate) const DAY: i64 = 24 * HOUR;
/// How long a row of `enumeration_last_seen` is kept after its subject last looked the child
/// up: the longest window (a day), plus an hour for a registry whose clock runs behind another
/// replica's (the same margin as the table's backfill, migration 000009). Older rows are never
/// counted, so pruning them changes no decision.
pub(crate) const LAST_SEEN_KEPT: i64 = DAY + HOUR;

/// The thresholds, as configured: most distinct NHS numbers per window; 0 switches a threshold
/// off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EnumerationLimits {
    /// One person (a CIS2 user), in an hour.
    pub user_per_hour: u32,
    /// One person, in a day.
    pub user_per_day: u32,
    /// One system (with its responsible person), in an hour.
    pub system_per_hour: u32,
    /// One system, in a day.
    pub system_per_day: u32,
    /// Every user and system of one organisation together, in an hour.
    pub organisation_per_hour: u32,
}

impl EnumerationLimits {
    /// The defaults the README explains: far above what a busy emergency department, or a
    /// trust's system looking up every child who arrives, does in the window.
    pub(crate) const DEFAULT: Self = Self {
        user_per_hour: 100,
        user_per_day: 500,
        system_per_hour: 1_000,
        system_per_day: 10_000,
        organisation_per_hour: 2_000,
    };
}

/// What a rule counts by: the subject of its rows in `enumeration_last_seen` (and of its
/// throttle, `Rule::throttle_key`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Counted {
    /// The accessor key (`person:<uid>` or `system:<id>:<uid>`), as access events record it.
    Accessor(String),
    /// The organisation's ODS code.
    Organisation(String),
}

/// One threshold as it applies to one caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rule {
    /// Who is counted (and throttled when the threshold is crossed).
    pub subject: ThrottledSubject,
    /// What the count is keyed by.
    pub counted: Counted,
    /// Most distinct NHS numbers in the window.
    pub threshold: u32,
    /// The window, in microseconds.
    pub window: i64,
}

/// An organisation's subject in `lookup_throttles` and `enumeration_last_seen` (migration
/// 000008's trigger writes the same, `'organisation:' || organisation_ods_code`); the prefix
/// keeps it apart from accessor keys.
pub(crate) fn organisation_subject(ods: &str) -> String {
    format!("organisation:{ods}")
}

impl Rule {
    /// The subject's key in `lookup_throttles`: the accessor key for a user or a system,
    /// `organisation:<ODS code>` for an organisation (the prefixes keep them apart).
    pub fn throttle_key(&self) -> String {
        match &self.counted {
            Counted::Accessor(key) => key.clone(),
            Counted::Organisation(ods) => organisation_subject(ods),
        }
    }
}

impl EnumerationLimits {
    /// The rules that count `accessor`'s lookups, thresholds switched off left out.
    pub(crate) fn rules_for(&self, accessor: &ValidAccessor) -> Vec<Rule> {
        let (subject, per_hour, per_day) = match accessor.as_wire().kind {
            Some(Kind::System(_)) => (
                ThrottledSubject::System,
                self.system_per_hour,
                self.system_per_day,
            ),
            // A validated accessor is a person or a system; a person's limits are the tighter.
            _ => (
                ThrottledSubject::User,
                self.user_per_hour,
                self.user_per_day,
            ),
        };
        let key = accessor.key();
        let organisation = Counted::Organisation(accessor.ods_code().to_string());
        [
            (subject, Counted::Accessor(key.clone()), per_hour, HOUR),
            (subject, Counted::Accessor(key), per_day, DAY),
            (
                ThrottledSubject::Organisation,
                organisation,
                self.organisation_per_hour,
                HOUR,
            ),
        ]
        .into_iter()
        .filter(|(_, _, threshold, _)| *threshold > 0)
        .map(|(subject, counted, threshold, window)| Rule {
            subject,
            counted,
            threshold,
            window,
        })
        .collect()
    }
}

/// When a subject that has looked up `count` distinct numbers in the window (each with the time
/// it was last looked up, `last_seen`, in any order) may look up a new one again: once enough
/// of them have left the window to bring the count below `threshold`. `None` when it already
/// may.
pub(crate) fn throttled_until(mut last_seen: Vec<i64>, threshold: u32, window: i64) -> Option<i64> {
    let threshold = usize::try_from(threshold).unwrap_or(usize::MAX);
    if last_seen.len() < threshold {
        return None;
    }
    last_seen.sort_unstable();
    // Leaving the window must take the count to threshold - 1: the (len - threshold + 1)th
    // oldest must go, and it goes `window` after it was last seen.
    last_seen
        .get(last_seen.len() - threshold)
        .map(|oldest| oldest.saturating_add(window))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_is_let_in_again_when_enough_numbers_leave_the_window() {
        assert_eq!(throttled_until(vec![5, 1, 3], 4, 100), None);
        // At the threshold: the oldest leaving brings it below.
        assert_eq!(throttled_until(vec![5, 1, 3], 3, 100), Some(101));
        // Over it (replicas raced): the second oldest must go too.
        assert_eq!(throttled_until(vec![5, 1, 3, 4], 3, 100), Some(103));
        assert_eq!(throttled_until(vec![i64::MAX], 1, 100), Some(i64::MAX));
    }
}
