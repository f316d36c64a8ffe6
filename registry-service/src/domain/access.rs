//! Access history rules: the recent accesses shown with a disclosure are the 25 newest, and
//! repeat views by the same accessor within 24 hours are listed once.

/// Most recent accesses shown with a disclosure.
pub(crate) const RECENT_ACCESSES: usize = 25;
/// Repeat views by the same accessor within this window are listed once.
const COLLAPSE_MICROS: i64 = 24 * 3600 * 1_000_000;
/// How many recent events are read to build the collapsed list.
pub(crate) const RECENT_SCAN: i64 = 1000;

/// Of `events` (accessor key, access time in microseconds; newest first), the positions to
/// show: at most `RECENT_ACCESSES`, skipping a view within 24 hours of a newer one by the same
/// accessor.
pub(crate) fn collapse<'a>(events: impl IntoIterator<Item = (&'a str, i64)>) -> Vec<usize> {
    let mut newest_kept: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
    let mut shown = Vec::new();
    for (position, (key, time)) in events.into_iter().enumerate() {
        if shown.len() == RECENT_ACCESSES {
            break;
        }
        if let Some(kept) = newest_kept.get(key)
            && kept.saturating_sub(time) < COLLAPSE_MICROS
        {
            continue;
        }
        newest_kept.insert(key, time);
        shown.push(position);
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeat_views_within_a_day_collapse() {
        let hour = 3600 * 1_000_000;
        let events = [
            ("a", 30 * hour),
            ("a", 20 * hour),
            ("b", 10 * hour),
            ("a", 5 * hour),
        ];
        assert_eq!(collapse(events), [0, 2, 3]);
    }

    #[test]
    fn at_most_25() {
        let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
        let shown = collapse(keys.iter().map(|k| (k.as_str(), 0)));
        assert_eq!(shown.len(), RECENT_ACCESSES);
    }
}
