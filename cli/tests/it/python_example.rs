//! The Python council client in examples/python (stubs generated from proto/ with grpcio-tools)
//! against the dev stack: it uploads the example extract and watches notifications.

use std::process::Command;

use crate::harness::{DevStack, nhs};

#[test]
fn python_council_client_uploads_and_watches() {
    let Some(python) = cpis_testkit::tools::python() else {
        return;
    };
    let stack = DevStack::start();
    let repo = cpis_testkit::tools::repo_root();
    let script = repo.join("examples/python/council_client.py");
    let run = |args: &[&str]| {
        let output = Command::new(&python)
            .arg(&script)
            .args(args)
            .current_dir(&repo)
            .env("CPIS_REGISTRY_URL", &stack.registry_url)
            .env("CPIS_COUNCIL_TOKEN", &stack.council_token)
            .output()
            .expect("run python");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    let (code, out, err) = run(&["upload", "examples/data/extract.csv"]);
    assert_eq!(code, 3, "the example has rejected rows: {out}{err}");
    assert!(
        out.contains("accepted 4  rejected 2  malformed 1"),
        "{out}{err}"
    );
    assert!(
        out.contains("line 6 case DT-2005: NHS_NUMBER_INVALID"),
        "{out}"
    );
    assert!(out.contains("line 7 case DT-2006: MALFORMED"), "{out}");
    // Uploaded records are live for health; the access notifies the council.
    let seen = stack.ed_lookup("9990000107");
    assert_eq!(seen["alerts"][0]["local_authority"]["ods_code"], "DEV01");
    stack.ed_lookup(&nhs(0));

    let (code, out, err) = run(&["watch", "--count", "2"]);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("#1 ACCESS case DT-2001: Dr Sam Dev"),
        "{out}"
    );
    assert!(lines[1].starts_with("#2 ACCESS case DT-1001"), "{out}");
    // Acknowledged: the cpis tool sees the cursor at 2.
    let list = stack.council(&["notifications", "list"]);
    assert!(list.stdout.contains("acknowledged up to 2"), "{list:?}");

    let (code, _, err) = Command::new(&python)
        .arg(&script)
        .args(["watch", "--count", "1"])
        .env("CPIS_REGISTRY_URL", &stack.registry_url)
        .env("CPIS_COUNCIL_TOKEN", "not-a-token")
        .output()
        .map(|o| {
            (
                o.status.code(),
                (),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .expect("run python");
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with("error: UNAUTHENTICATED TOKEN_INVALID"),
        "{err}"
    );
}
