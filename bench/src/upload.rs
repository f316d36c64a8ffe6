//! Bulk-upload throughput: N records streamed through `UploadBatch` into a fresh database,
//! against the floor of the same engine's own multi-row inserts of the same rows in
//! transactions of the same size (no gRPC, no validation, no change detection).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use cpis_core::auth::DevSigner;
use cpis_proto::cpis::common::v1::{ChildProtectionPlan, ChildRecord, LocalAuthority, PlanPeriod};
use cpis_proto::cpis::registry::v1::{
    BatchHeader, SetContactDetailsRequest, UploadBatchRequest,
    council_service_client::CouncilServiceClient, upload_batch_request::Item,
};
use cpis_proto::google::r#type::Date;
use cpis_testkit::nhs::nhs_numbers;
use cpis_testkit::{
    TestServer,
    db::{Backend, TestDb},
};
use registry_service::db::{Database, DatabaseUrl, PoolOptions, models::NewChildRecord};
use registry_service::record::validate_record;
use tonic::Request;

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
        .map(|(i, nhs_number)| ChildRecord {
            nhs_number,
            local_case_id: format!("CASE-{i:07}"),
            given_name: "Alex".into(),
            family_name: "Example".into(),
            date_of_birth: Some(Date {
                year: 2018,
                month: 3,
                day: 1 + i32::try_from(i % 28).unwrap_or(0),
            }),
            child_protection_plan: Some(ChildProtectionPlan {
                period: Some(PlanPeriod {
                    start_date: Some(Date {
                        year: 2025,
                        month: 1,
                        day: 10,
                    }),
                    end_date: None,
                    delete_date: None,
                }),
            }),
            ..Default::default()
        })
        .collect()
}

async fn migrated(backend: Backend) -> anyhow::Result<(TestDb, Database)> {
    let test_db = TestDb::create(backend).context("database unavailable")?;
    let url = DatabaseUrl::parse(&test_db.url)?;
    let db = Database::open(
        url,
        PoolOptions {
            max_connections: 4,
            acquire_timeout: Duration::from_secs(10),
        },
    )?;
    db.migrate().await?;
    Ok((test_db, db))
}

/// The engine's own rate: multi-row inserts of the same rows, CHUNK per transaction.
async fn floor(backend: Backend, records: &[ChildRecord]) -> anyhow::Result<f64> {
    use diesel::Connection as _;
    let (_guard, db) = migrated(backend).await?;
    let today = chrono::Utc::now().date_naive();
    let rows: Vec<NewChildRecord> = records
        .iter()
        .filter_map(|r| validate_record(r, "", today).ok())
        .map(|r| NewChildRecord {
            local_authority: "FLOOR".into(),
            nhs_number: r.nhs_number.to_string(),
            content: r.content(),
            version: 1,
            create_time: 0,
            update_time: 0,
        })
        .collect();
    let count = rows.len();
    let started = Instant::now();
    db.run(move |conn| {
        use diesel::RunQueryDsl as _;
        diesel::sql_query(
            "INSERT INTO local_authorities (ods_code, name, emergency_duty_phone, update_time) VALUES ('FLOOR', 'Floor', '02079460000', 0)",
        )
        .execute(conn)?;
        for chunk in rows.chunks(CHUNK) {
            let mut sorted = chunk.to_vec();
            sorted.sort_by(|a, b| a.nhs_number.cmp(&b.nhs_number));
            conn.transaction(|conn| {
                for part in sorted.chunks(500) {
                    registry_service::store::insert_records(conn, part)?;
                }
                Ok::<_, registry_service::RegistryError>(())
            })?;
        }
        Ok(())
    })
    .await?;
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// The registry's rate through a generated client.
async fn through_grpc(backend: Backend, records: Vec<ChildRecord>) -> anyhow::Result<(f64, u64)> {
    let test_db = TestDb::create(backend).context("database unavailable")?;
    let signer = DevSigner::generate("cpis", "cpis-registry")?;
    let mut config =
        registry_service::Config::with(DatabaseUrl::parse(&test_db.url)?, signer.verifier()?);
    if let Some(chunk) = std::env::var("CPIS_UPLOAD_CHUNK")
        .ok()
        .and_then(|c| c.parse().ok())
    {
        config.upload_chunk = chunk;
    }
    let server =
        TestServer::start(|listener, shutdown| registry_service::serve(config, listener, shutdown))
            .await;
    let token = signer.mint(
        &serde_json::json!({"ods_code": "BENCH1", "scope": "read write"}),
        Duration::from_secs(3600),
    )?;
    let bearer: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
        format!("Bearer {token}").parse()?;
    let authed = |message| {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", bearer.clone());
        request
    };
    let mut client = CouncilServiceClient::new(server.channel().await);
    client
        .set_contact_details(authed(SetContactDetailsRequest {
            local_authority: Some(LocalAuthority {
                name: "Bench".into(),
                emergency_duty_phone: "020 7946 0000".into(),
                ..Default::default()
            }),
        }))
        .await?;
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
    let started = Instant::now();
    let mut request = Request::new(tokio_stream::iter(messages));
    request
        .metadata_mut()
        .insert("authorization", bearer.clone());
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
    drop(server);
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
