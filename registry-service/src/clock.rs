//! The registry's notion of now, injectable so tests can stand on either side of a date
//! boundary. "Today" is the UTC calendar date.

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

use chrono::{DateTime, NaiveDate, Utc};

/// A source of the current instant.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// `None`: the system clock. `Some`: a fixed instant (microseconds since the epoch) that
    /// tests move by hand.
    fixed: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self { fixed: None }
    }

    /// A clock fixed at `micros` since the Unix epoch, movable with [`Clock::set`].
    pub fn fixed(micros: i64) -> Self {
        Self {
            fixed: Some(Arc::new(AtomicI64::new(micros))),
        }
    }

    /// Moves a fixed clock; does nothing to the system clock.
    pub fn set(&self, micros: i64) {
        if let Some(fixed) = &self.fixed {
            fixed.store(micros, Ordering::SeqCst);
        }
    }

    /// Microseconds since the Unix epoch.
    pub fn now_micros(&self) -> i64 {
        match &self.fixed {
            Some(fixed) => fixed.load(Ordering::SeqCst),
            None => Utc::now().timestamp_micros(),
        }
    }

    /// Today's date (UTC).
    pub fn today(&self) -> NaiveDate {
        DateTime::from_timestamp_micros(self.now_micros())
            .unwrap_or_default()
            .date_naive()
    }
}
