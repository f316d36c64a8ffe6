//! `cpis upload`: CSV and NDJSON extracts, the rejection report by line, replays of the same
//! file, malformed input that never crashes the tool, and 100,000 rows with 1% bad.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use crate::harness::{DevStack, nhs};

const HEADER: &str = "nhs_number,local_case_id,given_name,family_name,date_of_birth,cpp_start_date,cpp_end_date,cpp_delete_date,lac_start_date,lac_end_date,lac_delete_date,lac_legal_basis,ucpp_start_date,ucpp_end_date,ucpp_delete_date,ucpp_expected_delivery_date";

/// (line, reason, field) of each report row.
fn report(path: &Path) -> Vec<(u64, String, String)> {
    let mut reader = csv::Reader::from_path(path).expect("report exists");
    let headers = reader.headers().unwrap().clone();
    assert_eq!(
        headers.iter().collect::<Vec<_>>(),
        [
            "line",
            "local_case_id",
            "reason",
            "field",
            "message",
            "replacement_nhs_number"
        ]
    );
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].parse().unwrap(), r[2].to_owned(), r[3].to_owned())
        })
        .collect()
}

#[test]
fn csv_upload_reports_rejected_rows_by_line_and_replays_safely() {
    let stack = DevStack::start();
    let file = stack.dir.path().join("extract.csv");
    let body = format!(
        "{HEADER}\n\
         {a},C-1,Ana,One,2019-04-02,2026-01-10,,,,,,,,,,\n\
         9991234560,C-2,Bo,Two,2019-04-02,2026-01-10,,,,,,,,,,\n\
         {c},C-3,Cy,Three,2019-04-02,10/01/2026,,,,,,,,,,\n\
         {d},C-4,Di,Four,2015-09-17,,,,2025-06-01,,,s20,,,,\n\
         {e},C-5,Ed,Five,2019-04-02,,,,,,,,,,,\n\
         {f},C-6,Fi,Six\n",
        a = nhs(100),
        c = nhs(102),
        d = nhs(103),
        e = nhs(104),
        f = nhs(105),
    );
    std::fs::write(&file, body).unwrap();
    let out = stack.council(&["upload", "extract.csv", "--no-progress"]);
    assert_eq!(out.code, 3, "rows were rejected: {out:?}");
    assert!(out.stdout.contains("PARTIALLY_LOADED"), "{out:?}");
    assert!(out.stdout.contains("accepted 2"), "{out:?}");
    let expected = [
        (3, "NHS_NUMBER_INVALID".to_owned(), "nhs_number".to_owned()),
        (4, "FIELD_FORMAT".to_owned(), "cpp_start_date".to_owned()),
        (6, "PLAN_REQUIRED".to_owned(), "record".to_owned()),
        (7, "BATCH_MALFORMED".to_owned(), String::new()),
    ];
    let path = stack.dir.path().join("extract.csv.rejections.csv");
    let got = report(&path);
    let shape: Vec<(u64, String)> = got.iter().map(|(l, r, _)| (*l, r.clone())).collect();
    let want: Vec<(u64, String)> = expected.iter().map(|(l, r, _)| (*l, r.clone())).collect();
    assert_eq!(shape, want, "{got:?}");
    assert!(got[0].2.ends_with("nhs_number"), "{got:?}");
    assert_eq!(got[1].2, "cpp_start_date");

    // The accepted rows are live for health.
    let seen = stack.ed_lookup(&nhs(103));
    assert_eq!(
        seen["alerts"][0]["plans"][0]["legal_basis"],
        "SECTION_20_VOLUNTARY_ACCOMMODATION"
    );

    // Same file again: the first outcome, nothing changed, same report, same exit code.
    let again = stack.council(&["upload", "extract.csv", "--no-progress", "--json"]);
    assert_eq!(again.code, 3, "{again:?}");
    let summary = again.json_lines().pop().unwrap();
    assert_eq!(summary["replayed"], true);
    assert_eq!(summary["accepted"], 2);
    assert_eq!(summary["report_rows"], 4);
    assert_eq!(report(&path), got);

    // An explicit batch id that was used for other content is refused, with the reason.
    std::fs::write(
        stack.dir.path().join("other.csv"),
        format!(
            "{HEADER}\n{},C-9,A,B,2019-04-02,2026-01-10,,,,,,,,,,\n",
            nhs(109)
        ),
    )
    .unwrap();
    let first = stack.council(&[
        "upload",
        "other.csv",
        "--batch-id",
        "nightly-1",
        "--no-progress",
    ]);
    assert_eq!(first.code, 0, "{first:?}");
    let clash = stack.council(&[
        "upload",
        "extract.csv",
        "--batch-id",
        "nightly-1",
        "--no-progress",
    ]);
    assert_eq!(clash.code, 1, "{clash:?}");
    assert!(
        clash
            .stderr
            .starts_with("error: ALREADY_EXISTS BATCH_ID_REUSED"),
        "{clash:?}"
    );
}

#[test]
fn ndjson_upload() {
    let stack = DevStack::start();
    let file = stack.dir.path().join("extract.ndjson");
    let body = format!(
        "{{\"nhs_number\":\"{a}\",\"local_case_id\":\"N-1\",\"given_name\":\"Ana\",\"family_name\":\"One\",\"date_of_birth\":\"2000-01-01\",\"ucpp_start_date\":\"2026-09-01\",\"ucpp_expected_delivery_date\":\"2027-02-14\"}}\n\
         {{\"nhs_number\":\"{b}\",\"local_case_id\":\"N-2\",\"unknown_column\":\"x\"}}\n\
         \n\
         {{\"nhs_number\":\"{c}\",\"local_case_id\":\"N-3\",\"given_name\":\"Cy\",\"family_name\":\"Three\",\"date_of_birth\":\"2019-04-02\",\"lac_start_date\":\"2026-01-01\"}}\n",
        a = nhs(200),
        b = nhs(201),
        c = nhs(202),
    );
    std::fs::write(&file, body).unwrap();
    let out = stack.council(&["upload", "extract.ndjson", "--no-progress", "--json"]);
    assert_eq!(out.code, 3, "{out:?}");
    let summary = out.json_lines().pop().unwrap();
    assert_eq!(summary["accepted"], 1, "{summary}");
    assert_eq!(summary["malformed"], 1, "{summary}");
    assert_eq!(summary["rejected"], 1, "{summary}");
    let got = report(&stack.dir.path().join("extract.ndjson.rejections.csv"));
    let lines: Vec<u64> = got.iter().map(|r| r.0).collect();
    assert_eq!(lines, [2, 4], "{got:?}");
    assert_eq!(got[0].1, "BATCH_MALFORMED");
    // LAC without its legal basis is the registry's rejection, on the right field.
    assert_eq!(got[1].1, "FIELD_REQUIRED", "{got:?}");
    assert!(got[1].2.contains("legal_basis"), "{got:?}");
    let seen = stack.ed_lookup(&nhs(200));
    assert_eq!(
        seen["alerts"][0]["plans"][0]["plan_type"],
        "UNBORN_CHILD_PROTECTION_PLAN"
    );
}

#[test]
fn files_that_cannot_be_read_fail_with_a_message() {
    let stack = DevStack::start();
    let dir = stack.dir.path();
    std::fs::write(
        dir.join("typo.csv"),
        "nhs_number,cpp_start\n9990000018,2026-01-01\n",
    )
    .unwrap();
    std::fs::write(dir.join("noheader.csv"), "").unwrap();
    let mut binary = b"nhs_number,local_case_id,cpp_start_date\n".to_vec();
    binary.extend_from_slice(&[0xff, 0xfe, b',', 0x80, b'\n']);
    binary.extend_from_slice(format!("{},\"unterminated,2026-01-01\n", nhs(300)).as_bytes());
    std::fs::write(dir.join("binary.csv"), binary).unwrap();

    let typo = stack.council(&["upload", "typo.csv", "--no-progress"]);
    assert_eq!(typo.code, 1);
    assert!(
        typo.stderr.contains("unknown column \"cpp_start\""),
        "{typo:?}"
    );
    let empty = stack.council(&["upload", "noheader.csv", "--no-progress"]);
    assert_eq!(empty.code, 1);
    assert!(empty.stderr.contains("header"), "{empty:?}");
    let missing = stack.council(&["upload", "nope.csv", "--no-progress"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("cannot open nope.csv"),
        "{missing:?}"
    );

    let garbage = stack.council(&["upload", "binary.csv", "--no-progress", "--json"]);
    assert_eq!(garbage.code, 3, "reported, not crashed: {garbage:?}");
    let got = report(&dir.join("binary.csv.rejections.csv"));
    assert_eq!(got.first().map(|r| r.0), Some(2), "{got:?}");
    assert!(!got.is_empty());
}

/// 2,500 bad rows, 1,875 of them rejected by the registry: more than its answer carries (1,000),
/// so the report needs the rest from ListBatchRejections.
#[test]
fn hundred_thousand_rows_with_bad_ones_past_one_answer() {
    let stack = DevStack::start();
    let path = stack.dir.path().join("big.csv");
    let mut body = String::with_capacity(100_000 * 80);
    body.push_str(HEADER);
    body.push('\n');
    let mut bad_lines = BTreeSet::new();
    let numbers = cpis_testkit::nhs::nhs_numbers().skip(1000).take(100_000);
    for (i, number) in numbers.enumerate() {
        let line = i as u64 + 2;
        let case = format!("BIG-{i}");
        if i % 40 == 37 {
            bad_lines.insert(line);
            // Four kinds of bad row, rejected by the tool or by the registry.
            match (i / 40) % 4 {
                0 => {
                    let wrong =
                        format!("{}{}", &number[..9], (number.as_bytes()[9] - b'0' + 1) % 10);
                    writeln!(body, "{wrong},{case},A,B,2015-01-01,2026-01-01,,,,,,,,,,").unwrap();
                }
                1 => writeln!(body, "{number},{case},A,B,2015-01-01,2026-13-45,,,,,,,,,,").unwrap(),
                2 => writeln!(body, "{number},{case},A,B,2015-01-01,,,,,,,,,,,").unwrap(),
                _ => writeln!(body, "{number},{case},A,B,2015-01-01,01/01/2026,,,,,,,,,,").unwrap(),
            }
        } else {
            writeln!(body, "{number},{case},A,B,2015-01-01,2026-01-01,,,,,,,,,,").unwrap();
        }
    }
    std::fs::write(&path, body).unwrap();
    let out = stack.council(&["upload", "big.csv", "--no-progress", "--json"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let summary = out.json_lines().pop().unwrap();
    assert_eq!(summary["rows_read"], 100_000, "{summary}");
    assert_eq!(summary["accepted"], 97_500, "{summary}");
    assert_eq!(summary["rejected"], 1_875, "{summary}");
    assert_eq!(summary["report_rows"], 2_500, "{summary}");
    let got: BTreeSet<u64> = report(&stack.dir.path().join("big.csv.rejections.csv"))
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(got, bad_lines, "exactly the bad rows, by line");
}
