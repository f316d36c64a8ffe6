//! The PostgreSQL half of live wake-ups: a thread LISTENs on the notification channel and turns
//! each NOTIFY (sent by `db::dialect::notify_on_commit` and `queue_notifications`, delivered only
//! on commit) into a local
//! wake-up, reconnecting with backoff when the connection drops.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::db::dialect::NOTIFY_CHANNEL;
use crate::notify::Wakeups;
use cpis_core::ods::OdsCode;
use diesel::connection::SimpleConnection as _;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use secrecy::{ExposeSecret as _, SecretString};

/// How often the listener thread checks its connection for NOTIFY messages.
const LISTEN_POLL: Duration = Duration::from_millis(5);

/// Stops the listener thread when dropped.
#[derive(Debug)]
pub(crate) struct ListenerGuard {
    stop: Arc<AtomicBool>,
}

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Starts a thread that LISTENs on PostgreSQL and forwards each NOTIFY to `wakeups`,
/// reconnecting with backoff when the connection drops.
pub(crate) fn spawn(url: SecretString, wakeups: Wakeups) -> ListenerGuard {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let spawned = std::thread::Builder::new()
        .name("cpis-pg-listener".into())
        .spawn(move || {
            let mut backoff = Duration::from_millis(100);
            while !flag.load(Ordering::SeqCst) {
                match listen(&url, &wakeups, &flag) {
                    Ok(()) => return,
                    Err(error) => {
                        tracing::warn!(error = %error, "notification listener lost its connection; subscribers fall back to polling");
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the notification listener; subscribers fall back to polling");
    }
    ListenerGuard { stop }
}

fn listen(
    url: &SecretString,
    wakeups: &Wakeups,
    stop: &AtomicBool,
) -> Result<(), diesel::result::Error> {
    let mut conn = PgConnection::establish(url.expose_secret())
        .map_err(|e| diesel::result::Error::QueryBuilderError(Box::new(e)))?;
    conn.batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))?;
    tracing::info!("listening for notification wake-ups");
    while !stop.load(Ordering::SeqCst) {
        for notification in conn.notifications_iter() {
            let notification = notification?;
            // A payload that is not an ODS code wakes nobody; polling still delivers.
            if let Ok(ods_code) = OdsCode::parse(&notification.payload) {
                wakeups.wake(&ods_code);
            }
        }
        std::thread::sleep(LISTEN_POLL);
    }
    Ok(())
}
