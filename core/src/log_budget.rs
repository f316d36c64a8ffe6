//! Log budgets: a log site an attacker can trigger at will (failed handshakes, refused calls)
//! writes at most a few lines a second, and the next line it writes says how many it left out,
//! so a flood of bad calls cannot become a flood of log lines (or hide the one that matters).

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// Log lines per second a budget allows, at most; the rest are counted and reported
/// (`suppressed`) on the next line written.
pub const LOG_LINES_PER_SECOND: u32 = 5;

/// A budget of log lines per second.
#[derive(Debug)]
pub struct LogBudget {
    window: Instant,
    written: u32,
    suppressed: u64,
}

impl Default for LogBudget {
    fn default() -> Self {
        Self {
            window: Instant::now(),
            written: 0,
            suppressed: 0,
        }
    }
}

impl LogBudget {
    /// Calls `log` with the number of lines suppressed since the last one written, if this
    /// second's budget allows a line.
    pub fn allow(&mut self, log: impl FnOnce(u64)) {
        let now = Instant::now();
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.written = 0;
        }
        if self.written < LOG_LINES_PER_SECOND {
            self.written += 1;
            log(std::mem::take(&mut self.suppressed));
        } else {
            self.suppressed += 1;
        }
    }
}

/// A [`LogBudget`] shared by the tasks of one log site.
#[derive(Debug, Default)]
pub struct SharedBudget(Mutex<LogBudget>);

impl SharedBudget {
    /// Calls `log` with the count suppressed since the last line, if the budget allows a line.
    pub fn allow(&self, log: impl FnOnce(u64)) {
        lock(&self.0).allow(log);
    }
}

fn lock(budget: &Mutex<LogBudget>) -> MutexGuard<'_, LogBudget> {
    budget
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_budget_counts_what_it_suppresses() {
        let mut budget = LogBudget::default();
        let mut written = Vec::new();
        for _ in 0..LOG_LINES_PER_SECOND + 3 {
            budget.allow(|suppressed| written.push(suppressed));
        }
        assert_eq!(written.len(), LOG_LINES_PER_SECOND as usize);
        assert_eq!(budget.suppressed, 3);
        budget.window -= Duration::from_secs(2);
        budget.allow(|suppressed| written.push(suppressed));
        assert_eq!(written.last(), Some(&3));
    }
}
