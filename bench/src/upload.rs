//! Bulk-upload throughput: N records streamed through `UploadBatch` into a fresh database,
//! against the floor of the same engine's own multi-row inserts of the same rows in
//! transactions of the same size (no gRPC, no validation, no change detection; see `floors`).

use std::time::Instant;

use anyhow::Context as _;
use cpis_proto::cpis::common::v1::ChildRecord;
use cpis_proto::cpis::registry::v1::{BatchHeader, UploadBatchRequest, upload_batch_request::Item};
use cpis_testkit::nhs::nhs_numbers;
use cpis_testkit::{Stack, db::Backend};

use crate::{cpp_child, floors};

const CHUNK: usize = 2000;

/// Records in a council's typical (unsorted) extract order.
fn records(count: usize) -> Vec<ChildRecord> {
    let mut numbers: Vec<String> = nhs_numbers().take(count).collect();
    // A deterministic shuffle: extracts arrive in case order, not NHS-number order.
    let len = numbers.len();
    for i in (1..len).rev() {
        let j = (i.wrapping_mul(2_654_435_761) >> 7) % (i + 1);
        numbers.swap(i, j);
    }
    numbers
        .into_iter()
        .enumerate()
        .map(|(i, nhs_number)| {
            let born = 1 + i32::try_from(i % 28).unwrap_or(0);
            cpp_child(nhs_number, format!("CASE-{i:07}"), born)
        })
        .collect()
}

/// The engine's own rate: multi-row inserts of the same rows, CHUNK per transaction, on a fresh
/// database the registry has migrated (and then left alone).
async fn floor(backend: Backend, records: &[ChildRecord]) -> anyhow::Result<f64> {
    let mut stack = Stack::start(backend)
        .await
        .context("database unavailable")?;
    stack
        .stop_registry()
        .await
        .map_err(|e| anyhow::anyhow!("registry stop: {e}"))?;
    floors::insert_rate(&stack.db.url, records, CHUNK).await
}

/// The registry's rate through a generated client.
async fn through_grpc(backend: Backend, records: Vec<ChildRecord>) -> anyhow::Result<(f64, u64)> {
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
    stack.register_council("BENCH1").await;
    let mut client = stack.council().await;
    let count = records.len();
    let mut messages = Vec::with_capacity(count + 1);
    messages.push(UploadBatchRequest {
        item: Some(Item::Header(BatchHeader {
            batch_id: "bench".into(),
            ..Default::default()
        })),
    });
    messages.extend(records.into_iter().map(|r| UploadBatchRequest {
        item: Some(Item::Record(r)),
    }));
    // The token is minted before the clock starts: signing is the client's cost, not ours.
    let request = stack.as_council("BENCH1", tokio_stream::iter(messages));
    let started = Instant::now();
    let result = client
        .upload_batch(request)
        .await?
        .into_inner()
        .result
        .context("no result")?;
    let elapsed = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        result.accepted_count as usize == count,
        "accepted {} of {count}",
        result.accepted_count
    );
    drop(stack);
    Ok((count as f64 / elapsed, result.accepted_count))
}

/// Runs the scenario on one engine and prints the figures.
pub async fn run(backend: Backend, count: usize) -> anyhow::Result<()> {
    let records = records(count);
    let floor_rate = floor(backend, &records).await?;
    let (rate, accepted) = through_grpc(backend, records).await?;
    let engine = format!("{backend:?}").to_lowercase();
    println!(
        "upload {engine}: {accepted} records at {rate:.0} records/s; floor ({engine} multi-row inserts, {CHUNK}/transaction) {floor_rate:.0} rows/s; ratio {:.2}",
        rate / floor_rate
    );
    println!(
        "{}",
        serde_json::json!({
            "scenario": "upload", "engine": engine, "records": accepted,
            "records_per_s": rate.round(), "floor_rows_per_s": floor_rate.round(), "ratio": (rate / floor_rate * 100.0).round() / 100.0
        })
    );
    Ok(())
}
