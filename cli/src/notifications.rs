//! `cpis notifications`: a council's access and inactive-NHS-number notifications. `watch`
//! streams them live, acknowledging each once it is printed (at-least-once: a notification is
//! acknowledged only after it was written out), and reconnects from the last acknowledged
//! sequence when the registry restarts or cuts a slow reader off. `list` pages through them.

use std::io::Write as _;
use std::time::Duration;

use cpis_proto::cpis::common::v1::{ErrorReason, InactiveReason};
use cpis_proto::cpis::registry::v1::{
    AcknowledgeNotificationsRequest, ListNotificationsRequest, Notification,
    SubscribeNotificationsRequest, notification::Kind, subscribe_notifications_response::Event,
};
use serde_json::{Value, json};
use tonic::Code;

use crate::client::{self, CliError, CouncilArgs};
use crate::render;

/// `cpis notifications` arguments.
#[derive(Debug, clap::Args)]
pub struct NotificationsArgs {
    #[command(subcommand)]
    pub action: NotificationsAction,
    #[command(flatten)]
    pub output: crate::client::Output,
}

/// Watch live or list.
#[derive(Debug, clap::Subcommand)]
pub enum NotificationsAction {
    /// Stream notifications live, acknowledging each after printing it; resumes from the
    /// council's last acknowledged sequence.
    Watch {
        /// Start after this sequence instead of the last acknowledged one.
        #[arg(long)]
        after: Option<u64>,
        /// Stop after printing this many notifications.
        #[arg(long)]
        count: Option<u64>,
        /// Print without acknowledging (a second reader, or a dry run).
        #[arg(long)]
        no_ack: bool,
        #[command(flatten)]
        council: CouncilArgs,
    },
    /// List notifications after a sequence, oldest first, and the acknowledged cursor.
    List {
        /// List those after this sequence (0: from the beginning).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        council: CouncilArgs,
    },
}

/// Runs the command; returns the exit code.
pub async fn run(args: NotificationsArgs, json_output: bool) -> Result<u8, CliError> {
    match args.action {
        NotificationsAction::Watch {
            after,
            count,
            no_ack,
            council,
        } => watch(council, after, count, no_ack, json_output).await,
        NotificationsAction::List {
            after,
            limit,
            council,
        } => list(council, after, limit, json_output).await,
    }
}

/// Errors after which reconnecting can help: the registry restarting or draining, a network
/// fault, or this reader having been cut off for being slow.
fn transient(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Cancelled | Code::Unknown | Code::Internal | Code::Aborted
    ) || (status.code() == Code::ResourceExhausted
        && cpis_core::status::reason_of(status) == Some(ErrorReason::SubscriberTooSlow))
}

async fn watch(
    council: CouncilArgs,
    after: Option<u64>,
    count: Option<u64>,
    no_ack: bool,
    json_output: bool,
) -> Result<u8, CliError> {
    let mut cursor = after;
    let mut printed = 0u64;
    let mut backoff = Duration::from_millis(250);
    // What the connection is waiting out, said once when it starts (not at every retry), and
    // "reconnected" when it is over.
    let mut outage = Outage::default();
    loop {
        if count.is_some_and(|c| printed >= c) {
            return Ok(0);
        }
        let mut client = match council.client().await {
            Ok(client) => client,
            Err(error @ CliError::Connect { .. }) => {
                outage.report(&error.to_string());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(15));
                continue;
            }
            Err(error) => return Err(error),
        };
        let stream = client
            .subscribe_notifications(SubscribeNotificationsRequest {
                after_sequence: cursor,
                ..SubscribeNotificationsRequest::default()
            })
            .await;
        let mut stream = match stream {
            Ok(stream) => stream.into_inner(),
            Err(status) if transient(&status) => {
                outage.report(&client::describe(&status));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(15));
                continue;
            }
            Err(status) => return Err(status.into()),
        };
        backoff = Duration::from_millis(250);
        outage.over(cursor);
        loop {
            match stream.message().await {
                Ok(Some(message)) => {
                    let Some(Event::Notification(notification)) = message.event else {
                        continue; // heartbeats only say the stream is alive
                    };
                    print_notification(&notification, json_output);
                    std::io::stdout().flush()?;
                    let sequence = notification.sequence;
                    if !no_ack {
                        client
                            .acknowledge_notifications(AcknowledgeNotificationsRequest {
                                sequence,
                                ..AcknowledgeNotificationsRequest::default()
                            })
                            .await?;
                    }
                    cursor = Some(sequence);
                    printed += 1;
                    if count.is_some_and(|c| printed >= c) {
                        return Ok(0);
                    }
                }
                Ok(None) => {
                    outage.report("the registry ended the stream");
                    break;
                }
                Err(status) if transient(&status) => {
                    outage.report(&client::describe(&status));
                    break;
                }
                Err(status) => return Err(status.into()),
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

/// A watch's lost connection: reported once as it starts, and once as it ends.
#[derive(Debug, Default)]
struct Outage {
    since: Option<std::time::Instant>,
}

impl Outage {
    /// Something went wrong; says so if the connection was fine until now.
    fn report(&mut self, what: &str) {
        if self.since.is_none() {
            eprintln!("{what}; reconnecting (retrying with a growing pause, up to 15 s)");
            self.since = Some(std::time::Instant::now());
        }
    }

    /// The stream is open again.
    fn over(&mut self, cursor: Option<u64>) {
        if let Some(since) = self.since.take() {
            let after = cursor.map_or_else(
                || "the last acknowledged".to_owned(),
                |sequence| format!("#{sequence}"),
            );
            eprintln!(
                "reconnected after {:.1} s; resuming after {after}",
                since.elapsed().as_secs_f64()
            );
        }
    }
}

async fn list(
    council: CouncilArgs,
    after: u64,
    limit: usize,
    json_output: bool,
) -> Result<u8, CliError> {
    let mut client = council.client().await?;
    let mut page_token = String::new();
    let mut shown = 0usize;
    let mut acknowledged = 0;
    while shown < limit {
        let page = client
            .list_notifications(ListNotificationsRequest {
                after_sequence: after,
                page_size: i32::try_from((limit - shown).min(1000)).unwrap_or(1000),
                page_token: page_token.clone(),
                ..ListNotificationsRequest::default()
            })
            .await?
            .into_inner();
        acknowledged = page.acknowledged_sequence;
        for notification in page.notifications.iter().take(limit - shown) {
            print_notification(notification, json_output);
            shown += 1;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if json_output {
        // The cursor too: a script resuming from it needs it as much as the notifications.
        println!(
            "{}",
            json!({ "acknowledged_sequence": acknowledged, "shown": shown })
        );
    } else {
        println!("({shown} shown; acknowledged up to {acknowledged})");
    }
    Ok(0)
}

fn print_notification(notification: &Notification, json_output: bool) {
    if json_output {
        println!("{}", notification_json(notification));
        return;
    }
    let when = render::timestamp(notification.create_time.as_ref());
    match &notification.kind {
        Some(Kind::Access(access)) => {
            // The access time is what a social worker acts on; the queueing time is the same
            // transaction's and is in the JSON form.
            let event = access.access_event.clone().unwrap_or_default();
            println!(
                "#{} {} ACCESS case {} nhs {}: {}, {}",
                notification.sequence,
                render::timestamp(event.access_time.as_ref()),
                or_dash(&access.local_case_id),
                event.nhs_number,
                render::accessor_line(event.accessor.as_ref()),
                render::access_mode(event.access_mode),
            );
        }
        Some(Kind::InactiveNhsNumber(inactive)) => {
            let replacement = if inactive.replacement_nhs_number.is_empty() {
                String::new()
            } else {
                format!(", replaced by {}", inactive.replacement_nhs_number)
            };
            println!(
                "#{} {when} INACTIVE_NHS_NUMBER case {} nhs {}: {}{replacement}",
                notification.sequence,
                or_dash(&inactive.local_case_id),
                inactive.nhs_number,
                inactive_reason(inactive.reason),
            );
        }
        None => println!(
            "#{} {when} (a kind this tool does not know)",
            notification.sequence
        ),
    }
}

fn or_dash(value: &str) -> &str {
    if value.is_empty() { "-" } else { value }
}

fn inactive_reason(value: i32) -> &'static str {
    InactiveReason::try_from(value).map_or("UNSPECIFIED", |r| {
        let name = r.as_str_name();
        name.strip_prefix("INACTIVE_REASON_").unwrap_or(name)
    })
}

fn notification_json(notification: &Notification) -> Value {
    let mut value = json!({
        "sequence": notification.sequence,
        "create_time": render::timestamp(notification.create_time.as_ref()),
    });
    let body = match &notification.kind {
        Some(Kind::Access(access)) => json!({
            "kind": "access",
            "local_case_id": access.local_case_id,
            "access_event": access.access_event.as_ref().map(render::access_event_json),
        }),
        Some(Kind::InactiveNhsNumber(inactive)) => json!({
            "kind": "inactive_nhs_number",
            "local_case_id": inactive.local_case_id,
            "nhs_number": inactive.nhs_number,
            "reason": inactive_reason(inactive.reason),
            "replacement_nhs_number": inactive.replacement_nhs_number,
        }),
        None => json!({ "kind": "unknown" }),
    };
    if let (Some(map), Value::Object(extra)) = (value.as_object_mut(), body) {
        map.extend(extra);
    }
    value
}
