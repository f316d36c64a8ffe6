//! The notification backlog gauges: every few seconds one grouped query reads each council's
//! issued-minus-acknowledged count and the age of its oldest unacknowledged notification into
//! `cpis_notification_backlog{council}` and `cpis_notification_lag_seconds{council}`. Off the
//! scrape path, so a scrape never waits on the database.

use std::collections::HashSet;
use std::time::Duration;

use cpis_core::metrics::{KeyValue, metrics};

use crate::clock::Clock;
use crate::db::{Database, outbox};

/// Refreshes the gauges every `interval` until the returned handle is dropped.
pub(crate) fn start(db: Database, clock: Clock, interval: Duration) -> RefreshGuard {
    let task = tokio::spawn(async move {
        // Councils reported last time: one that drops out of the answer reads 0, not stale.
        let mut reported: HashSet<String> = HashSet::new();
        loop {
            tokio::time::sleep(interval).await;
            // A hung database never answers: bound the wait, try again next time.
            let read = tokio::time::timeout(
                interval.max(Duration::from_secs(1)),
                db.run(outbox::backlogs),
            )
            .await;
            let Ok(Ok(backlogs)) = read else {
                tracing::debug!("notification backlog not read this time");
                continue;
            };
            let now = clock.now_micros();
            let mut seen = HashSet::with_capacity(backlogs.len());
            for row in backlogs {
                let lag = row
                    .oldest
                    .filter(|_| row.backlog > 0)
                    .map_or(0.0, |oldest| now.saturating_sub(oldest).max(0) as f64 / 1e6);
                record(&row.ods_code, row.backlog.max(0), lag);
                seen.insert(row.ods_code);
            }
            for gone in reported.difference(&seen) {
                record(gone, 0, 0.0);
            }
            reported = seen;
        }
    });
    RefreshGuard(task)
}

fn record(council: &str, backlog: i64, lag_seconds: f64) {
    let labels = [KeyValue::new("council", council.to_owned())];
    metrics().notification_backlog.record(backlog, &labels);
    metrics().notification_lag.record(lag_seconds, &labels);
}

/// Stops the refresh when dropped (with the server that started it).
#[derive(Debug)]
pub(crate) struct RefreshGuard(tokio::task::JoinHandle<()>);

impl Drop for RefreshGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}
