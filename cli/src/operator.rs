//! `cpis operator import-nhs-status FILE`: the operator's feed of NHS-number status changes
//! (adopted, superseded or merged, deceased) sent to the registry's internal port, over mutual
//! TLS with the operator's certificate and an operator token, as `OperatorService` requires.

use std::path::PathBuf;

use cpis_proto::cpis::common::v1::{ErrorReason, InactiveReason};
use cpis_proto::cpis::registry::v1::operator_service_client::OperatorServiceClient;
use cpis_proto::cpis::registry::v1::{ImportNhsNumberStatusChangesRequest, NhsNumberStatusChange};
use secrecy::SecretString;
use serde_json::json;

use crate::client::{self, CliError, ClientCert};
use crate::render;

/// `cpis operator` arguments.
#[derive(Debug, clap::Args)]
pub struct OperatorArgs {
    #[command(subcommand)]
    pub action: OperatorAction,
    /// The registry's internal address (mutual TLS).
    #[arg(
        long,
        env = "CPIS_INTERNAL_URL",
        default_value = "https://127.0.0.1:50053"
    )]
    pub internal_url: String,
    /// PEM file of the CA that signed the internal port's certificate (`cpis dev`: DATA_DIR/tls/ca.pem).
    #[arg(long, env = "CPIS_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// PEM file of the operator's client certificate (`cpis dev`: DATA_DIR/tls/operator.pem).
    #[arg(long, env = "CPIS_OPERATOR_CERT")]
    pub client_cert: PathBuf,
    /// PEM file of --client-cert's key (`cpis dev`: DATA_DIR/tls/operator.key).
    #[arg(long, env = "CPIS_OPERATOR_KEY")]
    pub client_key: PathBuf,
    /// The operator's bearer token, scope "operator" (`cpis token operator` in dev).
    #[arg(long, env = "CPIS_OPERATOR_TOKEN", hide_env_values = true)]
    pub token: Option<SecretString>,
    #[command(flatten)]
    pub output: crate::client::Output,
}

/// What an operator does.
#[derive(Debug, clap::Subcommand)]
pub enum OperatorAction {
    /// Import NHS-number status changes from a CSV file with the header
    /// `nhs_number,reason,replacement_nhs_number,effective_date` (reason: adopted, superseded or
    /// deceased; the last two columns may be empty or absent).
    ImportNhsStatus {
        /// The CSV file.
        file: PathBuf,
    },
}

/// One line of the status-change file.
#[derive(Debug, serde::Deserialize)]
struct ChangeRow {
    nhs_number: String,
    reason: String,
    #[serde(default)]
    replacement_nhs_number: String,
    #[serde(default)]
    effective_date: String,
}

fn change(row: ChangeRow) -> Result<NhsNumberStatusChange, String> {
    let reason = match row.reason.trim().to_ascii_lowercase().as_str() {
        "adopted" => InactiveReason::Adopted,
        "superseded" | "merged" => InactiveReason::Superseded,
        "deceased" => InactiveReason::Deceased,
        other => {
            return Err(format!(
                "reason {other:?} is not adopted, superseded or deceased"
            ));
        }
    };
    let effective = row.effective_date.trim();
    let effective_date = if effective.is_empty() {
        None
    } else {
        Some(
            crate::extract::parse_date(effective)
                .ok_or_else(|| format!("{effective:?} is not a date in the form YYYY-MM-DD"))?,
        )
    };
    Ok(NhsNumberStatusChange {
        nhs_number: crate::records::nhs_number(&row.nhs_number),
        reason: reason as i32,
        replacement_nhs_number: crate::records::nhs_number(&row.replacement_nhs_number),
        effective_date,
    })
}

/// Runs `cpis operator`; returns the exit code (3 when entries were rejected).
pub async fn run(args: OperatorArgs, json_output: bool) -> Result<u8, CliError> {
    let OperatorAction::ImportNhsStatus { file } = &args.action;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(file)
        .map_err(|e| CliError::Other(format!("cannot read {}: {e}", file.display())))?;
    // Read whole: a status feed is a day's changes, not an extract of every child.
    let mut changes = Vec::new();
    for (index, row) in reader.deserialize::<ChangeRow>().enumerate() {
        let line = index + 2;
        let row =
            row.map_err(|e| CliError::Other(format!("{} line {line}: {e}", file.display())))?;
        changes.push(
            change(row)
                .map_err(|e| CliError::Other(format!("{} line {line}: {e}", file.display())))?,
        );
    }
    let channel = client::connect_with(
        &args.internal_url,
        args.ca_cert.as_deref(),
        Some(ClientCert {
            cert: &args.client_cert,
            key: &args.client_key,
        }),
    )
    .await?;
    let mut operator =
        OperatorServiceClient::with_interceptor(channel, client::bearer(args.token.as_ref())?);
    let requests = changes
        .into_iter()
        .map(|change| ImportNhsNumberStatusChangesRequest {
            change: Some(change),
        });
    let answer = operator
        .import_nhs_number_status_changes(tokio_stream::iter(requests))
        .await?
        .into_inner();
    let rejected = answer.rejections.len() as u64;
    if json_output {
        println!(
            "{}",
            json!({
                "received": answer.received_count,
                "applied": answer.applied_count,
                "notifications_queued": answer.notifications_queued,
                "rejected": rejected,
            })
        );
    } else {
        println!(
            "received {}  applied {}  notifications queued {}  rejected {}",
            render::number(answer.received_count),
            render::number(answer.applied_count),
            render::number(answer.notifications_queued),
            render::number(rejected)
        );
    }
    for rejection in &answer.rejections {
        let reason = ErrorReason::try_from(rejection.reason)
            .map_or("UNSPECIFIED", ErrorReason::as_info_reason);
        // Entries count from 1 after the header: entry N is on line N + 1.
        let line = rejection.position + 1;
        if json_output {
            println!(
                "{}",
                json!({ "line": line, "reason": reason, "field": rejection.field, "message": rejection.message })
            );
        } else {
            println!(
                "  line {line}  {reason}  {}: {}",
                rejection.field, rejection.message
            );
        }
    }
    Ok(if rejected == 0 {
        0
    } else {
        crate::upload::EXIT_REJECTED
    })
}
