//! Every validation rule at its boundary, through PutChildRecord (field paths under "record.")
//! and the same rules inside a batch (paths relative to the record). "Today" is fixed at
//! 2026-06-15 by an injected clock.

use cpis_core::status::{reason_of, violated_fields};
use cpis_proto::cpis::common::v1::{
    ChildProtectionPlan, ChildRecord, ErrorReason, LookedAfterChild, PlanPeriod,
    UnbornChildProtectionPlan,
};
use cpis_proto::cpis::registry::v1::{
    BatchHeader, PutChildRecordRequest, UploadBatchRequest, upload_batch_request::Item,
};
use cpis_testkit::Stack;
use cpis_testkit::{both_backends, db::Backend};
use registry_service::Clock;
use tonic::Code;

use crate::harness::{assert_rejections, cpp_record, date, nhs, stack};

both_backends!(put_rules_at_their_boundaries, batch_applies_the_same_rules);

/// 2026-06-15T12:00:00Z in microseconds.
const TODAY_MICROS: i64 = 1_781_524_800_000_000;

type Mutation = Box<dyn Fn(&mut ChildRecord)>;
/// A case: its name, how it changes a valid record, and the violation expected (None: valid).
type Case = (&'static str, Mutation, Option<(&'static str, ErrorReason)>);

fn period(start: Option<(i32, i32, i32)>, end: Option<(i32, i32, i32)>) -> Option<PlanPeriod> {
    Some(PlanPeriod {
        start_date: start.map(|(y, m, d)| date(y, m, d)),
        end_date: end.map(|(y, m, d)| date(y, m, d)),
        delete_date: None,
    })
}

fn cpp(start: (i32, i32, i32), end: Option<(i32, i32, i32)>) -> Option<ChildProtectionPlan> {
    Some(ChildProtectionPlan {
        period: period(Some(start), end),
    })
}

fn ucpp(start: (i32, i32, i32), edd: Option<(i32, i32, i32)>) -> Option<UnbornChildProtectionPlan> {
    Some(UnbornChildProtectionPlan {
        period: period(Some(start), None),
        expected_delivery_date: edd.map(|(y, m, d)| date(y, m, d)),
    })
}

/// (case, mutation, expected violation: None means the record is valid).
fn cases() -> Vec<Case> {
    vec![
        ("valid", Box::new(|_| {}), None),
        (
            "nhs 9 digits",
            Box::new(|r| r.nhs_number = "999000001".into()),
            Some(("nhs_number", ErrorReason::NhsNumberInvalid)),
        ),
        (
            "nhs 11 digits",
            Box::new(|r| r.nhs_number = "99900000180".into()),
            Some(("nhs_number", ErrorReason::NhsNumberInvalid)),
        ),
        (
            "nhs spaced",
            Box::new(|r| r.nhs_number = "999 000 0018".into()),
            Some(("nhs_number", ErrorReason::NhsNumberInvalid)),
        ),
        (
            "nhs check digit",
            Box::new(|r| r.nhs_number = "9991234560".into()),
            Some(("nhs_number", ErrorReason::NhsNumberInvalid)),
        ),
        (
            "nhs all zeros",
            Box::new(|r| r.nhs_number = "0000000000".into()),
            Some(("nhs_number", ErrorReason::NhsNumberInvalid)),
        ),
        (
            "given name blank",
            Box::new(|r| r.given_name = "  ".into()),
            Some(("given_name", ErrorReason::FieldRequired)),
        ),
        (
            "given name 100",
            Box::new(|r| r.given_name = "G".repeat(100)),
            None,
        ),
        (
            "given name 101",
            Box::new(|r| r.given_name = "G".repeat(101)),
            Some(("given_name", ErrorReason::FieldTooLong)),
        ),
        (
            "family name missing",
            Box::new(|r| r.family_name.clear()),
            Some(("family_name", ErrorReason::FieldRequired)),
        ),
        (
            "family name control",
            Box::new(|r| r.family_name = "Ex\u{7}ample".into()),
            Some(("family_name", ErrorReason::FieldFormat)),
        ),
        (
            "given name only zero-width characters",
            Box::new(|r| r.given_name = "\u{200b}\u{200c}\u{200d}\u{2060}\u{feff}".into()),
            Some(("given_name", ErrorReason::FieldFormat)),
        ),
        (
            "family name right-to-left override",
            Box::new(|r| r.family_name = "Smith\u{202e}htimS".into()),
            Some(("family_name", ErrorReason::FieldFormat)),
        ),
        (
            "given name isolate",
            Box::new(|r| r.given_name = "\u{2066}Ann\u{2069}".into()),
            Some(("given_name", ErrorReason::FieldFormat)),
        ),
        (
            "family name right-to-left mark",
            Box::new(|r| r.family_name = "Ali\u{200f}".into()),
            Some(("family_name", ErrorReason::FieldFormat)),
        ),
        (
            "family name arabic letter mark",
            Box::new(|r| r.family_name = "Ali\u{061c}".into()),
            Some(("family_name", ErrorReason::FieldFormat)),
        ),
        (
            "given name with a joiner inside",
            Box::new(|r| r.given_name = "Sa\u{200c}ra".into()),
            None,
        ),
        (
            "case id 64",
            Box::new(|r| r.local_case_id = "C".repeat(64)),
            None,
        ),
        (
            "case id 65",
            Box::new(|r| r.local_case_id = "C".repeat(65)),
            Some(("local_case_id", ErrorReason::FieldTooLong)),
        ),
        (
            "dob missing",
            Box::new(|r| r.date_of_birth = None),
            Some(("date_of_birth", ErrorReason::FieldRequired)),
        ),
        (
            "dob impossible",
            Box::new(|r| r.date_of_birth = Some(date(2021, 2, 30))),
            Some(("date_of_birth", ErrorReason::FieldFormat)),
        ),
        (
            "dob partial",
            Box::new(|r| r.date_of_birth = Some(date(2021, 2, 0))),
            Some(("date_of_birth", ErrorReason::FieldFormat)),
        ),
        (
            "dob today",
            Box::new(|r| {
                r.date_of_birth = Some(date(2026, 6, 15));
                r.child_protection_plan = cpp((2026, 6, 15), None);
            }),
            None,
        ),
        (
            "dob tomorrow",
            Box::new(|r| {
                r.date_of_birth = Some(date(2026, 6, 16));
                r.child_protection_plan = cpp((2026, 6, 16), None);
            }),
            Some(("date_of_birth", ErrorReason::DateInFuture)),
        ),
        (
            "17 at plan start",
            Box::new(|r| {
                r.date_of_birth = Some(date(2008, 1, 11));
                r.child_protection_plan = cpp((2026, 1, 10), None);
            }),
            None,
        ),
        (
            "18 at plan start",
            Box::new(|r| {
                r.date_of_birth = Some(date(2008, 1, 10));
                r.child_protection_plan = cpp((2026, 1, 10), None);
            }),
            Some(("date_of_birth", ErrorReason::DateOfBirthImplausible)),
        ),
        (
            "plan before birth",
            Box::new(|r| r.child_protection_plan = cpp((2020, 4, 30), None)),
            Some((
                "child_protection_plan.period.start_date",
                ErrorReason::DateOrder,
            )),
        ),
        (
            "no plan",
            Box::new(|r| r.child_protection_plan = None),
            Some(("record", ErrorReason::PlanRequired)),
        ),
        (
            "plan without period",
            Box::new(|r| r.child_protection_plan = Some(ChildProtectionPlan { period: None })),
            Some(("child_protection_plan.period", ErrorReason::FieldRequired)),
        ),
        (
            "plan without start",
            Box::new(|r| {
                r.child_protection_plan = Some(ChildProtectionPlan {
                    period: period(None, None),
                })
            }),
            Some((
                "child_protection_plan.period.start_date",
                ErrorReason::FieldRequired,
            )),
        ),
        (
            "end equals start",
            Box::new(|r| r.child_protection_plan = cpp((2025, 1, 10), Some((2025, 1, 10)))),
            None,
        ),
        (
            "end before start",
            Box::new(|r| r.child_protection_plan = cpp((2025, 1, 10), Some((2025, 1, 9)))),
            Some((
                "child_protection_plan.period.end_date",
                ErrorReason::DateOrder,
            )),
        ),
        (
            "start a year ahead",
            Box::new(|r| r.child_protection_plan = cpp((2027, 6, 15), None)),
            None,
        ),
        (
            "start beyond a year ahead",
            Box::new(|r| r.child_protection_plan = cpp((2027, 6, 16), None)),
            Some((
                "child_protection_plan.period.start_date",
                ErrorReason::DateInFuture,
            )),
        ),
        (
            "lac without basis",
            Box::new(|r| {
                r.looked_after_child = Some(LookedAfterChild {
                    period: period(Some((2025, 2, 1)), None),
                    legal_basis: 0,
                })
            }),
            Some(("looked_after_child.legal_basis", ErrorReason::FieldRequired)),
        ),
        (
            "lac unknown basis",
            Box::new(|r| {
                r.looked_after_child = Some(LookedAfterChild {
                    period: period(Some((2025, 2, 1)), None),
                    legal_basis: 99,
                })
            }),
            Some(("looked_after_child.legal_basis", ErrorReason::FieldFormat)),
        ),
        (
            "ucpp without edd",
            Box::new(|r| r.unborn_child_protection_plan = ucpp((2026, 1, 1), None)),
            Some((
                "unborn_child_protection_plan.expected_delivery_date",
                ErrorReason::FieldRequired,
            )),
        ),
        (
            "ucpp edd before start",
            Box::new(|r| r.unborn_child_protection_plan = ucpp((2026, 1, 1), Some((2025, 12, 31)))),
            Some((
                "unborn_child_protection_plan.expected_delivery_date",
                ErrorReason::DateOrder,
            )),
        ),
        (
            "ucpp edd 10 months on",
            Box::new(|r| r.unborn_child_protection_plan = ucpp((2026, 1, 1), Some((2026, 11, 1)))),
            None,
        ),
        (
            "ucpp edd beyond 10 months",
            Box::new(|r| r.unborn_child_protection_plan = ucpp((2026, 1, 1), Some((2026, 11, 2)))),
            Some((
                "unborn_child_protection_plan.expected_delivery_date",
                ErrorReason::DateOrder,
            )),
        ),
        (
            "ucpp only, adult mother",
            Box::new(|r| {
                r.date_of_birth = Some(date(1990, 3, 3));
                r.child_protection_plan = None;
                r.unborn_child_protection_plan = ucpp((2026, 1, 1), Some((2026, 7, 1)));
            }),
            None,
        ),
    ]
}

async fn start(backend: Backend) -> Option<Stack> {
    let reg = stack(backend)
        .clock(Clock::fixed(TODAY_MICROS))
        .start()
        .await?;
    reg.register_council("AB1").await;
    Some(reg)
}

async fn put_rules_at_their_boundaries(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    let mut client = reg.council().await;
    for (i, (name, mutate, expected)) in cases().into_iter().enumerate() {
        let mut record = cpp_record(&nhs(i));
        mutate(&mut record);
        let result = reg.try_put("AB1", record).await;
        match (expected, result) {
            (None, Ok(_)) => {}
            (None, Err(status)) => panic!("{name}: expected valid, got {status:?}"),
            (Some((field, _)), Ok(_)) => panic!("{name}: expected {field} to be refused"),
            (Some((field, reason)), Err(status)) => {
                assert_eq!(status.code(), Code::InvalidArgument, "{name}");
                assert_eq!(reason_of(&status), Some(reason), "{name}: {status:?}");
                assert_eq!(
                    violated_fields(&status),
                    vec![format!("record.{field}").replace("record.record", "record")],
                    "{name}"
                );
                assert!(
                    status.message().contains(field),
                    "{name}: message names the field"
                );
            }
        }
    }
    let missing = client
        .put_child_record(reg.as_council("AB1", PutChildRecordRequest::default()))
        .await
        .expect_err("no record");
    assert_eq!(violated_fields(&missing), vec!["record".to_owned()]);
}

async fn batch_applies_the_same_rules(backend: Backend) {
    let Some(reg) = start(backend).await else {
        return;
    };
    let cases = cases();
    let mut messages = vec![UploadBatchRequest {
        item: Some(Item::Header(BatchHeader {
            batch_id: "rules".into(),
            ..Default::default()
        })),
    }];
    for (i, (_, mutate, _)) in cases.iter().enumerate() {
        let mut record = cpp_record(&nhs(i));
        mutate(&mut record);
        messages.push(UploadBatchRequest {
            item: Some(Item::Record(record)),
        });
    }
    let result = reg
        .council()
        .await
        .upload_batch(reg.as_council("AB1", tokio_stream::iter(messages)))
        .await
        .expect("batch")
        .into_inner()
        .result
        .expect("result");
    let expected: Vec<(u64, String, i32)> = cases
        .iter()
        .enumerate()
        .filter_map(|(i, (_, _, e))| {
            e.map(|(field, reason)| {
                (
                    u64::try_from(i + 1).unwrap_or(0),
                    field.to_owned(),
                    reason as i32,
                )
            })
        })
        .collect();
    assert_rejections(&result, cases.len(), &expected);
}
