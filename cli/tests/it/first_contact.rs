//! What a newcomer meets first (issue 17): errors that say what went wrong once, with a hint;
//! the forms people paste (`Bearer …`, a bare `host:port`, `999-000-0018`); `cpis token` away
//! from the dev stack's directory; extracts as spreadsheets save them (CR LF line ends, a UTF-8
//! byte order mark, semicolons, no header); and the commands the council API has.

use std::path::Path;

use crate::harness::{DevStack, nhs, run_in};

/// (line, local_case_id, reason, field) of each row of a rejection report.
fn report(path: &Path) -> Vec<(u64, String, String, String)> {
    let mut reader = csv::Reader::from_path(path).expect("report exists");
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (
                r[0].parse().unwrap(),
                r[1].to_owned(),
                r[2].to_owned(),
                r[3].to_owned(),
            )
        })
        .collect()
}

/// The extract of the CR LF and BOM tests: a good row, a bad check digit, a bad calendar date
/// (the registry names it `child_protection_plan.period.start_date`), a short row.
fn spreadsheet_rows(newline: &str) -> String {
    [
        "nhs_number,local_case_id,given_name,family_name,date_of_birth,cpp_start_date,cpp_end_date"
            .to_owned(),
        format!("{},X-1,Ana,One,2019-04-02,2026-01-10,", nhs(300)),
        "9991234560,X-2,Bo,Two,2019-04-02,2026-01-10,".to_owned(),
        format!("{},X-3,Cy,Three,2019-04-02,2026-02-30,", nhs(302)),
        format!("{},X-4,Di", nhs(303)),
        format!("{},X-5,Ed,Five,2019-04-02,2026-01-10,2025-01-10", nhs(304)),
    ]
    .join(newline)
        + newline
}

#[test]
fn crlf_and_excel_bom_extracts_report_the_right_lines_and_the_file_s_column_names() {
    let stack = DevStack::start();
    for (name, body) in [
        ("windows.csv", spreadsheet_rows("\r\n")),
        ("excel.csv", format!("\u{feff}{}", spreadsheet_rows("\r\n"))),
    ] {
        std::fs::write(stack.dir.path().join(name), body).unwrap();
        let out = stack.council(&["upload", name, "--no-progress"]);
        assert_eq!(out.code, 3, "{name}: {out:?}");
        assert!(out.stdout.contains("accepted 1"), "{name}: {out:?}");
        let got = report(&stack.dir.path().join(format!("{name}.rejections.csv")));
        let lines: Vec<(u64, &str, &str)> = got
            .iter()
            .map(|(l, case, reason, _)| (*l, case.as_str(), reason.as_str()))
            .collect();
        assert_eq!(
            lines,
            [
                (3, "X-2", "NHS_NUMBER_INVALID"),
                (4, "X-3", "FIELD_FORMAT"),
                (5, "X-4", "BATCH_MALFORMED"),
                (6, "X-5", "DATE_ORDER"),
            ],
            "{name}: {got:?}"
        );
        // Fields as the file names them, not as the contract does.
        assert_eq!(got[0].3, "nhs_number", "{got:?}");
        assert_eq!(got[1].3, "cpp_start_date", "{got:?}");
        assert!(got[3].3.starts_with("cpp_"), "{got:?}");
    }
}

#[test]
fn extract_mistakes_get_a_hint_and_ndjson_takes_numbers() {
    let stack = DevStack::start();
    let dir = stack.dir.path();
    for (name, body, expected) in [
        (
            "semicolons.csv",
            format!("nhs_number;local_case_id\n{};C1\n", nhs(310)),
            "separated by semicolons",
        ),
        (
            "no-header.csv",
            format!("{},C1,A,B,2019-04-02,2026-01-10\n", nhs(311)),
            "add a header row",
        ),
        (
            "typo.csv",
            "nhs_number,cpp_start\n".to_owned(),
            "did you mean \"cpp_start_date\"?",
        ),
    ] {
        std::fs::write(dir.join(name), body).unwrap();
        let out = stack.council(&["upload", name, "--no-progress"]);
        assert_eq!(out.code, 1, "{name}: {out:?}");
        assert!(out.stderr.contains(expected), "{name}: {out:?}");
        assert_eq!(out.stderr.lines().count(), 1, "one line: {out:?}");
    }

    std::fs::write(
        dir.join("numbers.ndjson"),
        format!(
            "{{\"nhs_number\":{},\"given_name\":\"A\",\"family_name\":\"B\",\"date_of_birth\":\"2019-04-02\",\"cpp_start_date\":\"2026-01-10\"}}\n\
             {{\"nhs_number\":\"{}\",\"cpp_start\":\"2026-01-10\"}}\n",
            nhs(312),
            nhs(313)
        ),
    )
    .unwrap();
    let out = stack.council(&["upload", "numbers.ndjson", "--no-progress", "--json"]);
    assert_eq!(out.code, 3, "{out:?}");
    let summary = out.json_lines().pop().unwrap();
    assert_eq!(summary["accepted"], 1, "{out:?}");
    let report = std::fs::read_to_string(dir.join("numbers.ndjson.rejections.csv")).unwrap();
    assert!(
        report.contains("did you mean \"\"cpp_start_date\"\"?"),
        "{report}"
    );

    // A directory given as the file names the path.
    let out = stack.council(&["upload", "."]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.starts_with("error: . is a directory"), "{out:?}");
}

#[test]
fn errors_say_it_once_with_a_hint() {
    let stack = DevStack::start();
    let dir = stack.dir.path();
    let env = [
        ("CPIS_REGISTRY_URL", stack.registry_url.as_str()),
        ("CPIS_LOOKUP_URL", stack.lookup_url.as_str()),
    ];

    // The old guide's variable set, not the one cpis reads.
    let out = run_in(
        dir,
        &["contacts"],
        &[env[0], ("COUNCIL_TOKEN", stack.council_token.as_str())],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        out.stderr.lines().collect::<Vec<_>>(),
        [
            "error: UNAUTHENTICATED TOKEN_MISSING: missing bearer token",
            "hint: COUNCIL_TOKEN is set, but cpis reads CPIS_COUNCIL_TOKEN: export CPIS_COUNCIL_TOKEN=\"$COUNCIL_TOKEN\" or pass --token \"$COUNCIL_TOKEN\"",
        ],
        "{out:?}"
    );
    let out = run_in(dir, &["lookup", "9990000018"], &env);
    assert!(
        out.stderr
            .contains("hint: set CPIS_NHS_TOKEN or pass --token"),
        "{out:?}"
    );

    // The field and the reason are said once.
    let out = stack.run(&["lookup", "9990000011", "--token", &stack.ed_token]);
    assert_eq!(
        out.stderr.trim_end(),
        "error: INVALID_ARGUMENT NHS_NUMBER_INVALID field=nhs_number: Modulus 11 check digit is not valid",
        "{out:?}"
    );

    // Nothing listening: said once, and asks whether the stack runs.
    let port = crate::harness::free_addr();
    let out = stack.council(&["contacts", "--registry-url", &format!("http://{port}")]);
    assert_eq!(out.code, 1, "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{out:?}");
    assert_eq!(lines[0].matches("tcp connect error").count(), 1, "{out:?}");
    assert!(!lines[0].contains("transport error"), "{out:?}");
    assert!(lines[1].contains("is `cpis dev` running?"), "{out:?}");

    // The lookup port given as the registry's: explained.
    let out = stack.council(&["contacts", "--registry-url", &stack.lookup_url]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.starts_with("error: UNIMPLEMENTED\n"), "{out:?}");
    assert!(
        out.stderr
            .contains("hint: that address does not serve the council API: wrong port?"),
        "{out:?}"
    );

    // A GP's token without --scheduled.
    let out = stack.run(&["lookup", "9990000018", "--token", &stack.gp_token]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("add --scheduled"), "{out:?}");

    // --json: the error as an object on standard output, nothing on standard error.
    let out = stack.run(&["lookup", "9990000011", "--json", "--token", &stack.ed_token]);
    assert_eq!(out.code, 1, "{out:?}");
    let error = &out.json_lines()[0]["error"];
    assert_eq!(error["code"], "INVALID_ARGUMENT", "{out:?}");
    assert_eq!(error["reason"], "NHS_NUMBER_INVALID", "{out:?}");
    assert_eq!(error["fields"][0], "nhs_number", "{out:?}");
    assert_eq!(error["message"], "Modulus 11 check digit is not valid");
    assert!(out.stderr.is_empty(), "{out:?}");
}

#[test]
fn the_forms_people_paste_are_accepted() {
    let stack = DevStack::start();
    let bare = stack.registry_url.trim_start_matches("http://").to_owned();
    let bearer = format!("Bearer {}", stack.council_token);
    let out = stack.run(&[
        "contacts",
        "--json",
        "--registry-url",
        &bare,
        "--token",
        &bearer,
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json_lines()[0]["ods_code"], "DEV01");
    let seen = stack.ed_lookup("999-000-0018");
    assert_eq!(seen["alerts"][0]["local_authority"]["ods_code"], "DEV01");
    let seen = stack.ed_lookup("999 000 0018");
    assert_eq!(seen["alerts"][0]["local_authority"]["ods_code"], "DEV01");
}

#[test]
fn token_away_from_the_stack_refuses_to_make_a_new_key() {
    let stack = DevStack::start();
    let elsewhere = tempfile::tempdir().unwrap();
    let out = run_in(elsewhere.path(), &["token", "council", "DEV01"], &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.starts_with("error: no dev signing key at "),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains("hint: run `cpis token` in the directory where you ran `cpis dev`"),
        "{out:?}"
    );
    assert!(!elsewhere.path().join(".data").exists(), "no key was made");
    assert!(out.stdout.is_empty(), "{out:?}");
    // Where the stack keeps its key, the token is accepted.
    let data = stack.data_dir();
    let out = run_in(
        elsewhere.path(),
        &[
            "token",
            "council",
            "DEV01",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let contacts = stack.run(&["contacts", "--token", out.stdout.trim()]);
    assert_eq!(contacts.code, 0, "{contacts:?}");
}

#[test]
fn records_batches_and_access_history_from_the_tool() {
    let stack = DevStack::start();
    std::fs::write(
        stack.dir.path().join("two.csv"),
        format!(
            "nhs_number,local_case_id,given_name,family_name,date_of_birth,cpp_start_date\n\
             {},R-1,Ana,One,2019-04-02,2026-01-10\n\
             9991234560,R-2,Bo,Two,2019-04-02,2026-01-10\n",
            nhs(320)
        ),
    )
    .unwrap();
    let upload = stack.council(&["upload", "two.csv", "--no-progress", "--json"]);
    assert_eq!(upload.code, 3, "{upload:?}");
    let batch_id = upload.json_lines()[0]["batch_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The same file again, for a person: one row, counted in words that fit, no rate of a
    // file that took milliseconds.
    let again = stack.council(&["upload", "two.csv", "--no-progress"]);
    assert_eq!(again.code, 3, "{again:?}");
    assert!(
        again
            .stdout
            .contains("rejection report: two.csv.rejections.csv (1 row)\n"),
        "{again:?}"
    );
    assert!(!again.stdout.contains("rows/s"), "{again:?}");

    let status = stack.council(&["batch", "status", &batch_id, "--json"]);
    assert_eq!(status.code, 0, "{status:?}");
    let lines = status.json_lines();
    assert_eq!(lines[0]["outcome"], "PARTIALLY_LOADED", "{status:?}");
    assert_eq!(lines[0]["accepted"], 1);
    assert_eq!(lines[1]["position"], 2, "{status:?}");
    assert_eq!(lines[1]["reason"], "NHS_NUMBER_INVALID");

    let get = stack.council(&["records", "get", &nhs(320), "--json"]);
    assert_eq!(get.code, 0, "{get:?}");
    let record = &get.json_lines()[0];
    assert_eq!(record["local_case_id"], "R-1");
    assert_eq!(record["child_protection_plan"]["start_date"], "2026-01-10");
    // An absent date is null, not "".
    assert!(
        record["child_protection_plan"]["end_date"].is_null(),
        "{get:?}"
    );

    let list = stack.council(&["records", "list", "--json"]);
    assert_eq!(list.code, 0, "{list:?}");
    let numbers: Vec<String> = list
        .json_lines()
        .iter()
        .map(|r| r["nhs_number"].as_str().unwrap().to_owned())
        .collect();
    assert!(numbers.contains(&nhs(320)), "{numbers:?}");
    let one = stack.council(&["records", "list", "--limit", "1"]);
    assert!(one.stdout.ends_with("(1 record)\n"), "{one:?}");

    stack.ed_lookup(&nhs(320));
    let history = stack.council(&["accesses", &nhs(320), "--json"]);
    assert_eq!(history.code, 0, "{history:?}");
    let events = history.json_lines();
    assert_eq!(events.len(), 1, "{history:?}");
    assert_eq!(events[0]["access_mode"], "UNSCHEDULED");

    let delete = stack.council(&["records", "delete", &nhs(320)]);
    assert_eq!(delete.code, 0, "{delete:?}");
    let gone = stack.council(&["records", "get", &nhs(320)]);
    assert_eq!(gone.code, 1, "{gone:?}");
    assert!(
        gone.stderr.starts_with("error: NOT_FOUND RECORD_NOT_FOUND"),
        "{gone:?}"
    );
}

#[test]
fn help_completions_and_man_page() {
    let dir = tempfile::tempdir().unwrap();
    let help = run_in(dir.path(), &["--help"], &[]);
    assert_eq!(help.code, 0, "{help:?}");
    assert!(
        help.stdout
            .contains("Exit codes: 0 done, 1 error, 2 usage, 3"),
        "{help:?}"
    );
    assert!(help.stdout.contains("CPIS_COUNCIL_TOKEN"), "{help:?}");
    let token_help = run_in(dir.path(), &["token", "council", "--help"], &[]);
    assert!(token_help.stdout.contains("30m, 1h, 7d"), "{token_help:?}");
    // Flags only where they do something.
    assert!(!token_help.stdout.contains("--json"), "{token_help:?}");
    assert!(
        !token_help.stdout.contains("--log-format"),
        "{token_help:?}"
    );
    let dev_help = run_in(dir.path(), &["dev", "--help"], &[]);
    assert!(dev_help.stdout.contains("--log-format"), "{dev_help:?}");
    assert!(!dev_help.stdout.contains("--json"), "{dev_help:?}");
    let upload_help = run_in(dir.path(), &["upload", "--help"], &[]);
    assert!(upload_help.stdout.contains("--json"), "{upload_help:?}");
    assert!(
        !upload_help.stdout.contains("--log-format"),
        "{upload_help:?}"
    );

    let bash = run_in(dir.path(), &["completions", "bash"], &[]);
    assert_eq!(bash.code, 0, "{bash:?}");
    assert!(bash.stdout.contains("complete -F _cpis"), "{bash:?}");
    assert!(bash.stdout.contains("records"), "{bash:?}");
    let man = run_in(dir.path(), &["man"], &[]);
    assert_eq!(man.code, 0, "{man:?}");
    assert!(man.stdout.starts_with(".ie"), "{man:?}");
    assert!(man.stdout.contains(".TH cpis 1"), "{man:?}");
}

#[test]
fn every_violation_of_a_row_is_reported_on_its_line() {
    let stack = DevStack::start();
    std::fs::write(
        stack.dir.path().join("many.csv"),
        format!(
            "nhs_number,local_case_id,given_name,family_name,date_of_birth,cpp_start_date,cpp_end_date\r\n\
             {},M-1,Ana,One,2019-04-02,2026-01-10,\r\n\
             {},M-2,,Two,2019-04-02,2026-01-10,2025-01-10\r\n",
            nhs(330),
            nhs(331)
        ),
    )
    .unwrap();
    let out = stack.council(&["upload", "many.csv", "--no-progress", "--json"]);
    assert_eq!(out.code, 3, "{out:?}");
    let summary = out.json_lines().pop().unwrap();
    assert_eq!(summary["rejected"], 1, "one row: {out:?}");
    let got = report(&stack.dir.path().join("many.csv.rejections.csv"));
    let rows: Vec<(u64, &str, &str, &str)> = got
        .iter()
        .map(|(l, case, reason, field)| (*l, case.as_str(), reason.as_str(), field.as_str()))
        .collect();
    assert_eq!(
        rows,
        [
            (3, "M-2", "FIELD_REQUIRED", "given_name"),
            (3, "M-2", "DATE_ORDER", "cpp_end_date"),
        ],
        "{got:?}"
    );
    // `cpis batch status` lists both too.
    let batch_id = summary["batch_id"].as_str().unwrap();
    let status = stack.council(&["batch", "status", batch_id, "--json"]);
    let lines = status.json_lines();
    assert_eq!(
        lines[1]["violations"].as_array().map(Vec::len),
        Some(2),
        "{status:?}"
    );
}

#[test]
fn operator_imports_nhs_number_status_changes() {
    let stack = DevStack::start();
    let guide = stack.guide();
    let internal = guide
        .lines()
        .find_map(|l| l.trim().strip_prefix("registry internal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the guide names the internal port")
        .to_owned();
    let data = stack.data_dir();
    let tls = data.join("tls");
    let token = stack.run(&["token", "operator", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(token.code, 0, "{token:?}");
    std::fs::write(
        stack.dir.path().join("status.csv"),
        "nhs_number,reason,replacement_nhs_number,effective_date\n\
         999 000 0018,deceased,,2026-01-02\n\
         9990000026,adopted,9990000034,\n",
    )
    .unwrap();
    let out = stack.run(&[
        "operator",
        "--internal-url",
        &internal,
        "--ca-cert",
        tls.join("ca.pem").to_str().unwrap(),
        "--client-cert",
        tls.join("operator.pem").to_str().unwrap(),
        "--client-key",
        tls.join("operator.key").to_str().unwrap(),
        "--token",
        token.stdout.trim(),
        "--json",
        "import-nhs-status",
        "status.csv",
    ]);
    assert_eq!(out.code, 3, "one entry rejected: {out:?}");
    let lines = out.json_lines();
    assert_eq!(lines[0]["received"], 2, "{out:?}");
    assert_eq!(lines[0]["applied"], 1, "{out:?}");
    assert_eq!(lines[1]["line"], 3, "{out:?}");

    // DEV01 held a record for the deceased child: it is told.
    let list = stack.council(&["notifications", "list", "--json"]);
    let kinds: Vec<String> = list
        .json_lines()
        .iter()
        .filter_map(|n| n["kind"].as_str().map(str::to_owned))
        .collect();
    assert!(kinds.iter().any(|k| k == "inactive_nhs_number"), "{list:?}");
}

#[test]
fn no_demo_lists_no_demo_councils() {
    let stack = DevStack::start_in_with(tempfile::tempdir().unwrap(), &["--no-demo"]);
    let guide = stack.guide();
    assert!(guide.contains("--no-demo: no demo data written"), "{guide}");
    assert!(!guide.contains("existing data kept"), "{guide}");
    assert!(!guide.contains("Demo councils"), "{guide}");
}
