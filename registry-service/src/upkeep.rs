//! Upkeep in the background: every `--enumeration-prune-interval` the enumeration guard's table
//! of who last looked up which child (`enumeration_last_seen`) loses the rows no window can
//! count any more. They change no decision, but kept they would grow the table for ever and
//! keep, past any use, a record of which staff looked up which child (the audit record of
//! every access stays in `access_events`). A pass goes through the table in key order, in
//! chunks of a bounded number of rows, each its own short transaction
//! (`db::enumeration::prune_chunk`); every replica may run it, since a chunk takes only rows
//! nobody else is deleting or moving forward.

use std::time::Duration;

use cpis_core::metrics::metrics;

use crate::clock::Clock;
use crate::db::{Database, dialect::LastSeenKey, enumeration::prune_chunk};

/// The wait for a chunk is given up after this (a hung database) and the next pass tries
/// again. The blocking work itself cannot be cancelled from here: on PostgreSQL the chunk's own
/// statement timeout (5 s) ends it first; on SQLite a chunk reads a bounded number of rows.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);

/// Gives disclosures the database between two chunks of a pass (SQLite's one writer; the
/// pool's connections): a pass of a large table takes longer, never a lookup.
const BETWEEN_CHUNKS: Duration = Duration::from_millis(10);

/// The first pass comes at most this long after start-up: a registry restarted more often than
/// the interval (a crash loop, frequent deploys) still prunes.
const FIRST_PASS_WITHIN: Duration = Duration::from_secs(60);

/// Prunes every `interval` until the returned handle is dropped; the first time after half to
/// all of `interval` or a minute, whichever is shorter. Each later wait is stretched or shrunk
/// by up to a tenth, so replicas started together drift apart rather than prune the same rows
/// in lockstep.
pub(crate) fn start(db: Database, clock: Clock, interval: Duration) -> UpkeepGuard {
    UpkeepGuard(tokio::spawn(async move {
        let first = interval.min(FIRST_PASS_WITHIN);
        tokio::time::sleep(first.mul_f64(0.5 + 0.5 * spread())).await;
        loop {
            prune_pass(&db, &clock).await;
            tokio::time::sleep(interval.mul_f64(0.9 + 0.2 * spread())).await;
        }
    }))
}

/// A number from 0 to 1, from the system clock's nanoseconds: spreading replicas apart needs
/// no better randomness.
fn spread() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos) / 1e9
}

/// One pass over the table at the clock's `now`; returns the rows deleted.
async fn prune_pass(db: &Database, clock: &Clock) -> usize {
    let now = clock.now_micros();
    let mut after = LastSeenKey::default();
    let mut pruned = 0;
    loop {
        let from = after.clone();
        let chunk = tokio::time::timeout(
            CHUNK_TIMEOUT,
            db.run(move |conn| prune_chunk(conn, now, &from)),
        )
        .await;
        let (deleted, next) = match chunk {
            Ok(Ok(done)) => done,
            Ok(Err(error)) => {
                tracing::warn!(%error, pruned, "enumeration prune stopped; the next pass goes on");
                break;
            }
            Err(_) => {
                tracing::warn!(pruned, "enumeration prune timed out; the next pass goes on");
                break;
            }
        };
        pruned += deleted;
        metrics()
            .enumeration_rows_pruned
            .add(u64::try_from(deleted).unwrap_or(u64::MAX), &[]);
        match next {
            Some(key) => after = key,
            None => break,
        }
        tokio::time::sleep(BETWEEN_CHUNKS).await;
    }
    if pruned > 0 {
        tracing::info!(rows = pruned, "enumeration_last_seen pruned");
    }
    pruned
}

/// Stops the upkeep when dropped (with the server that started it).
#[derive(Debug)]
pub(crate) struct UpkeepGuard(tokio::task::JoinHandle<()>);

impl Drop for UpkeepGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}
