//! `cpis records`, `cpis batch` and `cpis accesses`: the council's records one at a time (get,
//! list, delete), a completed batch's stored outcome and rejections, and the access history of
//! an NHS number — the council API's reads and its delete, for a person at a terminal.

use cpis_proto::cpis::common::v1::ChildRecord;
use cpis_proto::cpis::registry::v1::{
    BatchOutcome, DeleteChildRecordRequest, GetBatchRequest, GetChildRecordRequest,
    ListAccessEventsRequest, ListChildRecordsRequest, RecordStateFilter,
};
use serde_json::{Value, json};

use crate::client::{CliError, CouncilArgs};
use crate::render;

/// `cpis records` arguments.
#[derive(Debug, clap::Args)]
pub struct RecordsArgs {
    #[command(subcommand)]
    pub action: RecordsAction,
    #[command(flatten)]
    pub council: CouncilArgs,
    #[command(flatten)]
    pub output: crate::client::Output,
}

/// Which records to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum State {
    /// Every record the council holds.
    All,
    /// Records with a plan that has not ended.
    Active,
    /// Records whose every plan has ended or is withdrawn.
    Ended,
}

/// What to do with the council's records.
#[derive(Debug, clap::Subcommand)]
pub enum RecordsAction {
    /// Show the council's record for one NHS number (delete dates included).
    Get {
        /// The NHS number (10 digits; spaces and hyphens are ignored).
        nhs_number: String,
    },
    /// List the council's records in NHS-number order.
    List {
        /// Which records.
        #[arg(long, value_enum, default_value_t = State::All)]
        state: State,
        /// At most this many records (all of them when absent).
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Remove a record sent in error, at once (its access history is kept).
    Delete {
        /// The NHS number (10 digits; spaces and hyphens are ignored).
        nhs_number: String,
        /// Remove only if the record's current version is this one.
        #[arg(long)]
        expected_version: Option<i64>,
    },
}

/// `cpis batch` arguments.
#[derive(Debug, clap::Args)]
pub struct BatchArgs {
    #[command(subcommand)]
    pub action: BatchAction,
    #[command(flatten)]
    pub council: CouncilArgs,
    #[command(flatten)]
    pub output: crate::client::Output,
}

/// What to ask about a batch.
#[derive(Debug, clap::Subcommand)]
pub enum BatchAction {
    /// The stored outcome of a completed batch and every rejection (by position in the batch).
    Status {
        /// The batch id (`cpis upload` prints it; by default `sha256-…` of the file).
        batch_id: String,
    },
}

/// `cpis accesses` arguments.
#[derive(Debug, clap::Args)]
pub struct AccessesArgs {
    /// The NHS number (10 digits; spaces and hyphens are ignored).
    pub nhs_number: String,
    /// At most this many accesses, newest first (all of them when absent).
    #[arg(long)]
    pub limit: Option<u64>,
    #[command(flatten)]
    pub council: CouncilArgs,
    #[command(flatten)]
    pub output: crate::client::Output,
}

/// An NHS number as a person may type it (`999 000 0018`, `999-000-0018`), as the contract
/// takes it: digits only. Anything else is left for the service to explain.
pub fn nhs_number(text: &str) -> String {
    text.chars().filter(|c| !matches!(c, ' ' | '-')).collect()
}

/// A record as JSON: absent dates and blocks are `null`, never `""`.
pub fn record_json(record: &ChildRecord) -> Value {
    let period = |p: Option<&cpis_proto::cpis::common::v1::PlanPeriod>| {
        p.map_or(Value::Null, |p| {
            json!({
                "start_date": render::date_json(p.start_date.as_ref()),
                "end_date": render::date_json(p.end_date.as_ref()),
                "delete_date": render::date_json(p.delete_date.as_ref()),
            })
        })
    };
    json!({
        "nhs_number": record.nhs_number,
        "local_case_id": record.local_case_id,
        "given_name": record.given_name,
        "family_name": record.family_name,
        "date_of_birth": render::date_json(record.date_of_birth.as_ref()),
        "child_protection_plan": record.child_protection_plan.as_ref().map_or(Value::Null, |p| period(p.period.as_ref())),
        "looked_after_child": record.looked_after_child.as_ref().map_or(Value::Null, |l| {
            let mut value = period(l.period.as_ref());
            if let Some(map) = value.as_object_mut() {
                let basis = render::legal_basis(l.legal_basis);
                map.insert("legal_basis".into(), if basis.is_empty() { Value::Null } else { json!(basis) });
            }
            value
        }),
        "unborn_child_protection_plan": record.unborn_child_protection_plan.as_ref().map_or(Value::Null, |u| {
            let mut value = period(u.period.as_ref());
            if let Some(map) = value.as_object_mut() {
                map.insert("expected_delivery_date".into(), render::date_json(u.expected_delivery_date.as_ref()));
            }
            value
        }),
        "local_authority_ods_code": record.local_authority_ods_code,
        "version": record.version,
        "create_time": render::timestamp_json(record.create_time.as_ref()),
        "update_time": render::timestamp_json(record.update_time.as_ref()),
    })
}

/// A record for a person: one line, then a line per plan.
fn print_record(record: &ChildRecord) {
    let case = if record.local_case_id.is_empty() {
        String::new()
    } else {
        format!("  case {}", record.local_case_id)
    };
    println!(
        "{}  {} {}  born {}{case}  version {}",
        record.nhs_number,
        record.given_name,
        record.family_name,
        render::date_or_dash(record.date_of_birth.as_ref()),
        record.version
    );
    let line = |name: &str, p: Option<&cpis_proto::cpis::common::v1::PlanPeriod>, extra: String| {
        let p = p.cloned().unwrap_or_default();
        let delete = p
            .delete_date
            .as_ref()
            .map(|d| format!("  deleted from {}", render::date(Some(d))))
            .unwrap_or_default();
        println!(
            "  {name:<32} {} to {}{extra}{delete}",
            render::date_or_dash(p.start_date.as_ref()),
            render::date_or_dash(p.end_date.as_ref())
        );
    };
    if let Some(plan) = &record.child_protection_plan {
        line("child protection plan", plan.period.as_ref(), String::new());
    }
    if let Some(lac) = &record.looked_after_child {
        let basis = render::legal_basis(lac.legal_basis);
        let extra = if basis.is_empty() {
            String::new()
        } else {
            format!("  {basis}")
        };
        line("looked after", lac.period.as_ref(), extra);
    }
    if let Some(ucpp) = &record.unborn_child_protection_plan {
        let extra = ucpp
            .expected_delivery_date
            .as_ref()
            .map(|d| format!("  expected delivery {}", render::date(Some(d))))
            .unwrap_or_default();
        line("unborn child protection plan", ucpp.period.as_ref(), extra);
    }
}

/// Runs `cpis records`; returns the exit code.
pub async fn run_records(args: RecordsArgs, json_output: bool) -> Result<u8, CliError> {
    let mut client = args.council.client().await?;
    match args.action {
        RecordsAction::Get { nhs_number: number } => {
            let record = client
                .get_child_record(GetChildRecordRequest {
                    nhs_number: nhs_number(&number),
                    ..GetChildRecordRequest::default()
                })
                .await?
                .into_inner()
                .record
                .unwrap_or_default();
            if json_output {
                println!("{}", record_json(&record));
            } else {
                print_record(&record);
            }
        }
        RecordsAction::List { state, limit } => {
            let state = match state {
                State::All => RecordStateFilter::Unspecified,
                State::Active => RecordStateFilter::Active,
                State::Ended => RecordStateFilter::Ended,
            };
            let mut printed = 0u64;
            let mut page_token = String::new();
            'pages: loop {
                let page = client
                    .list_child_records(ListChildRecordsRequest {
                        page_size: 1000,
                        page_token,
                        state: state as i32,
                        ..ListChildRecordsRequest::default()
                    })
                    .await?
                    .into_inner();
                for record in &page.records {
                    if limit.is_some_and(|limit| printed >= limit) {
                        break 'pages;
                    }
                    printed += 1;
                    if json_output {
                        println!("{}", record_json(record));
                    } else {
                        print_record(record);
                    }
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            if !json_output {
                println!("({})", render::count(printed, "record", "records"));
            }
        }
        RecordsAction::Delete {
            nhs_number: number,
            expected_version,
        } => {
            let number = nhs_number(&number);
            client
                .delete_child_record(DeleteChildRecordRequest {
                    nhs_number: number.clone(),
                    expected_version,
                    ..DeleteChildRecordRequest::default()
                })
                .await?;
            if json_output {
                println!("{}", json!({ "deleted": number }));
            } else {
                println!("deleted the record for {number}; its access history is kept");
            }
        }
    }
    Ok(0)
}

/// Runs `cpis batch`; returns the exit code.
pub async fn run_batch(args: BatchArgs, json_output: bool) -> Result<u8, CliError> {
    let mut client = args.council.client().await?;
    let BatchAction::Status { batch_id } = args.action;
    let result = client
        .get_batch(GetBatchRequest {
            batch_id: batch_id.clone(),
            ..GetBatchRequest::default()
        })
        .await?
        .into_inner()
        .result
        .unwrap_or_default();
    let outcome = BatchOutcome::try_from(result.outcome).map_or("UNSPECIFIED", |o| {
        o.as_str_name().trim_start_matches("BATCH_OUTCOME_")
    });
    if json_output {
        println!(
            "{}",
            json!({
                "batch_id": result.batch_id,
                "sequence_number": result.sequence_number,
                "outcome": outcome,
                "received": result.received_count,
                "accepted": result.accepted_count,
                "rejected": result.rejected_count,
                "expected_record_count_mismatch": result.expected_record_count_mismatch,
                "complete_time": render::timestamp_json(result.complete_time.as_ref()),
            })
        );
    } else {
        println!(
            "batch {} (sequence {}): {outcome}, completed {}",
            result.batch_id,
            result.sequence_number,
            render::timestamp(result.complete_time.as_ref())
        );
        println!(
            "  received {}  accepted {}  rejected {}",
            render::number(result.received_count),
            render::number(result.accepted_count),
            render::number(result.rejected_count)
        );
    }
    crate::upload::for_each_rejection_page(&mut client, &batch_id, |rejections| {
        for rejection in rejections {
            // Every rule the record breaks.
            let violations = crate::upload::violations_of(&rejection);
            if json_output {
                let all: Vec<Value> = violations
                    .iter()
                    .map(|(reason, field, message)| {
                        json!({
                            "reason": reason,
                            "field": crate::extract::column_for_field(field),
                            "message": message,
                        })
                    })
                    .collect();
                let (reason, field, message) = violations.first().cloned().unwrap_or_default();
                println!(
                    "{}",
                    json!({
                        "position": rejection.position,
                        "local_case_id": rejection.local_case_id,
                        "reason": reason,
                        "field": crate::extract::column_for_field(&field),
                        "message": message,
                        "violations": all,
                    })
                );
            } else {
                for (reason, field, message) in &violations {
                    println!(
                        "  record {}  {}  {reason}  {}: {message}",
                        rejection.position,
                        rejection.local_case_id,
                        crate::extract::column_for_field(field),
                    );
                }
            }
        }
        Ok(())
    })
    .await?;
    Ok(0)
}

/// Runs `cpis accesses`; returns the exit code.
pub async fn run_accesses(args: AccessesArgs, json_output: bool) -> Result<u8, CliError> {
    let mut client = args.council.client().await?;
    let number = nhs_number(&args.nhs_number);
    let mut printed = 0u64;
    let mut page_token = String::new();
    'pages: loop {
        let page = client
            .list_access_events(ListAccessEventsRequest {
                nhs_number: number.clone(),
                page_size: 100,
                page_token,
                ..ListAccessEventsRequest::default()
            })
            .await?
            .into_inner();
        for event in &page.access_events {
            if args.limit.is_some_and(|limit| printed >= limit) {
                break 'pages;
            }
            printed += 1;
            if json_output {
                println!("{}", render::access_event_json(event));
            } else {
                println!(
                    "{}  {}",
                    render::timestamp(event.access_time.as_ref()),
                    render::accessor_line(event.accessor.as_ref())
                );
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if !json_output {
        println!("({})", render::count(printed, "access", "accesses"));
    }
    Ok(0)
}
