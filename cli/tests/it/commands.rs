//! `cpis contacts`, `cpis token`, `cpis lookup` and `cpis notifications` against a running dev
//! stack: results for people and for scripts, and errors on one line with code, reason, field.

use std::time::Duration;

use crate::harness::{DevStack, nhs};

#[test]
fn contacts_get_set_and_validation() {
    let stack = DevStack::start();
    let get = stack.council(&["contacts"]);
    assert_eq!(get.code, 0, "{get:?}");
    assert!(
        get.stdout.contains("Devtown Borough Council [DEV01]"),
        "{get:?}"
    );
    assert!(get.stdout.contains("020 7946 0000"), "{get:?}");

    let set = stack.council(&[
        "contacts",
        "set",
        "--json",
        "--name",
        "Devtown Children's Services",
        "--emergency-duty-phone",
        "020 7946 0500",
        "--office-hours-phone",
        "020 7946 0501",
    ]);
    assert_eq!(set.code, 0, "{set:?}");
    let la = set.json_lines().pop().unwrap();
    assert_eq!(la["ods_code"], "DEV01");
    assert_eq!(la["office_hours_phone"], "020 7946 0501");
    let seen = stack.ed_lookup(&nhs(0));
    assert_eq!(
        seen["alerts"][0]["local_authority"]["name"],
        "Devtown Children's Services"
    );

    let bad = stack.council(&[
        "contacts",
        "set",
        "--name",
        "Devtown",
        "--emergency-duty-phone",
        "123",
    ]);
    assert_eq!(bad.code, 1);
    assert_eq!(bad.stdout, "");
    let lines: Vec<&str> = bad.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{bad:?}");
    assert!(
        lines[0].starts_with(
            "error: INVALID_ARGUMENT FIELD_FORMAT field=local_authority.emergency_duty_phone: "
        ),
        "{bad:?}"
    );
    // Nothing changed.
    let after = stack
        .council(&["contacts", "--json"])
        .json_lines()
        .pop()
        .unwrap();
    assert_eq!(after["emergency_duty_phone"], "020 7946 0500");

    let anonymous = stack.run(&["contacts"]);
    assert_eq!(anonymous.code, 1);
    assert!(
        anonymous
            .stderr
            .starts_with("error: UNAUTHENTICATED TOKEN_MISSING"),
        "{anonymous:?}"
    );
}

#[test]
fn tokens_from_cpis_token_are_accepted_and_checked() {
    let stack = DevStack::start();
    let data = stack.data_dir();
    let data = data.to_str().unwrap();
    let token = |args: &[&str]| {
        let mut all = vec!["token"];
        all.extend_from_slice(args);
        all.extend(["--data-dir", data]);
        let out = stack.run(&all);
        assert_eq!(out.code, 0, "{out:?}");
        out.stdout.trim().to_owned()
    };

    // Another council sees its own contact details.
    let dev02 = token(&["council", "DEV02"]);
    let contacts = stack.run(&["contacts", "--json", "--token", &dev02]);
    assert_eq!(contacts.json_lines().pop().unwrap()["ods_code"], "DEV02");

    // A read-only council token cannot write.
    let read_only = token(&["council", "DEV02", "--scope", "read"]);
    let write = stack.run(&[
        "contacts",
        "set",
        "--name",
        "X",
        "--emergency-duty-phone",
        "0117 496 0999",
        "--token",
        &read_only,
    ]);
    assert_eq!(write.code, 1);
    assert!(
        write
            .stderr
            .starts_with("error: PERMISSION_DENIED SCOPE_MISSING"),
        "{write:?}"
    );

    // A maternity clinician (B0107) sees the unborn child's plan on the mother's number.
    let midwife = token(&[
        "clinician",
        "--setting",
        "MATERNITY_UNIT",
        "--org",
        "RMAT1",
        "--name",
        "Midwife Kim",
    ]);
    let unborn = stack.run(&["lookup", &nhs(3), "--json", "--token", &midwife]);
    assert_eq!(unborn.code, 0, "{unborn:?}");
    let answer = unborn.json_lines().pop().unwrap();
    assert_eq!(
        answer["alerts"][0]["plans"][0]["plan_type"],
        "UNBORN_CHILD_PROTECTION_PLAN"
    );
    assert_eq!(answer["recent_accesses"][0]["accessor_name"], "Midwife Kim");
    assert_eq!(
        answer["recent_accesses"][0]["care_setting"],
        "MATERNITY_UNIT"
    );

    // A B0170 (scheduled) role cannot claim an unscheduled access.
    let scheduled = token(&[
        "clinician",
        "--activity",
        "B0170",
        "--setting",
        "GP_IN_HOURS",
    ]);
    let refused = stack.run(&["lookup", &nhs(0), "--token", &scheduled]);
    assert_eq!(refused.code, 1);
    assert!(
        refused
            .stderr
            .starts_with("error: PERMISSION_DENIED ACCESS_DENIED"),
        "{refused:?}"
    );
    // A silent read sees the plan but is not part of the access history, its own answer's
    // included.
    let silent = stack.run(&["lookup", &nhs(0), "--scheduled", "--token", &scheduled]);
    assert_eq!(silent.code, 0, "{silent:?}");
    assert!(silent.stdout.contains("holds a record"), "{silent:?}");
    assert!(
        !silent.stdout.contains("SCHEDULED_SILENT_READ"),
        "{silent:?}"
    );

    // A system token (NHS 111 acting for a responsible person).
    let system = token(&["system", "--responsible-person", "Dr On Call"]);
    let by_system = stack.run(&["lookup", &nhs(1), "--json", "--token", &system]);
    assert_eq!(by_system.code, 0, "{by_system:?}");
    assert_eq!(
        by_system.json_lines().pop().unwrap()["recent_accesses"][0]["accessor_name"],
        "Dr On Call"
    );

    // A token signed by another dev stack's key is refused.
    let elsewhere = tempfile::tempdir().unwrap();
    let foreign = stack.run(&[
        "token",
        "council",
        "DEV01",
        "--data-dir",
        elsewhere.path().to_str().unwrap(),
        "--new-key",
    ]);
    assert_eq!(foreign.code, 0, "{foreign:?}");
    let refused = stack.run(&["contacts", "--token", foreign.stdout.trim()]);
    assert_eq!(refused.code, 1);
    assert!(
        refused
            .stderr
            .starts_with("error: UNAUTHENTICATED TOKEN_INVALID"),
        "{refused:?}"
    );
    assert!(
        refused
            .stderr
            .contains("hint: the token was signed by a key this service does not know"),
        "{refused:?}"
    );
}

#[test]
fn lookup_reports_bad_numbers_and_empty_answers() {
    let stack = DevStack::start();
    let bad = stack.run(&["lookup", "9991234560", "--token", &stack.ed_token]);
    assert_eq!(bad.code, 1);
    let lines: Vec<&str> = bad.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{bad:?}");
    assert!(
        lines[0].starts_with("error: INVALID_ARGUMENT NHS_NUMBER_INVALID field=nhs_number: "),
        "{bad:?}"
    );
    let none = stack.run(&["lookup", &nhs(6), "--token", &stack.ed_token]);
    assert_eq!(none.code, 0, "{none:?}");
    assert!(none.stdout.contains("no CP-IS record"), "{none:?}");

    let unreachable = crate::harness::run_in(
        stack.dir.path(),
        &[
            "lookup",
            &nhs(0),
            "--lookup-url",
            "http://127.0.0.1:1",
            "--token",
            "x",
        ],
        &[],
    );
    assert_eq!(unreachable.code, 1);
    assert!(
        unreachable
            .stderr
            .starts_with("error: cannot reach http://127.0.0.1:1"),
        "{unreachable:?}"
    );
}

/// Sequences of the JSON notifications a command printed.
fn sequences(out: &crate::harness::Output) -> Vec<u64> {
    out.json_lines()
        .iter()
        .map(|n| n["sequence"].as_u64().unwrap())
        .collect()
}

#[test]
fn notifications_watch_acknowledges_and_resumes() {
    let stack = DevStack::start();
    // Three unscheduled accesses to DEV01 children, one silent read (no notification).
    for i in [0, 1, 2] {
        stack.ed_lookup(&nhs(i));
    }
    let silent = stack.run(&["lookup", &nhs(0), "--scheduled", "--token", &stack.gp_token]);
    assert_eq!(silent.code, 0, "{silent:?}");

    let first = stack.council(&["notifications", "watch", "--count", "2", "--json"]);
    assert_eq!(first.code, 0, "{first:?}");
    assert_eq!(sequences(&first), [1, 2]);
    let n = &first.json_lines()[0];
    assert_eq!(n["kind"], "access");
    assert_eq!(n["local_case_id"], "DT-1001");
    assert_eq!(n["access_event"]["nhs_number"], nhs(0));
    assert_eq!(
        n["access_event"]["accessor"]["organisation"]["ods_code"],
        "RDEV1"
    );
    assert_eq!(
        n["access_event"]["accessor"]["care_setting"],
        "EMERGENCY_DEPARTMENT"
    );

    // The next watch resumes after the last acknowledged one.
    let second = stack.council(&["notifications", "watch", "--count", "1", "--json"]);
    assert_eq!(sequences(&second), [3]);

    // Live: a watcher waiting before the access gets it.
    let live = stack.spawn(&[
        "notifications",
        "watch",
        "--count",
        "1",
        "--json",
        "--token",
        &stack.council_token,
    ]);
    std::thread::sleep(Duration::from_millis(500));
    stack.ed_lookup(&nhs(1));
    let live = live.finish();
    assert_eq!(live.code, 0, "{live:?}");
    assert_eq!(sequences(&live), [4]);

    // --no-ack leaves the cursor; list shows everything and the cursor.
    stack.ed_lookup(&nhs(0));
    let peek = stack.council(&[
        "notifications",
        "watch",
        "--count",
        "1",
        "--no-ack",
        "--json",
    ]);
    assert_eq!(sequences(&peek), [5]);
    let again = stack.council(&["notifications", "watch", "--count", "1", "--json"]);
    assert_eq!(
        sequences(&again),
        [5],
        "not acknowledged, so delivered again"
    );
    let list = stack.council(&["notifications", "list"]);
    assert_eq!(list.code, 0, "{list:?}");
    assert_eq!(
        list.stdout.lines().filter(|l| l.starts_with('#')).count(),
        5
    );
    assert!(list.stdout.contains("acknowledged up to 5"), "{list:?}");

    // Another council sees none of DEV01's.
    let dev03 = stack.run(&[
        "token",
        "council",
        "DEV03",
        "--data-dir",
        stack.data_dir().to_str().unwrap(),
    ]);
    let theirs = stack.run(&[
        "notifications",
        "list",
        "--json",
        "--token",
        dev03.stdout.trim(),
    ]);
    assert_eq!(theirs.code, 0, "{theirs:?}");
    // Nothing but the cursor line.
    assert_eq!(
        theirs.json_lines(),
        [serde_json::json!({ "acknowledged_sequence": 0, "shown": 0 })],
        "{theirs:?}"
    );
    let ours = stack.council(&["notifications", "list", "--json"]);
    assert_eq!(
        ours.json_lines().pop().unwrap()["acknowledged_sequence"],
        5,
        "{ours:?}"
    );
}

#[test]
fn watch_survives_a_registry_restart_without_a_gap() {
    let (registry, lookup) = (crate::harness::free_addr(), crate::harness::free_addr());
    let stack = DevStack::start_on(tempfile::tempdir().unwrap(), &registry, &lookup);
    let watcher = stack.spawn(&[
        "notifications",
        "watch",
        "--count",
        "3",
        "--json",
        "--token",
        &stack.council_token,
    ]);
    stack.ed_lookup(&nhs(0));
    std::thread::sleep(Duration::from_millis(300));

    // Ctrl-C the whole stack, then bring it back on the same addresses and data.
    let dir = stack.restartable();
    let stack = DevStack::start_on(dir, &registry, &lookup);
    stack.ed_lookup(&nhs(1));
    stack.ed_lookup(&nhs(2));
    let out = watcher.finish();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(sequences(&out), [1, 2, 3], "{out:?}");
    // The outage is said once as it starts and once as it ends, not at every retry.
    assert_eq!(out.stderr.matches("reconnecting").count(), 1, "{out:?}");
    assert_eq!(
        out.stderr.matches("reconnected after").count(),
        1,
        "{out:?}"
    );
}

/// `cpis token jwks` prints the dev key's public JWKS, which is all a registry run by hand
/// (`--jwks-file`, as the README shows) needs to accept `cpis token` tokens; a week's token
/// (the `--ttl` default) is over the registry's default maximum lifetime and refused as such.
#[test]
fn token_jwks_lets_services_run_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cpis = |args: &[&str], registry_url: &str| {
        let out = std::process::Command::new(crate::harness::cpis())
            .args(args)
            // Where `cpis token` keeps the dev key.
            .env("CPIS_DATA_DIR", &data)
            .env("CPIS_REGISTRY_URL", registry_url)
            .output()
            .expect("run cpis");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, jwks, stderr) = cpis(&["token", "jwks", "--new-key"], "");
    assert_eq!(code, 0, "{stderr}");
    let parsed: serde_json::Value = serde_json::from_str(&jwks).expect("JWKS is JSON");
    let keys = parsed["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1, "{jwks}");
    assert!(keys[0]["kid"].is_string(), "{jwks}");
    assert!(keys[0].get("d").is_none(), "no private part: {jwks}");
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, &jwks).unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(stack) = runtime.block_on(
        cpis_testkit::Stack::builder(cpis_testkit::db::Backend::Sqlite)
            .registry(move |config| {
                config.verifier = None;
                config.jwks_file = Some(jwks_file);
            })
            .start(),
    ) else {
        return;
    };
    let url = stack.registry.url();
    let set = |token: &str| {
        cpis(
            &[
                "contacts",
                "set",
                "--token",
                token,
                "--name",
                "Devtown Borough Council",
                "--emergency-duty-phone",
                "020 7946 0000",
            ],
            &url,
        )
    };
    let (_, week, _) = cpis(&["token", "council", "DEV01"], "");
    let (code, _, stderr) = set(&week);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.starts_with("error: UNAUTHENTICATED TOKEN_LIFETIME_TOO_LONG"),
        "{stderr}"
    );
    let (_, hour, _) = cpis(&["token", "council", "DEV01", "--ttl", "1h"], "");
    let (code, _, stderr) = set(&hour);
    assert_eq!(code, 0, "{stderr}");
    drop(stack);
}

/// A registry that asks councils for client certificates: `cpis` presents one with
/// `--client-cert`/`--client-key`, and without it says which reason the registry gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn council_commands_present_a_client_certificate() {
    use cpis_testkit::db::Backend;
    let reg = cpis_testkit::Stack::builder(Backend::Sqlite)
        .registry(cpis_testkit::stack::require_council_certificates)
        .start()
        .await
        .expect("sqlite");
    let url = format!("https://localhost:{}", reg.registry.addr.port());
    let ca = reg.pki.ca_path().display().to_string();
    let cert = reg.pki.client("council-ab1", "spiffe://cpis/council/AB1");
    let token = reg.council_token("AB1", "read write");
    let run = |with_cert: bool| {
        let mut args = vec![
            "contacts".to_owned(),
            "set".to_owned(),
            "--registry-url".to_owned(),
            url.clone(),
            "--ca-cert".to_owned(),
            ca.clone(),
            "--name".to_owned(),
            "Council AB1".to_owned(),
            "--emergency-duty-phone".to_owned(),
            "020 7946 0500".to_owned(),
            "--office-hours-phone".to_owned(),
            "020 7946 0501".to_owned(),
        ];
        if with_cert {
            args.extend([
                "--client-cert".to_owned(),
                cert.cert.display().to_string(),
                "--client-key".to_owned(),
                cert.key.display().to_string(),
            ]);
        }
        let token = token.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            crate::harness::spawn_in(
                std::path::Path::new("."),
                &args,
                &[("CPIS_COUNCIL_TOKEN", token.as_str())],
            )
            .finish()
        })
    };
    let refused = run(false).await.expect("cpis");
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(
        refused.stderr.contains("CLIENT_CERTIFICATE_MISSING"),
        "{refused:?}"
    );
    let admitted = run(true).await.expect("cpis");
    assert_eq!(admitted.code, 0, "{admitted:?}");
}
