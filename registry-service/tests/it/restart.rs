//! Accepted data survives a server restart on the same database.

use cpis_proto::cpis::registry::v1::GetChildRecordRequest;
use cpis_testkit::{both_backends, db::Backend};

use crate::harness::{cpp_record, nhs, start, with_token};

both_backends!(data_survives_restart);

async fn data_survives_restart(backend: Backend) {
    let Some(mut reg) = start(backend).await else {
        return;
    };
    reg.register_council("AB1").await;
    reg.put("AB1", cpp_record(&nhs(3))).await;
    // A clean stop, then a new server process-equivalent on the same database, migrations
    // already applied.
    reg.restart_registry(|c| c.migrate_on_start = false)
        .await
        .expect("clean stop");
    let token = reg.council_token("AB1", "read");
    let record = reg
        .council()
        .await
        .get_child_record(with_token(
            GetChildRecordRequest {
                nhs_number: nhs(3),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("record survived")
        .into_inner()
        .record
        .expect("record");
    assert_eq!(record.nhs_number, nhs(3));
    assert_eq!(record.version, 1);
}
