//! Writers that race each other are answered by the contract, never INTERNAL: concurrent puts of
//! one new record all succeed (exactly one creates it) unless they named an expected version
//! (then the losers get ABORTED); concurrent uploads under one batch id complete or replay; an
//! NHS-number status import during a flood of notifying disclosures neither deadlocks nor fails
//! a lookup. Bounded in count and time.

use cpis_core::status::reason_of;
use cpis_proto::cpis::common::v1::{AccessMode, ErrorReason, InactiveReason};
use cpis_proto::cpis::registry::v1::{
    DiscloseRequest, ImportNhsNumberStatusChangesRequest, NhsNumberStatusChange,
    PutChildRecordRequest, disclosure_service_client::DisclosureServiceClient,
};
use cpis_testkit::{both_backends, db::Backend};
use tonic::Code;

use crate::harness::{batch, cpp_record, ed_clinician, nhs, start, upload, with_token};

both_backends!(
    concurrent_puts_of_one_record,
    concurrent_uploads_under_one_batch_id,
    an_import_during_a_disclosure_flood
);

/// Rounds of 4 concurrent puts.
const ROUNDS: usize = 25;

async fn concurrent_puts_of_one_record(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    reg.register_council("AB1").await;
    let client = reg.council().await;
    for round in 0..ROUNDS {
        for expected_version in [None, Some(0)] {
            let number = nhs(round * 2 + usize::from(expected_version.is_some()));
            let puts = (0..4).map(|writer| {
                let mut client = client.clone();
                let mut record = cpp_record(&number);
                record.given_name = format!("Writer{writer}");
                let request = reg.as_council(
                    "AB1",
                    PutChildRecordRequest {
                        record: Some(record),
                        expected_version,
                        ..Default::default()
                    },
                );
                async move { client.put_child_record(request).await }
            });
            let outcomes = futures::future::join_all(puts).await;
            let created = outcomes
                .iter()
                .filter(|o| o.as_ref().is_ok_and(|a| a.get_ref().created))
                .count();
            assert_eq!(
                created, 1,
                "round {round}: exactly one put creates the record"
            );
            for outcome in &outcomes {
                match (outcome, expected_version) {
                    (Ok(_), _) => {}
                    (Err(status), Some(_)) => assert_eq!(
                        (status.code(), reason_of(status)),
                        (Code::Aborted, Some(ErrorReason::VersionConflict)),
                        "round {round}"
                    ),
                    (Err(status), None) => {
                        panic!("round {round}: a put without expected_version failed: {status:?}")
                    }
                }
            }
        }
    }
}

async fn concurrent_uploads_under_one_batch_id(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    reg.register_council("AB1").await;
    for round in 0..10 {
        let records: Vec<_> = (0..300)
            .map(|i| cpp_record(&nhs(round * 300 + i)))
            .collect();
        let id = format!("race-{round}");
        let (first, second) = tokio::join!(
            upload(&reg, "AB1", batch(&id, records.clone())),
            upload(&reg, "AB1", batch(&id, records.clone())),
        );
        for outcome in [&first, &second] {
            let answer = outcome
                .as_ref()
                .unwrap_or_else(|s| panic!("round {round}: {s:?}"));
            let result = answer.result.clone().unwrap_or_default();
            assert_eq!(result.accepted_count, 300, "round {round}");
        }
        // Different content under an id in use: refused, never INTERNAL.
        let mut other = records.clone();
        other.truncate(10);
        let (a, b) = tokio::join!(
            upload(&reg, "AB1", batch(&format!("{id}-x"), records.clone())),
            upload(&reg, "AB1", batch(&format!("{id}-x"), other)),
        );
        let outcomes = [a.map(|_| ()), b.map(|_| ())];
        assert!(outcomes.iter().any(Result::is_ok), "round {round}");
        for outcome in &outcomes {
            if let Err(status) = outcome {
                assert_eq!(
                    status.code(),
                    Code::AlreadyExists,
                    "round {round}: {status:?}"
                );
            }
        }
    }
}

async fn an_import_during_a_disclosure_flood(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    // Eight councils; child i is held by two of them, so a disclosure takes two councils'
    // sequences, and the import below meets them in the opposite order to the councils' codes.
    let councils: Vec<String> = (0..8).map(|c| format!("LA{c}")).collect();
    for council in &councils {
        reg.register_council(council).await;
    }
    const CHILDREN: usize = 160;
    for i in 0..CHILDREN {
        reg.put(&councils[i % 8], cpp_record(&nhs(i))).await;
        reg.put(&councils[(i + 3) % 8], cpp_record(&nhs(i))).await;
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood: Vec<_> = (0..4)
        .map(|worker| {
            let (reg, stop) = (&reg, stop.clone());
            async move {
                let channel = reg.internal.channel();
                let mut client = DisclosureServiceClient::new(channel.await);
                let (mut ok, mut failed, mut i) = (0usize, Vec::new(), worker);
                while !stop.load(std::sync::atomic::Ordering::SeqCst) && ok + failed.len() < 2000 {
                    let answer = client
                        .disclose(reg.as_lookup_service(DiscloseRequest {
                            nhs_number: nhs(i % CHILDREN),
                            accessor: Some(ed_clinician("555000000001")),
                            access_mode: AccessMode::Unscheduled as i32,
                            request_id: String::new(),
                        }))
                        .await;
                    match answer {
                        Ok(_) => ok += 1,
                        Err(status) => failed.push(status),
                    }
                    i += 7;
                }
                (ok, failed)
            }
        })
        .collect();
    let flood = futures::future::join_all(flood);
    let import = async {
        // The feed lists children from the highest-coded holders down.
        let mut children: Vec<usize> = (0..CHILDREN).collect();
        children.sort_by_key(|i| std::cmp::Reverse((i + 3) % 8));
        let changes = children
            .into_iter()
            .map(|i| ImportNhsNumberStatusChangesRequest {
                change: Some(NhsNumberStatusChange {
                    nhs_number: nhs(i),
                    reason: InactiveReason::Deceased as i32,
                    ..Default::default()
                }),
            });
        let operator = reg.council_token("OPS", "operator");
        let report = reg
            .operator()
            .await
            .import_nhs_number_status_changes(with_token(
                tokio_stream::iter(changes.collect::<Vec<_>>()),
                &operator,
            ))
            .await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        report
    };
    let (flooded, report) = tokio::join!(flood, import);
    let report = report
        .expect("the import completes during the flood")
        .into_inner();
    assert_eq!(report.applied_count, CHILDREN as u64);
    assert_eq!(report.notifications_queued, 2 * CHILDREN as u64);
    let ok: usize = flooded.iter().map(|(ok, _)| ok).sum();
    let failed: Vec<_> = flooded.into_iter().flat_map(|(_, failed)| failed).collect();
    assert!(
        failed.is_empty(),
        "{} of {} disclosures failed: {:?}",
        failed.len(),
        ok + failed.len(),
        failed.first()
    );
    assert!(ok > 0);
}

both_backends!(a_disclosure_deadline_sweep_is_honest);

/// Disclosures under deadlines of 1 to 381 ms, several at once, straight to the registry: an
/// answer of ACCESS_NOT_RECORDED (the registry rolled back) is never given for an access that
/// was recorded, and every answered disclosure was recorded.
async fn a_disclosure_deadline_sweep_is_honest(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    reg.register_council("AB1").await;
    reg.put("AB1", cpp_record(&nhs(0))).await;
    const PER_WORKER: usize = 80;
    let workers = (0..4).map(|worker| {
        let reg = &reg;
        async move {
            let mut client = DisclosureServiceClient::new(reg.internal.channel().await);
            let mut outcomes = Vec::new();
            for i in 0..PER_WORKER {
                let id = format!("sweep-{worker}-{i}");
                let mut request = reg.as_lookup_service(DiscloseRequest {
                    nhs_number: nhs(0),
                    accessor: Some(ed_clinician("555000000001")),
                    access_mode: AccessMode::Unscheduled as i32,
                    request_id: id.clone(),
                });
                // Dense at the tight end, where commits and deadlines race, and reaching a few
                // hundred milliseconds so that a slow machine still answers some.
                let step = u64::try_from(i % 40).unwrap_or(0);
                request.set_timeout(std::time::Duration::from_millis(1 + step * step / 4));
                let outcome = client.disclose(request).await;
                outcomes.push((id, outcome.map(|_| ()).map_err(|s| reason_of(&s))));
            }
            outcomes
        }
    });
    let outcomes: Vec<_> = futures::future::join_all(workers)
        .await
        .into_iter()
        .flatten()
        .collect();
    let tally = reg.tally_sweep("AB1", &nhs(0), &outcomes).await;
    tally.assert_honest(&format!("{backend:?} disclosure deadline sweep"));
}
