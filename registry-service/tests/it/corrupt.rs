//! Stored rows that no longer decode (a bad disk, a hand-made fix gone wrong) are handled one
//! way: reported by table and key, the call that asked for exactly that row answers INTERNAL,
//! and everything else moves past it — a disclosure still shows every sound plan and every other
//! council, and a listing or a live stream neither ends early nor sticks on the row.

use std::time::Duration;

use cpis_core::status::reason_of;
use cpis_proto::cpis::common::v1::{AccessMode, ErrorReason, PlanType};
use cpis_proto::cpis::registry::v1::{ListChildRecordsRequest, ListNotificationsRequest};
use cpis_testkit::{both_backends, db::Backend};
use tonic::Code;

use crate::harness::{
    cpp_record, disclose, full_record, next_sequence, nhs, shown_plans, start, subscribe,
};

both_backends!(corrupt_rows_are_reported_and_passed_over);

async fn corrupt_rows_are_reported_and_passed_over(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    reg.register_council("AB1").await;
    reg.register_council("CD2").await;
    // AB1 holds three children; the first also has a plan with CD2.
    reg.put("AB1", full_record(&nhs(0))).await;
    reg.put("AB1", cpp_record(&nhs(1))).await;
    reg.put("AB1", cpp_record(&nhs(2))).await;
    reg.put("CD2", cpp_record(&nhs(0))).await;
    disclose(&reg, &nhs(1), AccessMode::Unscheduled).await;
    disclose(&reg, &nhs(2), AccessMode::Unscheduled).await;

    // Damage AB1's looked-after block on the first child (a legal basis no code knows), and
    // AB1's first notification.
    let damaged = reg.db.execute(&format!(
        "UPDATE child_records SET lac_legal_basis = 999 WHERE local_authority = 'AB1' AND nhs_number = '{}'",
        nhs(0)
    ));
    assert_eq!(damaged, 1);
    let garbage = match backend {
        Backend::Sqlite => "X'FFFF'",
        Backend::Postgres => "'\\xffff'::bytea",
    };
    let damaged = reg.db.execute(&format!(
        "UPDATE notifications SET notification = {garbage} WHERE local_authority = 'AB1' AND sequence = 1"
    ));
    assert_eq!(damaged, 1);

    // The lookup still shows AB1's sound plan and CD2's record.
    let answer = disclose(&reg, &nhs(0), AccessMode::Unscheduled).await;
    let shown = shown_plans(&answer);
    let cpp = PlanType::ChildProtectionPlan as i32;
    assert_eq!(
        shown,
        [("AB1".to_owned(), vec![cpp]), ("CD2".to_owned(), vec![cpp])]
    );

    // Asking for exactly the damaged record is INTERNAL, with a reason and no detail.
    let refused = reg
        .get_record("AB1", &nhs(0))
        .await
        .expect_err("a damaged record");
    assert_eq!(
        (refused.code(), reason_of(&refused)),
        (Code::Internal, Some(ErrorReason::Internal))
    );
    assert_eq!(refused.message(), "internal error");

    // A listing a row at a time passes the damaged record without ending early.
    let mut client = reg.council().await;
    let (mut listed, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let page = client
            .list_child_records(reg.as_council(
                "AB1",
                ListChildRecordsRequest {
                    page_size: 1,
                    page_token: token,
                    ..Default::default()
                },
            ))
            .await
            .expect("list")
            .into_inner();
        pages += 1;
        listed.extend(page.records.into_iter().map(|r| r.nhs_number));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(listed, [nhs(1), nhs(2)]);
    assert!(
        pages >= 3,
        "the damaged row's page still led on ({pages} pages)"
    );

    // So do the notification listing and the live stream.
    let (mut sequences, mut token) = (Vec::new(), String::new());
    loop {
        let page = client
            .list_notifications(reg.as_council(
                "AB1",
                ListNotificationsRequest {
                    page_size: 1,
                    page_token: token,
                    ..Default::default()
                },
            ))
            .await
            .expect("notifications")
            .into_inner();
        sequences.extend(page.notifications.iter().map(|n| n.sequence));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(sequences, [2, 3]);
    let mut stream = subscribe(&reg, "AB1", Some(0)).await.expect("subscribe");
    let first = next_sequence(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(first.sequence, 2);
}
