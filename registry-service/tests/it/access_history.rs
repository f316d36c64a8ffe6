//! Access history is the council's own: a council sees the unscheduled accesses made while it
//! held a record for the child (after it deleted the record too), never those from before, and
//! scheduled silent reads are audited but never part of anyone's history; an inactive number's
//! replacement is told only to a council that held the number.

use cpis_core::status::reason_of;
use cpis_proto::cpis::common::v1::{AccessEvent, AccessMode, CareSetting, ErrorReason};
use cpis_proto::cpis::common::v1::{InactiveReason, accessor::Kind};
use cpis_proto::cpis::registry::v1::{
    DeleteChildRecordRequest, DiscloseRequest, ImportNhsNumberStatusChangesRequest,
    ListAccessEventsRequest, NhsNumberStatusChange,
};
use cpis_testkit::{Stack, both_backends, db::Backend};
use registry_service::Clock;
use tonic::Code;

use crate::harness::{batch, cpp_record, ed_clinician, nhs, stack, upload};

both_backends!(
    a_council_sees_only_accesses_made_while_it_held_a_record,
    silent_reads_are_audited_but_never_shown,
    an_inactive_numbers_replacement_is_told_only_to_councils_that_held_it
);

/// 2026-06-15 12:00 UTC.
const T0: i64 = 1_781_524_800_000_000;
const MINUTE: i64 = 60_000_000;

async fn start(backend: Backend) -> Option<Stack> {
    stack(backend).clock(Clock::fixed(T0)).start().await
}

/// A sexual-assault-referral-centre clinician making a B0170 silent read.
fn sarc_clinician() -> cpis_proto::cpis::common::v1::Accessor {
    let mut accessor = ed_clinician("555000000002");
    if let Some(Kind::Person(person)) = accessor.kind.as_mut() {
        person.activity_codes = vec!["B0170".into()];
    }
    if let Some(organisation) = accessor.organisation.as_mut() {
        organisation.ods_code = "SARC1".into();
        organisation.name = "Test SARC".into();
    }
    accessor.care_setting = CareSetting::SexualAssaultReferralCentre as i32;
    accessor
}

/// Records one access to `nhs_number` at `at` (moving the registry's clock there) and returns
/// its access id.
async fn access_at(
    reg: &Stack,
    at: i64,
    nhs_number: &str,
    accessor: cpis_proto::cpis::common::v1::Accessor,
    mode: AccessMode,
) -> String {
    reg.clock.set(at);
    reg.disclosure()
        .await
        .disclose(reg.as_lookup_service(DiscloseRequest {
            nhs_number: nhs_number.into(),
            accessor: Some(accessor),
            access_mode: mode as i32,
            request_id: format!("req-{at}"),
        }))
        .await
        .expect("disclose")
        .into_inner()
        .access_id
}

/// Council `ods`'s whole history of `nhs_number`, a page of `page_size` at a time.
async fn history(
    reg: &Stack,
    ods: &str,
    nhs_number: &str,
    page_size: i32,
) -> Result<Vec<AccessEvent>, tonic::Status> {
    let mut client = reg.council().await;
    let (mut token, mut all) = (String::new(), Vec::new());
    loop {
        let page = client
            .list_access_events(reg.as_council(
                ods,
                ListAccessEventsRequest {
                    nhs_number: nhs_number.into(),
                    page_size,
                    page_token: token,
                    ..Default::default()
                },
            ))
            .await?
            .into_inner();
        all.extend(page.access_events);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        token = page.next_page_token;
    }
}

fn ids(events: &[AccessEvent]) -> Vec<&str> {
    events.iter().map(|e| e.access_id.as_str()).collect()
}

async fn delete(reg: &Stack, ods: &str, nhs_number: &str) {
    reg.council()
        .await
        .delete_child_record(reg.as_council(
            ods,
            DeleteChildRecordRequest {
                nhs_number: nhs_number.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("delete");
}

/// The probe of issue 11: council AA1 creates a record on council BB2's child to read who saw
/// the child, then deletes it to hide the probe.
async fn a_council_sees_only_accesses_made_while_it_held_a_record(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    for ods in ["AA1", "BB2", "CC3"] {
        reg.register_council(ods).await;
    }
    let child = nhs(0);
    reg.put("BB2", cpp_record(&child)).await;
    let ed = |id: &str| ed_clinician(id);
    let before_a = access_at(
        &reg,
        T0 + MINUTE,
        &child,
        ed("555000000001"),
        AccessMode::Unscheduled,
    )
    .await;
    access_at(
        &reg,
        T0 + 2 * MINUTE,
        &child,
        sarc_clinician(),
        AccessMode::ScheduledSilentRead,
    )
    .await;

    // AA1 creates a record on the child: nothing from before is shown to it.
    reg.clock.set(T0 + 3 * MINUTE);
    reg.put("AA1", cpp_record(&child)).await;
    assert_eq!(
        ids(&history(&reg, "AA1", &child, 0).await.expect("AA1")),
        Vec::<&str>::new(),
        "accesses from before AA1 held a record"
    );

    // What happens while AA1 holds it is AA1's to see, after it deletes the record too.
    let while_held = access_at(
        &reg,
        T0 + 4 * MINUTE,
        &child,
        ed("555000000003"),
        AccessMode::Unscheduled,
    )
    .await;
    reg.clock.set(T0 + 5 * MINUTE);
    delete(&reg, "AA1", &child).await;
    let after_delete = access_at(
        &reg,
        T0 + 6 * MINUTE,
        &child,
        ed("555000000004"),
        AccessMode::Unscheduled,
    )
    .await;
    assert_eq!(
        ids(&history(&reg, "AA1", &child, 0)
            .await
            .expect("AA1 after deleting")),
        vec![while_held.as_str()],
        "AA1 sees only what happened while it held the record"
    );

    // A re-created record opens a new period; the gap stays closed.
    reg.clock.set(T0 + 7 * MINUTE);
    reg.put("AA1", cpp_record(&child)).await;
    let held_again = access_at(
        &reg,
        T0 + 8 * MINUTE,
        &child,
        ed("555000000005"),
        AccessMode::Unscheduled,
    )
    .await;
    let expected = vec![held_again.as_str(), while_held.as_str()];
    assert_eq!(
        ids(&history(&reg, "AA1", &child, 0).await.expect("AA1")),
        expected
    );
    // Paging walks the same filtered history one event at a time.
    assert_eq!(
        ids(&history(&reg, "AA1", &child, 1).await.expect("AA1 paged")),
        expected
    );

    // BB2 has held the record throughout: every unscheduled access, newest first, no silent read.
    let bb2 = history(&reg, "BB2", &child, 1).await.expect("BB2");
    assert_eq!(
        ids(&bb2),
        vec![
            held_again.as_str(),
            after_delete.as_str(),
            while_held.as_str(),
            before_a.as_str()
        ]
    );

    // A council that never held a record for the child learns nothing, not even that it exists.
    let never = history(&reg, "CC3", &child, 0)
        .await
        .expect_err("CC3 never held a record");
    assert_eq!(
        (never.code(), reason_of(&never)),
        (Code::NotFound, Some(ErrorReason::RecordNotFound))
    );
}

async fn silent_reads_are_audited_but_never_shown(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    reg.register_council("AB1").await;
    let child = nhs(0);
    reg.put("AB1", cpp_record(&child)).await;
    let silent = access_at(
        &reg,
        T0 + MINUTE,
        &child,
        sarc_clinician(),
        AccessMode::ScheduledSilentRead,
    )
    .await;
    // The silent read's own answer does not list it.
    reg.clock.set(T0 + 2 * MINUTE);
    let answer = reg
        .disclosure()
        .await
        .disclose(reg.as_lookup_service(DiscloseRequest {
            nhs_number: child.clone(),
            accessor: Some(sarc_clinician()),
            access_mode: AccessMode::ScheduledSilentRead as i32,
            request_id: "req-silent".into(),
        }))
        .await
        .expect("silent read")
        .into_inner();
    assert_eq!(answer.alerts.len(), 1, "a silent read still sees the plan");
    assert!(
        answer.recent_accesses.is_empty(),
        "no silent read is listed: {:?}",
        answer.recent_accesses
    );
    // Nor does the next clinician's.
    reg.clock.set(T0 + 3 * MINUTE);
    let answer = reg
        .disclosure()
        .await
        .disclose(reg.as_lookup_service(DiscloseRequest {
            nhs_number: child.clone(),
            accessor: Some(ed_clinician("555000000001")),
            access_mode: AccessMode::Unscheduled as i32,
            request_id: "req-ed".into(),
        }))
        .await
        .expect("unscheduled")
        .into_inner();
    let settings: Vec<i32> = answer
        .recent_accesses
        .iter()
        .map(|a| a.care_setting)
        .collect();
    assert_eq!(settings, vec![CareSetting::EmergencyDepartment as i32]);
    // Nor the council's history.
    let events = history(&reg, "AB1", &child, 0).await.expect("history");
    assert_eq!(ids(&events), vec![answer.access_id.as_str()]);
    // Both silent reads are audited.
    assert_eq!(
        reg.db.count(&format!(
            "SELECT COUNT(*) AS n FROM access_events WHERE nhs_number = '{child}' \
             AND access_mode = {}",
            AccessMode::ScheduledSilentRead as i32
        )),
        2
    );
    assert_eq!(
        reg.db.count(&format!(
            "SELECT COUNT(*) AS n FROM access_events WHERE access_id = '{silent}'"
        )),
        1
    );
}

async fn an_inactive_numbers_replacement_is_told_only_to_councils_that_held_it(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    // AB1 holds the number, CD2 held it and deleted its record, EF3 never held it.
    for ods in ["AB1", "CD2", "EF3"] {
        reg.register_council(ods).await;
    }
    let (old, new) = (nhs(0), nhs(7));
    reg.put("AB1", cpp_record(&old)).await;
    reg.put("CD2", cpp_record(&old)).await;
    delete(&reg, "CD2", &old).await;
    reg.operator()
        .await
        .import_nhs_number_status_changes(reg.as_operator(tokio_stream::iter([
            ImportNhsNumberStatusChangesRequest {
                change: Some(NhsNumberStatusChange {
                    nhs_number: old.clone(),
                    reason: InactiveReason::Superseded as i32,
                    replacement_nhs_number: new.clone(),
                    effective_date: None,
                }),
            },
        ])))
        .await
        .expect("import");

    for (ods, told) in [("AB1", true), ("CD2", true), ("EF3", false)] {
        let status = reg
            .try_put(ods, cpp_record(&old))
            .await
            .expect_err("superseded");
        assert_eq!(
            (status.code(), reason_of(&status)),
            (
                Code::FailedPrecondition,
                Some(ErrorReason::SupersededNhsNumber)
            ),
            "{ods}"
        );
        assert_eq!(
            status.message().contains(&new),
            told,
            "{ods}: {}",
            status.message()
        );

        let result = upload(
            &reg,
            ods,
            batch(&format!("after-{ods}"), vec![cpp_record(&old)]),
        )
        .await
        .expect("upload")
        .result
        .expect("result");
        let refused: Vec<(i32, &str)> = result
            .rejections
            .iter()
            .map(|r| (r.reason, r.replacement_nhs_number.as_str()))
            .collect();
        let replacement = if told { new.as_str() } else { "" };
        assert_eq!(
            refused,
            vec![(ErrorReason::SupersededNhsNumber as i32, replacement)],
            "{ods}"
        );
    }
}
