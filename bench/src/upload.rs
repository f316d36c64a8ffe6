//! Bulk-upload throughput: N records streamed through `UploadBatch`, against the engine's own
//! best bulk load of the same rows into the same table of the same database in the same run, the
//! table emptied between: one binary COPY on PostgreSQL, multi-row inserts in one transaction on
//! SQLite (see `floors`). Also the process's resident memory during the upload: the servers and
//! the client share this process and each record is made as it is sent, so the growth is the
//! registry's working set and the stream's buffers, not the batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cpis_proto::cpis::common::v1::ChildRecord;
use cpis_proto::cpis::registry::v1::{BatchHeader, UploadBatchRequest, upload_batch_request::Item};
use cpis_testkit::nhs::nhs_numbers;
use cpis_testkit::{Stack, db::Backend};

use crate::lookup::resident_kib;
use crate::{cpp_child, floors};

/// The council whose batch is uploaded.
const COUNCIL: &str = "BENCH1";

/// NHS numbers in a council's typical (unsorted) extract order.
fn shuffled_numbers(count: usize) -> Vec<String> {
    let mut numbers: Vec<String> = nhs_numbers().take(count).collect();
    // A deterministic shuffle: extracts arrive in case order, not NHS-number order.
    let len = numbers.len();
    for i in (1..len).rev() {
        let j = (i.wrapping_mul(2_654_435_761) >> 7) % (i + 1);
        numbers.swap(i, j);
    }
    numbers
}

/// The batch's `i`-th record.
fn record(i: usize, nhs_number: &str) -> ChildRecord {
    let born = 1 + i32::try_from(i % 28).unwrap_or(0);
    cpp_child(nhs_number.to_owned(), format!("CASE-{i:07}"), born)
}

/// What one upload did.
struct Upload {
    rate: f64,
    accepted: u64,
    rss_before_kib: i64,
    rss_peak_kib: i64,
    /// CPU seconds of this process (client and servers) during the upload.
    process_cpu: f64,
    /// CPU seconds of the database's backends during the upload (PostgreSQL).
    database_cpu: f64,
}

/// The registry's rate through a generated client, and the process's memory meanwhile.
async fn through_grpc(stack: &Stack, numbers: Arc<Vec<String>>) -> anyhow::Result<Upload> {
    let mut client = stack.council().await;
    let count = numbers.len();
    let header = UploadBatchRequest {
        item: Some(Item::Header(BatchHeader {
            batch_id: "bench".into(),
            ..Default::default()
        })),
    };
    let records = (0..count).map(move |i| UploadBatchRequest {
        item: Some(Item::Record(record(i, &numbers[i]))),
    });
    let messages = tokio_stream::iter(std::iter::once(header).chain(records));
    // The token is minted before the clock starts: signing is the client's cost, not ours.
    let request = stack.as_council(COUNCIL, messages);
    let rss_before_kib = resident_kib();
    let (peak, done) = (
        Arc::new(AtomicI64::new(rss_before_kib)),
        Arc::new(AtomicBool::new(false)),
    );
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(resident_kib(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let (process_cpu, database_cpu) = (
        floors::cpu_seconds("self"),
        floors::database_cpu_seconds(&stack.db.url).await?,
    );
    let started = Instant::now();
    let answer = client.upload_batch(request).await;
    let elapsed = started.elapsed().as_secs_f64();
    let (process_cpu, database_cpu) = (
        floors::cpu_seconds("self") - process_cpu,
        floors::database_cpu_seconds(&stack.db.url).await? - database_cpu,
    );
    done.store(true, Ordering::Relaxed);
    sampler.await?;
    let result = answer?.into_inner().result.context("no result")?;
    anyhow::ensure!(
        result.accepted_count as usize == count,
        "accepted {} of {count}",
        result.accepted_count
    );
    Ok(Upload {
        rate: count as f64 / elapsed,
        accepted: result.accepted_count,
        rss_before_kib,
        rss_peak_kib: peak.load(Ordering::Relaxed),
        process_cpu,
        database_cpu,
    })
}

/// Runs the scenario on one engine, prints the figures and returns them as JSON.
pub async fn run(backend: Backend, count: usize) -> anyhow::Result<serde_json::Value> {
    let chunk: Option<usize> = std::env::var("CPIS_UPLOAD_CHUNK")
        .ok()
        .and_then(|c| c.parse().ok());
    let stack = Stack::builder(backend)
        .registry(move |config| {
            if let Some(chunk) = chunk {
                config.upload_chunk = chunk;
            }
        })
        .start()
        .await
        .context("database unavailable")?;
    stack.register_council(COUNCIL).await;
    let numbers = Arc::new(shuffled_numbers(count));
    // The upload first, while the process holds only the servers: its memory growth is the
    // upload's. Then the same rows by the engine's own bulk path into the emptied table.
    let upload = through_grpc(&stack, numbers.clone()).await?;
    floors::empty_records(&stack.db.url).await?;
    let records: Vec<ChildRecord> = numbers
        .iter()
        .enumerate()
        .map(|(i, n)| record(i, n))
        .collect();
    let floor = floors::bulk_rate(&stack.db.url, COUNCIL, &records).await?;
    let (floor_rate, floor_what) = (floor.rate, floor.what);
    drop(stack);
    let engine = format!("{backend:?}").to_lowercase();
    let ratio = upload.rate / floor_rate;
    let mib = |kib: i64| kib as f64 / 1024.0;
    println!(
        "upload {engine}: {} records at {:.0} records/s; floor ({engine} {floor_what}) {floor_rate:.0} rows/s; ratio {ratio:.2}; process RSS {:.0} MiB before, {:.0} MiB peak during the upload (+{:.0} MiB)",
        upload.accepted,
        upload.rate,
        mib(upload.rss_before_kib),
        mib(upload.rss_peak_kib),
        mib(upload.rss_peak_kib - upload.rss_before_kib),
    );
    let per_record = |seconds: f64| seconds * 1e6 / upload.accepted.max(1) as f64;
    println!(
        "  CPU: this process (client and servers) {:.2} s ({:.1} µs/record), the database's backends {:.2} s ({:.1} µs/record); the floor {:.2} s ({:.1} µs/row)",
        upload.process_cpu,
        per_record(upload.process_cpu),
        upload.database_cpu,
        per_record(upload.database_cpu),
        floor.cpu,
        per_record(floor.cpu),
    );
    Ok(serde_json::json!({
        "scenario": "upload", "engine": engine, "records": upload.accepted,
        "records_per_s": upload.rate.round(), "floor": floor_what,
        "floor_rows_per_s": floor_rate.round(), "ratio": (ratio * 100.0).round() / 100.0,
        "rss_before_mib": mib(upload.rss_before_kib).round(),
        "rss_peak_mib": mib(upload.rss_peak_kib).round(),
        "process_cpu_s": (upload.process_cpu * 100.0).round() / 100.0,
        "database_cpu_s": (upload.database_cpu * 100.0).round() / 100.0,
        "floor_cpu_s": (floor.cpu * 100.0).round() / 100.0,
    }))
}
