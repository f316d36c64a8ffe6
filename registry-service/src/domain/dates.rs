//! Dates and instants as the registry stores and compares them: calendar dates as days since
//! 1970-01-01, instants as microseconds since the Unix epoch. Arithmetic on dates that callers
//! control is checked: an out-of-range result is `None`, never a panic.

use chrono::{Datelike as _, Days, Months, NaiveDate};

const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// The last date google.type.Date can carry (its year is 1..=9999). A date beyond it cannot be
/// sent on the wire, so it is never accepted and never disclosed.
pub(crate) const LAST_WIRE_DATE: NaiveDate = match NaiveDate::from_ymd_opt(9999, 12, 31) {
    Some(date) => date,
    None => NaiveDate::MAX,
};
/// The first date google.type.Date can carry.
pub(crate) const FIRST_WIRE_DATE: NaiveDate = match NaiveDate::from_ymd_opt(1, 1, 1) {
    Some(date) => date,
    None => NaiveDate::MIN,
};
/// The earliest date a council or an operator may send (contract): no plan, date of birth or
/// status change of a living person's record predates it.
pub(crate) const EARLIEST_PLAUSIBLE: NaiveDate = match NaiveDate::from_ymd_opt(1900, 1, 1) {
    Some(date) => date,
    None => NaiveDate::MIN,
};
/// How far ahead a plan's end or delete date may lie, in months (25 years: beyond any child's
/// 18th birthday and any planned end a council would set).
pub(crate) const HORIZON_MONTHS: u32 = 25 * 12;

/// `date` can be carried by google.type.Date (year 1..=9999).
pub(crate) fn on_the_wire(date: NaiveDate) -> bool {
    (FIRST_WIRE_DATE..=LAST_WIRE_DATE).contains(&date)
}

/// Days since 1970-01-01, as stored.
pub(crate) fn to_days(date: NaiveDate) -> i32 {
    date.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE
}

/// The date `days` after 1970-01-01; `None` if out of range (a corrupt row).
pub(crate) fn from_days(days: i32) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(days.checked_add(UNIX_EPOCH_DAYS_FROM_CE)?)
}

/// `date` plus `days`, or `None` past the end of the calendar.
pub(crate) fn plus_days(date: NaiveDate, days: u64) -> Option<NaiveDate> {
    date.checked_add_days(Days::new(days))
}

/// `date` plus `months`, or `None` past the end of the calendar.
pub(crate) fn plus_months(date: NaiveDate, months: u32) -> Option<NaiveDate> {
    date.checked_add_months(Months::new(months))
}

/// The calendar year of `date` (for wire conversion).
pub(crate) fn ymd(date: NaiveDate) -> (i32, u32, u32) {
    (date.year(), date.month(), date.day())
}

/// Microseconds since the Unix epoch as a protobuf timestamp.
pub(crate) fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        // rem_euclid(1_000_000) * 1000 is below 10^9: it fits an i32.
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1000).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip_and_overflow_is_none() {
        let d = NaiveDate::from_ymd_opt(2026, 6, 15).unwrap_or_default();
        assert_eq!(from_days(to_days(d)), Some(d));
        assert_eq!(from_days(i32::MAX), None);
        assert_eq!(plus_days(NaiveDate::MAX, 365), None);
        assert_eq!(plus_months(NaiveDate::MAX, 10), None);
    }

    #[test]
    fn the_wire_calendar_is_years_1_to_9999() {
        assert!(on_the_wire(FIRST_WIRE_DATE) && on_the_wire(LAST_WIRE_DATE));
        assert!(!on_the_wire(NaiveDate::MAX) && !on_the_wire(NaiveDate::MIN));
        assert_eq!(ymd(LAST_WIRE_DATE), (9999, 12, 31));
        assert_eq!(ymd(EARLIEST_PLAUSIBLE), (1900, 1, 1));
    }
}
