//! `cpis upload FILE`: streams a council's extract through `CouncilService.UploadBatch` with a
//! progress bar, then writes a rejection report (one line per rejected or malformed row, by the
//! file's line number) and prints a summary. The batch id defaults to a digest of the file, so
//! re-running the same file is a safe replay that changes nothing.

use std::io::{BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cpis_proto::cpis::common::v1::ErrorReason;
use cpis_proto::cpis::registry::v1::{
    BatchHeader, BatchOutcome, ListBatchRejectionsRequest, RecordRejection, UploadBatchRequest,
    UploadBatchResponse, upload_batch_request::Item,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use crate::client::{CliError, CouncilArgs};
use crate::extract::{self, Format, MalformedRow, Row};

/// Exit code when the upload completed but some rows were rejected or malformed.
pub const EXIT_REJECTED: u8 = 3;

/// `cpis upload` arguments.
#[derive(Debug, clap::Args)]
pub struct UploadArgs {
    /// The extract: CSV with a header row, or NDJSON (`.ndjson`, `.jsonl`).
    pub file: PathBuf,
    /// The file's format; guessed from its extension when absent.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// The batch id (the idempotency key). Default: `sha256-` and a digest of the file, so the
    /// same file always makes the same batch and re-running it is a replay.
    #[arg(long)]
    pub batch_id: Option<String>,
    /// The council's file sequence number, recorded for reconciliation.
    #[arg(long, default_value_t = 0)]
    pub sequence: u64,
    /// Where to write the rejection report (CSV). Default: FILE.rejections.csv.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Do not draw the progress bar (it is drawn on a terminal only, on standard error).
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub council: CouncilArgs,
    #[command(flatten)]
    pub output: crate::client::Output,
}

/// A line of the rejection report.
#[derive(Debug)]
struct ReportLine {
    line: u64,
    local_case_id: String,
    reason: String,
    field: String,
    message: String,
    replacement_nhs_number: String,
}

/// What the file looked like before sending: its digest and how many rows it holds.
struct Survey {
    digest: String,
    rows: u64,
}

/// Reads the file once for its SHA-256 and its line count (for the progress bar's ETA).
fn survey(path: &Path) -> Result<Survey, CliError> {
    if path.is_dir() {
        return Err(CliError::Other(format!(
            "{} is a directory: give the extract file (CSV or NDJSON)",
            path.display()
        )));
    }
    let file = std::fs::File::open(path)
        .map_err(|e| CliError::Other(format!("cannot open {}: {e}", path.display())))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut hasher = Sha256::new();
    let read_error =
        |e: std::io::Error| CliError::Other(format!("cannot read {}: {e}", path.display()));
    let mut lines = 0u64;
    let mut last = b'\n';
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).map_err(read_error)?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        hasher.update(chunk);
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        last = chunk[n - 1];
    }
    if last != b'\n' {
        lines += 1;
    }
    let digest = hasher
        .finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Survey {
        digest,
        rows: lines,
    })
}

/// What reading the file produced, besides the records sent.
struct ReadOutcome {
    /// The file line of each record sent, in send order (position p is `lines[p - 1]`).
    lines: Vec<u64>,
    malformed: Vec<MalformedRow>,
    rows: u64,
}

/// Runs the upload; returns the process exit code.
pub async fn run(args: UploadArgs, json_output: bool) -> Result<u8, CliError> {
    let started = Instant::now();
    let format = args.format.unwrap_or_else(|| Format::from_path(&args.file));
    let path = args.file.clone();
    let surveyed = tokio::task::spawn_blocking(move || survey(&path))
        .await
        .map_err(|e| CliError::Other(e.to_string()))??;
    let batch_id = args
        .batch_id
        .clone()
        .unwrap_or_else(|| format!("sha256-{}", surveyed.digest));
    let expected_rows = match format {
        Format::Csv => surveyed.rows.saturating_sub(1),
        Format::Ndjson => surveyed.rows,
    };

    let file = std::fs::File::open(&args.file)
        .map_err(|e| CliError::Other(format!("cannot open {}: {e}", args.file.display())))?;
    let rows = extract::rows(BufReader::with_capacity(1 << 16, file), format)
        .map_err(|e| CliError::Other(format!("{}: {e}", args.file.display())))?;

    let progress = if args.no_progress || json_output {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::with_draw_target(Some(expected_rows), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{wide_bar}] {human_pos}/{human_len} rows  {rate}  ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{} rows/s", crate::render::number(state.per_sec() as u64));
            },
        )
        .progress_chars("=> ");
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    };

    let mut client = args.council.client().await?;
    let (tx, rx) = mpsc::channel::<UploadBatchRequest>(512);
    let header = UploadBatchRequest {
        item: Some(Item::Header(BatchHeader {
            batch_id: batch_id.clone(),
            sequence_number: args.sequence,
            ..BatchHeader::default()
        })),
    };
    tx.send(header)
        .await
        .map_err(|_| CliError::Other("upload stream closed before it started".into()))?;

    // The file is read on a blocking thread and handed over through a bounded channel, so memory
    // stays flat however large the extract is and a slow registry slows the reader. If the file
    // cannot be read to its end, the call is cancelled rather than ended: the registry then
    // records no outcome for this batch id, and a retry of the whole file is accepted.
    let (abort_tx, abort_rx) = tokio::sync::oneshot::channel::<CliError>();
    let (aborted_tx, aborted_rx) = tokio::sync::oneshot::channel::<()>();
    let reader_progress = progress.clone();
    let reader = tokio::task::spawn_blocking(move || -> ReadOutcome {
        let mut outcome = ReadOutcome {
            lines: Vec::new(),
            malformed: Vec::new(),
            rows: 0,
        };
        for row in rows {
            let row = match row {
                Ok(row) => row,
                Err(error) => {
                    let _ = abort_tx.send(CliError::Other(error.to_string()));
                    // Keep the stream open until the call is cancelled.
                    let _ = aborted_rx.blocking_recv();
                    drop(tx);
                    return outcome;
                }
            };
            outcome.rows += 1;
            reader_progress.inc(1);
            match row {
                Row::Record { line, record } => {
                    outcome.lines.push(line);
                    let request = UploadBatchRequest {
                        item: Some(Item::Record(*record)),
                    };
                    if tx.blocking_send(request).is_err() {
                        // The call ended early (its error is reported by the caller).
                        break;
                    }
                }
                Row::Malformed(bad) => outcome.malformed.push(bad),
            }
        }
        outcome
    });

    let call = client.upload_batch(tokio_stream::wrappers::ReceiverStream::new(rx));
    let response = tokio::select! {
        response = call => response,
        Ok(error) = abort_rx => {
            progress.finish_and_clear();
            let _ = aborted_tx.send(());
            return Err(error);
        }
    };
    let read = reader.await.map_err(|e| CliError::Other(e.to_string()))?;
    progress.finish_and_clear();
    let mut response: UploadBatchResponse = response?.into_inner();
    let mut result = response.result.take().unwrap_or_default();
    let report_path = args.report.clone().unwrap_or_else(|| {
        let mut name = args.file.clone().into_os_string();
        name.push(".rejections.csv");
        PathBuf::from(name)
    });
    // The report is written as the rejections arrive, merged by line with the rows the tool
    // found malformed: a million rejections never sit in memory at once.
    let malformed_count = read.malformed.len() as u64;
    let mut report = Report::create(&report_path, read.malformed)?;
    let mut write_page = |rejections: Vec<RecordRejection>| -> Result<(), CliError> {
        for rejection in rejections {
            let line = usize::try_from(rejection.position)
                .ok()
                .and_then(|p| p.checked_sub(1))
                .and_then(|i| read.lines.get(i))
                .copied()
                .unwrap_or(0);
            // One report row per rule the row breaks.
            for (reason, field, message) in violations_of(&rejection) {
                let reason = reason.to_owned();
                report.write(&ReportLine {
                    line,
                    local_case_id: rejection.local_case_id.clone(),
                    reason,
                    field: extract::column_for_field(&field),
                    message,
                    replacement_nhs_number: rejection.replacement_nhs_number.clone(),
                })?;
            }
        }
        Ok(())
    };
    if result.rejections_truncated {
        // The answer carries the first rejections only; the report needs every one.
        for_each_rejection_page(&mut client, &batch_id, write_page).await?;
    } else {
        write_page(std::mem::take(&mut result.rejections))?;
    }
    let rejected_rows = report.finish()?;

    let elapsed = started.elapsed();
    let outcome = BatchOutcome::try_from(result.outcome)
        .map(|o| {
            o.as_str_name()
                .trim_start_matches("BATCH_OUTCOME_")
                .to_owned()
        })
        .unwrap_or_else(|_| "UNSPECIFIED".into());
    let rate = if elapsed.as_secs_f64() > 0.0 {
        read.rows as f64 / elapsed.as_secs_f64()
    } else {
        0.0
    };
    if json_output {
        let summary = json!({
            "batch_id": result.batch_id,
            "sequence_number": result.sequence_number,
            "outcome": outcome,
            "replayed": response.replayed,
            "rows_read": read.rows,
            "records_sent": read.lines.len(),
            "received": result.received_count,
            "accepted": result.accepted_count,
            "rejected": result.rejected_count,
            "malformed": malformed_count,
            "report": report_path.display().to_string(),
            "report_rows": rejected_rows,
            "seconds": elapsed.as_secs_f64(),
        });
        println!("{summary}");
    } else {
        println!(
            "batch {} (sequence {}): {outcome}{}",
            result.batch_id,
            result.sequence_number,
            if response.replayed {
                " (already uploaded: this is its first outcome; nothing changed)"
            } else {
                ""
            }
        );
        use crate::render::{count, number};
        println!(
            "  rows read {}  sent {}  accepted {}  rejected by the registry {}  malformed (not sent) {}",
            number(read.rows),
            number(read.lines.len() as u64),
            number(result.accepted_count),
            number(result.rejected_count),
            number(malformed_count)
        );
        println!(
            "  rejection report: {} ({})",
            report_path.display(),
            count(rejected_rows, "row", "rows")
        );
        // A rate over a tenth of a second says nothing; a small file just took that long.
        if elapsed >= Duration::from_secs(1) {
            println!(
                "  {:.1} s, {} rows/s",
                elapsed.as_secs_f64(),
                number(rate as u64)
            );
        } else {
            println!("  {} ms", elapsed.as_millis());
        }
    }
    Ok(if rejected_rows == 0 { 0 } else { EXIT_REJECTED })
}

/// The rejection report being written: CSV with a header, lines in file order. Always written,
/// so an old report never outlives a new upload. Rejections arrive in position order (which is
/// line order); the tool's own malformed rows are merged in by line.
struct Report {
    path: PathBuf,
    writer: csv::Writer<std::io::BufWriter<std::fs::File>>,
    malformed: std::iter::Peekable<std::vec::IntoIter<MalformedRow>>,
    rows: u64,
}

impl Report {
    fn create(path: &Path, malformed: Vec<MalformedRow>) -> Result<Self, CliError> {
        let file = std::fs::File::create(path)
            .map_err(|e| CliError::Other(format!("cannot write {}: {e}", path.display())))?;
        let mut report = Self {
            path: path.to_owned(),
            writer: csv::Writer::from_writer(std::io::BufWriter::new(file)),
            malformed: malformed.into_iter().peekable(),
            rows: 0,
        };
        report.record([
            "line",
            "local_case_id",
            "reason",
            "field",
            "message",
            "replacement_nhs_number",
        ])?;
        Ok(report)
    }

    fn record<'a>(&mut self, fields: impl IntoIterator<Item = &'a str>) -> Result<(), CliError> {
        self.writer
            .write_record(fields)
            .map_err(|e| CliError::Other(format!("cannot write {}: {e}", self.path.display())))
    }

    /// Writes the malformed rows before `line` (all of them for `None`).
    fn malformed_before(&mut self, line: Option<u64>) -> Result<(), CliError> {
        while let Some(bad) = self
            .malformed
            .next_if(|bad| line.is_none_or(|line| bad.line < line))
        {
            let line = ReportLine {
                line: bad.line,
                local_case_id: bad.local_case_id,
                reason: bad.reason.to_owned(),
                field: bad.field,
                message: bad.message,
                replacement_nhs_number: String::new(),
            };
            self.line(&line)?;
        }
        Ok(())
    }

    fn line(&mut self, line: &ReportLine) -> Result<(), CliError> {
        self.rows += 1;
        self.record([
            line.line.to_string().as_str(),
            &line.local_case_id,
            &line.reason,
            &line.field,
            &line.message,
            &line.replacement_nhs_number,
        ])
    }

    /// Writes one registry rejection in its place.
    fn write(&mut self, line: &ReportLine) -> Result<(), CliError> {
        self.malformed_before(Some(line.line))?;
        self.line(line)
    }

    /// Writes what is left and flushes; returns the number of rows written.
    fn finish(mut self) -> Result<u64, CliError> {
        self.malformed_before(None)?;
        let mut inner = self
            .writer
            .into_inner()
            .map_err(|e| CliError::Other(format!("cannot write {}: {e}", self.path.display())))?;
        inner.flush()?;
        Ok(self.rows)
    }
}

/// Every rule a rejected record breaks, as (reason, field, message): registries before
/// `RecordRejection.violations` send the first only, in the rejection itself.
pub(crate) fn violations_of(rejection: &RecordRejection) -> Vec<(&'static str, String, String)> {
    let reason_name = |reason: i32| {
        ErrorReason::try_from(reason).map_or("UNSPECIFIED", ErrorReason::as_info_reason)
    };
    if rejection.violations.is_empty() {
        return vec![(
            reason_name(rejection.reason),
            rejection.field.clone(),
            rejection.message.clone(),
        )];
    }
    rejection
        .violations
        .iter()
        .map(|v| (reason_name(v.reason), v.field.clone(), v.message.clone()))
        .collect()
}

/// Every rejection of batch `batch_id`, page by page (positions count the records sent, from
/// 1), handed to `each_page` in order.
pub(crate) async fn for_each_rejection_page(
    client: &mut crate::client::CouncilClient,
    batch_id: &str,
    mut each_page: impl FnMut(Vec<RecordRejection>) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let mut page_token = String::new();
    loop {
        let page = client
            .list_batch_rejections(ListBatchRejectionsRequest {
                batch_id: batch_id.to_owned(),
                page_size: 1000,
                page_token,
                ..ListBatchRejectionsRequest::default()
            })
            .await?
            .into_inner();
        each_page(page.rejections)?;
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        page_token = page.next_page_token;
    }
}

/// Writes a whole report (for tests).
#[cfg(test)]
fn write_report(path: &Path, lines: &[ReportLine]) -> Result<(), CliError> {
    let mut report = Report::create(path, Vec::new())?;
    for line in lines {
        report.write(line)?;
    }
    report.finish().map(|_| ())
}

/// Reads a report back (for tests): (line, reason, field) per row.
#[cfg(test)]
fn read_report(path: &Path) -> Vec<(u64, String, String)> {
    let Ok(mut reader) = csv::Reader::from_path(path) else {
        return Vec::new();
    };
    reader
        .records()
        .map_while(Result::ok)
        .map(|r| (r[0].parse().unwrap_or(0), r[2].to_owned(), r[3].to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survey_counts_lines_with_or_without_a_final_newline() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let a = dir.path().join("a.csv");
        std::fs::write(&a, "h\n1\n2\n").unwrap_or_else(|e| panic!("{e}"));
        let b = dir.path().join("b.csv");
        std::fs::write(&b, "h\n1\n2").unwrap_or_else(|e| panic!("{e}"));
        let (sa, sb) = (survey(&a).ok(), survey(&b).ok());
        assert_eq!(sa.as_ref().map(|s| s.rows), Some(3));
        assert_eq!(sb.as_ref().map(|s| s.rows), Some(3));
        assert_ne!(sa.map(|s| s.digest), sb.map(|s| s.digest));
    }

    #[test]
    fn report_round_trips() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("r.csv");
        let lines = [ReportLine {
            line: 7,
            local_case_id: "C7".into(),
            reason: "NHS_NUMBER_INVALID".into(),
            field: "record.nhs_number".into(),
            message: "check digit is not valid".into(),
            replacement_nhs_number: String::new(),
        }];
        write_report(&path, &lines).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            read_report(&path),
            vec![(
                7,
                "NHS_NUMBER_INVALID".to_owned(),
                "record.nhs_number".to_owned()
            )]
        );
    }
}
