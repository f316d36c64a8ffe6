//! What the registry writes to its log when callers are hostile: caller text never forges, colours
//! or floods a line (JSON and text formats), and every line of a call carries its request id,
//! which the answer echoes (the caller's when well formed, else a generated one).

use std::time::Duration;

use cpis_proto::cpis::registry::v1::{
    GetChildRecordRequest, GetContactDetailsRequest, PutChildRecordRequest,
};
use cpis_testkit::logs::span_request_ids;
use cpis_testkit::{both_backends, db::Backend, logs};
use serde_json::Value;
use tonic::{Code, Request};

use crate::harness::{cpp_record, full_record, nhs, start, with_token};

both_backends!(
    hostile_values_cannot_forge_colour_or_flood_the_log,
    request_ids_are_logged_and_echoed,
    database_work_logs_under_its_call
);

/// A request id unique to this test run.
fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{tag}-{nanos}")
}

fn with_request_id<T>(mut request: Request<T>, id: &str) -> Request<T> {
    request
        .metadata_mut()
        .insert("x-request-id", id.parse().unwrap());
    request
}

use cpis_testkit::server::echoed_request_id as echoed;

/// Log lines are written after the answer may have left: wait for the one expected.
async fn lines_until(
    captured: &logs::Captured,
    needle: &str,
    wanted: &str,
) -> (Vec<String>, Vec<String>) {
    let what = format!("{needle:?} with {wanted:?} in both formats");
    captured
        .wait_for(&what, |captured| {
            let json = captured.json_lines_with(needle);
            let text = captured.text_lines_with(needle);
            let both =
                json.iter().any(|l| l.contains(wanted)) && text.iter().any(|l| l.contains(wanted));
            both.then_some((json, text))
        })
        .await
}

async fn hostile_values_cannot_forge_colour_or_flood_the_log(backend: Backend) {
    let captured = logs::capture();
    let Some(reg) = start(backend).await else {
        return;
    };
    let id = unique("forge");
    let marker = format!("FORGED-{id}");
    // A refused cross-council read naming a "council" that is a forged JSON line, a terminal
    // colour escape and 3 MB of padding.
    let forged_line = format!("\n{{\"level\":\"ERROR\",\"message\":\"{marker}\"}}\n");
    let requested = format!(
        "X26{forged_line}\u{1b}[31mred\u{202e}{}",
        "x".repeat(3 << 20)
    );
    // The token's subject (logged as text) carries a forged line and a colour escape too.
    let subject = "sub\n{\"level\":\"ERROR\",\"message\":\"forged-sub\"}\u{1b}[2J";
    let token = reg
        .council_signer
        .mint(
            &serde_json::json!({ "sub": subject, "ods_code": "ATK2", "scope": "read" }),
            Duration::from_secs(600),
        )
        .unwrap();
    let refused = reg
        .council()
        .await
        .get_contact_details(with_request_id(
            with_token(
                GetContactDetailsRequest {
                    local_authority_ods_code: requested.clone(),
                },
                &token,
            ),
            &id,
        ))
        .await
        .expect_err("another council's data");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(echoed(refused.metadata()), id);

    let (json, text) = lines_until(&captured, &id, "cross-council access refused").await;
    for line in &json {
        let parsed: Value = serde_json::from_str(line).expect("every line is one JSON object");
        assert!(line.len() < 4096, "a bounded line: {} bytes", line.len());
        if parsed["message"] == "cross-council access refused" {
            assert_eq!(
                parsed["requested"],
                format!("invalid ({} bytes)", requested.len())
            );
            let subject = parsed["subject"].as_str().unwrap();
            assert!(subject.starts_with("sub\\n{\"level\""), "{subject}");
            assert!(subject.contains("\\u{001b}[2J"), "{subject}");
            assert!(!subject.contains(['\n', '\u{1b}']), "{subject}");
            assert_eq!(span_request_ids(&parsed), [id.as_str()]);
        }
    }
    for line in &text {
        assert!(
            !line.contains('\u{1b}'),
            "no escape reaches a terminal: {line:?}"
        );
        assert!(line.len() < 4096, "a bounded line: {} bytes", line.len());
    }
    let security = text
        .iter()
        .find(|l| l.contains("cross-council access refused"))
        .unwrap();
    assert!(security.contains(&format!("request_id={id}")), "{security}");
    assert!(
        security.contains(&format!("requested=invalid ({} bytes)", requested.len())),
        "{security}"
    );
    // Nothing of the requested value reached either log, and no text line was forged.
    assert!(!captured.contains(&marker));
    assert!(
        captured
            .text_lines_with("forged-sub")
            .iter()
            .all(|l| !l.starts_with("{\"level\"")),
        "a forged line"
    );
}

async fn request_ids_are_logged_and_echoed(backend: Backend) {
    let captured = logs::capture();
    let Some(reg) = start(backend).await else {
        return;
    };
    reg.register_council("LA1").await;
    let mut client = reg.council().await;
    let put = |i: usize| {
        reg.as_council(
            "LA1",
            PutChildRecordRequest {
                record: Some(cpp_record(&nhs(i))),
                ..Default::default()
            },
        )
    };

    // The caller's id: echoed, and on the call's log lines.
    let id = unique("req");
    let answer = client
        .put_child_record(with_request_id(put(0), &id))
        .await
        .expect("stored");
    assert_eq!(echoed(answer.metadata()), id);
    let (json, text) = lines_until(&captured, &id, "record stored").await;
    let stored: Value = json
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|l| l["message"] == "record stored")
        .unwrap();
    assert_eq!(span_request_ids(&stored), [id.as_str()]);
    assert!(text.iter().any(|l| l.contains(&format!("request_id={id}"))));

    // A malformed one (a space, or too long) is replaced by a generated one, echoed and logged.
    for (i, malformed) in [format!("two words {id}"), "r".repeat(129)]
        .into_iter()
        .enumerate()
    {
        let answer = client
            .put_child_record(with_request_id(put(i + 1), &malformed))
            .await
            .expect("stored");
        let generated = echoed(answer.metadata());
        assert_eq!(generated.len(), 32, "{generated}");
        assert!(generated.bytes().all(|b| b.is_ascii_hexdigit()));
        lines_until(&captured, &generated, "record stored").await;
    }

    // None sent: one is generated and echoed.
    let answer = client.put_child_record(put(3)).await.expect("stored");
    let generated = echoed(answer.metadata());
    assert_eq!(generated.len(), 32, "{generated}");
    lines_until(&captured, &generated, "record stored").await;
}

/// What a call's work logs on the database threads carries the call's request id too.
async fn database_work_logs_under_its_call(backend: Backend) {
    let captured = logs::capture();
    let Some(reg) = start(backend).await else {
        return;
    };
    reg.register_council("AB1").await;
    reg.put("AB1", full_record(&nhs(0))).await;
    let damaged = reg.db.execute(&format!(
        "UPDATE child_records SET lac_legal_basis = 999 WHERE nhs_number = '{}'",
        nhs(0)
    ));
    assert_eq!(damaged, 1);
    let id = unique("db");
    let failed = reg
        .council()
        .await
        .get_child_record(with_request_id(
            reg.as_council(
                "AB1",
                GetChildRecordRequest {
                    nhs_number: nhs(0),
                    ..Default::default()
                },
            ),
            &id,
        ))
        .await
        .expect_err("a row that does not decode");
    assert_eq!(failed.code(), Code::Internal, "{failed:?}");
    assert_eq!(echoed(failed.metadata()), id);
    let (json, _) = lines_until(&captured, &id, "stored row does not decode").await;
    let line: Value = json
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|l| l["message"] == "stored row does not decode")
        .unwrap();
    assert_eq!(span_request_ids(&line), [id.as_str()]);
}
