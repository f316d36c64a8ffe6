//! Accepted data survives a server restart on the same database.

use cpis_proto::cpis::registry::v1::{
    GetChildRecordRequest, PutChildRecordRequest, council_service_client::CouncilServiceClient,
};
use cpis_testkit::{TestServer, both_backends, db::Backend};

use crate::harness::{Registry, config, cpp_record, nhs};

both_backends!(data_survives_restart);

async fn data_survives_restart(backend: Backend) {
    let Some(reg) = Registry::start(backend).await else {
        return;
    };
    reg.register_council("AB1").await;
    reg.client()
        .await
        .put_child_record(reg.as_council(
            "AB1",
            PutChildRecordRequest {
                record: Some(cpp_record(&nhs(3))),
                ..Default::default()
            },
        ))
        .await
        .expect("put");
    let Registry {
        server, signer, db, ..
    } = reg;
    server.stop().await.expect("clean stop");

    // A new server process-equivalent on the same database, migrations already applied.
    let mut second = config(&db, &signer);
    second.migrate_on_start = false;
    let server =
        TestServer::start(|listener, shutdown| registry_service::serve(second, listener, shutdown))
            .await;
    let token = signer
        .mint(
            &serde_json::json!({ "ods_code": "AB1", "scope": "read" }),
            std::time::Duration::from_secs(60),
        )
        .expect("mint");
    let record = CouncilServiceClient::new(server.channel().await)
        .get_child_record(crate::harness::with_token(
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
