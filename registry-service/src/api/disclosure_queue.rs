//! Group commit's gathering half: concurrent disclosures wait in one queue; a few committers
//! each take what is waiting (at most `--disclosure-batch-max`), wait a moment for more only
//! while another batch is committing (`--disclosure-batch-wait`), and run the lot as one
//! transaction (`db::disclosure_batch`), then answer each member. An unloaded lookup never
//! waits: with nothing committing, a batch of one goes at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::db::Database;
use crate::db::disclosure::DisclosureRequest;
use crate::db::disclosure_batch::{Answer, disclose_all};
use crate::error::RegistryError;
use crate::notify::Notifier;

/// The most disclosures one batch may hold (`--disclosure-batch-max`). A batch's access events
/// then go in one insert statement (`dialect::INSERT_ROWS` rows at most), whose trigger takes
/// the batch's rows of `enumeration_last_seen` in one key order; chunks of several statements
/// would take them out of that order and could deadlock with a batch committing beside it.
const BATCH_MAX_LIMIT: u16 = 500;
const _: () = assert!(BATCH_MAX_LIMIT as usize <= crate::db::dialect::INSERT_ROWS);

/// Group commit of disclosures: how many lookups share one transaction (one commit, one fsync)
/// and how long a batch may wait to fill. The defaults suit two cores: two committers (one
/// gathers and runs its statements while the other waits for its fsync), up to 64 lookups a
/// batch, and half a millisecond of waiting, only while the other batch is committing.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct GroupCommit {
    /// Most disclosures committed together in one transaction (1: each alone).
    #[arg(long = "disclosure-batch-max", env = "CPIS_DISCLOSURE_BATCH_MAX", default_value_t = 64, value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u16).range(1..=i64::from(BATCH_MAX_LIMIT)), usize::from))]
    pub max: usize,
    /// How long a batch waits for more disclosures, only while another batch is committing
    /// (0s: take only what is already waiting).
    #[arg(long = "disclosure-batch-wait", env = "CPIS_DISCLOSURE_BATCH_WAIT", default_value = "500us", value_parser = cpis_core::config::duration_within("0s", "50ms"))]
    pub wait: Duration,
    /// Batches committing at once (PostgreSQL; SQLite has one writer, so one).
    #[arg(long = "disclosure-committers", env = "CPIS_DISCLOSURE_COMMITTERS", default_value_t = 2, value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u8).range(1..=32), usize::from))]
    pub committers: usize,
}

impl Default for GroupCommit {
    fn default() -> Self {
        Self {
            max: 64,
            wait: Duration::from_micros(500),
            committers: 2,
        }
    }
}

/// Disclosures waiting for a committer; beyond this many, a caller waits to join the queue.
const QUEUE: usize = 4096;

/// One disclosure waiting to be committed, and where its answer goes.
struct Member {
    request: DisclosureRequest,
    answer: oneshot::Sender<Answer>,
    /// The call's span: a batch of one runs inside it.
    span: tracing::Span,
}

/// The queue disclosures go through; its committers run until the queue is dropped.
#[derive(Debug)]
pub(crate) struct DisclosureQueue {
    sender: mpsc::Sender<Member>,
}

/// What every committer shares.
struct Committers {
    receiver: Mutex<mpsc::Receiver<Member>>,
    db: Database,
    notifier: Notifier,
    options: GroupCommit,
    /// Batches committing now.
    committing: AtomicUsize,
}

impl DisclosureQueue {
    /// Starts the committers (on the current runtime).
    pub fn start(db: Database, notifier: Notifier, options: GroupCommit) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let committers = if db.engine() == "sqlite" {
            1
        } else {
            options.committers.max(1)
        };
        let shared = Arc::new(Committers {
            receiver: Mutex::new(receiver),
            db,
            notifier,
            options,
            committing: AtomicUsize::new(0),
        });
        for _ in 0..committers {
            tokio::spawn(commit_batches(shared.clone()));
        }
        Self { sender }
    }

    /// Discloses and records `request` in the next batch: what it ended with and how many
    /// notifications it queued.
    pub async fn disclose(&self, request: DisclosureRequest) -> Answer {
        let (answer, answered) = oneshot::channel();
        let member = Member {
            request,
            answer,
            span: tracing::Span::current(),
        };
        self.sender
            .send(member)
            .await
            .map_err(|_| RegistryError::Unavailable)?;
        answered.await.map_err(|_| {
            RegistryError::Internal("the disclosure committer stopped before answering".into())
        })?
    }
}

/// One committer: gathers a batch, commits it, answers its members; until the queue closes.
async fn commit_batches(shared: Arc<Committers>) {
    loop {
        let Some(mut batch) = gather(&shared).await else {
            return;
        };
        // A caller that has gone (its call cancelled) is shown nothing, so nothing is recorded.
        batch.retain(|member| !member.answer.is_closed());
        if batch.is_empty() {
            continue;
        }
        shared.committing.fetch_add(1, Ordering::SeqCst);
        commit(&shared, batch).await;
        shared.committing.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The next batch: the first disclosure to arrive and whatever waits behind it, up to the most;
/// while another batch is committing, a short wait for more. `None` once the queue is closed.
async fn gather(shared: &Committers) -> Option<Vec<Member>> {
    let max = shared.options.max.max(1);
    let mut receiver = shared.receiver.lock().await;
    let first = receiver.recv().await?;
    let mut batch = vec![first];
    let take_waiting = |receiver: &mut mpsc::Receiver<Member>, batch: &mut Vec<Member>| {
        while batch.len() < max {
            match receiver.try_recv() {
                Ok(member) => batch.push(member),
                Err(_) => break,
            }
        }
    };
    take_waiting(&mut receiver, &mut batch);
    let wait = shared.options.wait;
    if batch.len() < max && !wait.is_zero() && shared.committing.load(Ordering::SeqCst) > 0 {
        let until = tokio::time::Instant::now() + wait;
        while batch.len() < max {
            match tokio::time::timeout_at(until, receiver.recv()).await {
                Ok(Some(member)) => {
                    batch.push(member);
                    take_waiting(&mut receiver, &mut batch);
                }
                _ => break,
            }
        }
    }
    Some(batch)
}

/// Commits `batch` as one transaction and answers every member. A batch that fails on a
/// statement (the connection still sound) runs again member by member, so one member's problem
/// fails that member alone; any other failure (the database unreachable, a commit whose outcome
/// is unknown) is every member's.
async fn commit(shared: &Committers, batch: Vec<Member>) {
    let size = batch.len();
    cpis_core::metrics::metrics()
        .disclosure_batch_size
        .record(u64::try_from(size).unwrap_or(u64::MAX), &[]);
    let (mut requests, mut answers, mut spans) = (
        Vec::with_capacity(size),
        Vec::with_capacity(size),
        Vec::with_capacity(size),
    );
    for member in batch {
        requests.push(member.request);
        answers.push(member.answer);
        spans.push(member.span);
    }
    let span = if let [only] = spans.as_slice() {
        only.clone()
    } else {
        let span = tracing::info_span!(parent: None, "disclosure_batch", batch_size = size);
        for member in &spans {
            span.follows_from(member);
        }
        span
    };
    let requests = Arc::new(requests);
    let written = run(shared, &span, requests.clone(), 0..size).await;
    match written {
        Ok(results) => answer_all(answers, results),
        Err(RegistryError::Database(error)) if size > 1 => {
            tracing::warn!(%error, size, "a disclosure batch failed on a statement; its members run one by one");
            for (index, (answer, member_span)) in answers.into_iter().zip(spans).enumerate() {
                let result = run(shared, &member_span, requests.clone(), index..index + 1)
                    .await
                    .and_then(|mut one| {
                        one.pop().unwrap_or_else(|| {
                            Err(RegistryError::Internal(
                                "a disclosure was left unanswered".into(),
                            ))
                        })
                    });
                let _gone = answer.send(result);
            }
        }
        Err(error) => {
            let mut answers = answers.into_iter();
            let first = answers.next();
            for answer in answers {
                let _gone = answer.send(Err(replica(&error)));
            }
            if let Some(first) = first {
                let _gone = first.send(Err(error));
            }
        }
    }
}

/// What every member of a failed batch is told: a commit whose outcome is unknown is unknown
/// for all of them (each may have been recorded); otherwise nothing of the batch was recorded.
fn replica(error: &RegistryError) -> RegistryError {
    match error {
        RegistryError::OutcomeUnknown => RegistryError::OutcomeUnknown,
        RegistryError::Internal(message) => RegistryError::Internal(message.clone()),
        _ => RegistryError::Unavailable,
    }
}

/// Runs `requests[range]` as one transaction, its notifications' wake-ups sent after commit.
async fn run(
    shared: &Committers,
    span: &tracing::Span,
    requests: Arc<Vec<DisclosureRequest>>,
    range: std::ops::Range<usize>,
) -> Result<Vec<Answer>, RegistryError> {
    use tracing::Instrument as _;
    let now = requests.get(range.start).map_or(0, |r| r.now);
    shared
        .notifier
        .write(&shared.db, now, move |conn, outbox| {
            disclose_all(conn, requests.get(range).unwrap_or_default(), outbox)
        })
        .instrument(span.clone())
        .await
        .map(|(answers, _)| answers)
}

/// Sends each member its answer (a member whose caller has gone is skipped).
fn answer_all(answers: Vec<oneshot::Sender<Answer>>, results: Vec<Answer>) {
    let mut results = results.into_iter();
    for answer in answers {
        let result = results.next().unwrap_or_else(|| {
            Err(RegistryError::Internal(
                "a disclosure was left unanswered".into(),
            ))
        });
        let _gone = answer.send(result);
    }
}
