//! Upkeep in the background: every `--enumeration-prune-interval` the enumeration guard's table
//! of who last looked up which child (`enumeration_last_seen`) loses the rows no window can
//! count any more. They change no decision, but kept they would grow the table for ever and
//! keep, past any use, a record of which staff looked up which child (the audit record of
//! every access stays in `access_events`). A pass deletes in chunks, each its own short
//! transaction (`db::enumeration::prune_chunk`); every replica may run it, since a chunk takes
//! only rows nobody else is deleting or moving forward.

use std::time::Duration;

use cpis_core::metrics::metrics;

use crate::clock::Clock;
use crate::db::{Database, dialect::LastSeenKey, enumeration::prune_chunk};

/// A chunk that takes longer than this is given up on (a hung database); the next pass
/// tries again.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);

/// Prunes every `interval` until the returned handle is dropped.
pub(crate) fn start(db: Database, clock: Clock, interval: Duration) -> UpkeepGuard {
    UpkeepGuard(tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            prune_pass(&db, &clock).await;
        }
    }))
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
        // Between chunks, disclosures have the database (SQLite's one writer) to themselves.
        tokio::task::yield_now().await;
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
