//! `cpis dev`: demo data on first start, a guide whose commands work, a clean Ctrl-C, and a
//! second start that keeps the data.

use crate::harness::{DevStack, nhs};

fn councils(answer: &serde_json::Value) -> Vec<String> {
    let mut codes: Vec<String> = answer["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .map(|a| {
            a["local_authority"]["ods_code"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    codes.sort();
    codes
}

fn plans(answer: &serde_json::Value) -> Vec<String> {
    let mut plans: Vec<String> = answer["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .flat_map(|a| a["plans"].as_array().unwrap().clone())
        .map(|p| p["plan_type"].as_str().unwrap().to_owned())
        .collect();
    plans.sort();
    plans
}

#[test]
fn demo_data_shows_every_plan_type_and_the_visibility_rules() {
    let stack = DevStack::start();
    let cpp = stack.ed_lookup(&nhs(0));
    assert_eq!(councils(&cpp), ["DEV01"]);
    assert_eq!(plans(&cpp), ["CHILD_PROTECTION_PLAN"]);
    let la = &cpp["alerts"][0]["local_authority"];
    assert_eq!(la["name"], "Devtown Borough Council");
    assert_eq!(la["emergency_duty_phone"], "020 7946 0000");

    let lac = stack.ed_lookup(&nhs(1));
    assert_eq!(plans(&lac), ["LOOKED_AFTER_CHILD"]);
    assert_eq!(
        lac["alerts"][0]["plans"][0]["legal_basis"],
        "SECTION_31_CARE_ORDER"
    );

    let two = stack.ed_lookup(&nhs(2));
    assert_eq!(councils(&two), ["DEV01", "DEV02"]);

    let unborn = stack.ed_lookup(&nhs(3));
    assert_eq!(plans(&unborn), ["UNBORN_CHILD_PROTECTION_PLAN"]);
    assert_ne!(
        unborn["alerts"][0]["plans"][0]["expected_delivery_date"],
        ""
    );

    let ended_recently = stack.ed_lookup(&nhs(4));
    assert_eq!(councils(&ended_recently), ["DEV02"]);
    assert_ne!(ended_recently["alerts"][0]["plans"][0]["end_date"], "");

    for hidden in [nhs(5), nhs(6)] {
        let answer = stack.ed_lookup(&hidden);
        assert!(answer["alerts"].as_array().unwrap().is_empty(), "{answer}");
    }
}

#[test]
fn guide_prints_addresses_tokens_and_commands() {
    let stack = DevStack::start();
    let guide = stack.guide();
    for expected in [
        format!("export CPIS_REGISTRY_URL={}", stack.registry_url),
        format!("export CPIS_LOOKUP_URL={}", stack.lookup_url),
        format!("export CPIS_COUNCIL_TOKEN={}", stack.council_token),
        format!("export CPIS_NHS_TOKEN={}", stack.ed_token),
        format!("export GP_TOKEN={}", stack.gp_token),
        format!("export NHS111_TOKEN={}", stack.nhs111_token),
        "lookup 9990000018   # as the ED clinician".to_owned(),
        "notifications watch".to_owned(),
        "examples/data/extract.csv   # 3 bad rows".to_owned(),
        "grpcurl -plaintext".to_owned(),
        "examples/python/council_client.py".to_owned(),
        "demo data written for 3 councils".to_owned(),
    ] {
        assert!(
            guide.contains(&expected),
            "guide lacks {expected:?}:\n{guide}"
        );
    }
    // The printed cpis commands, run as printed (with the exported variables).
    let exe = crate::harness::cpis();
    let vars = [
        ("CPIS_COUNCIL_TOKEN", stack.council_token.as_str()),
        ("CPIS_NHS_TOKEN", stack.ed_token.as_str()),
        ("GP_TOKEN", stack.gp_token.as_str()),
        ("NHS111_TOKEN", stack.nhs111_token.as_str()),
        ("CPIS_REGISTRY_URL", stack.registry_url.as_str()),
        ("CPIS_LOOKUP_URL", stack.lookup_url.as_str()),
    ];
    let repo = cpis_testkit::tools::repo_root();
    let mut ran = 0;
    for line in guide.lines().filter(|l| {
        (l.starts_with('/') || l.starts_with("./"))
            && (l.contains(" lookup ") || l.contains(" contacts "))
    }) {
        // `./target/…/cpis ARGS`: the binary is the one under test; expand "$VAR" from `vars`.
        let command = line.split(" #").next().unwrap_or(line);
        let args: Vec<String> = command
            .split_whitespace()
            .skip(1)
            .map(|word| {
                let bare = word.trim_matches('"');
                vars.iter()
                    .find(|(k, _)| bare == format!("${k}"))
                    .map_or_else(|| bare.to_owned(), |(_, v)| (*v).to_owned())
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = crate::harness::run_in(&repo, &args, &vars);
        assert_eq!(out.code, 0, "{line}: {out:?} (binary {exe})");
        ran += 1;
    }
    assert!(
        ran >= 4,
        "the guide printed {ran} cpis lookup/contacts commands"
    );
}

#[test]
fn ctrl_c_stops_cleanly_and_a_second_start_keeps_the_data() {
    let stack = DevStack::start();
    // A change made during the first run: new contact details and an access.
    let set = stack.council(&[
        "contacts",
        "set",
        "--name",
        "Devtown Council (renamed)",
        "--emergency-duty-phone",
        "020 7946 0999",
    ]);
    assert_eq!(set.code, 0, "{set:?}");
    let first = stack.ed_lookup(&nhs(0));
    assert_eq!(first["recent_accesses"].as_array().unwrap().len(), 1);
    let council_token = stack.council_token.clone();

    let dir = stack.restartable();
    let stack = DevStack::start_in(dir);
    assert!(
        stack.guide().contains("existing data kept"),
        "{}",
        stack.guide()
    );
    // Tokens printed by the first run still work (the signing key is kept).
    let contacts = stack.run(&["contacts", "--json", "--token", &council_token]);
    assert_eq!(contacts.code, 0, "{contacts:?}");
    let la = contacts.json_lines().pop().unwrap();
    assert_eq!(la["name"], "Devtown Council (renamed)");
    // The first run's access is still in the history, beside a new one from NHS 111.
    let second = stack.run(&["lookup", &nhs(0), "--json", "--token", &stack.nhs111_token]);
    assert_eq!(second.code, 0, "{second:?}");
    let second = second.json_lines().pop().unwrap();
    let names: Vec<&str> = second["recent_accesses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["accessor_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Pat Responsible", "Dr Sam Dev"]);
    assert_eq!(councils(&second), ["DEV01"]);
}

#[test]
fn dev_refuses_a_non_loopback_address() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = crate::harness::run_in(
        dir.path(),
        &[
            "dev",
            "--registry-listen",
            "0.0.0.0:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("loopback"), "{out:?}");
}

#[test]
fn tls_serves_the_public_ports_and_the_dev_certificates_are_kept() {
    let stack = DevStack::start_in_with(tempfile::tempdir().unwrap(), &["--tls"]);
    assert!(
        stack.registry_url.starts_with("https://"),
        "{}",
        stack.registry_url
    );
    assert!(
        stack.lookup_url.starts_with("https://"),
        "{}",
        stack.lookup_url
    );
    let ca = stack.ca_cert.clone().expect("the ready file names the CA");
    // cpis over TLS (CPIS_CA_CERT): a lookup through both TLS ports and the mTLS link.
    assert_eq!(councils(&stack.ed_lookup(&nhs(0))), ["DEV01"]);
    assert_eq!(stack.council(&["contacts"]).code, 0);
    // The Python example over TLS too (CPIS_CA_CERT).
    if let Some(python) = cpis_testkit::tools::python() {
        let repo = cpis_testkit::tools::repo_root();
        let output = std::process::Command::new(python)
            .arg(repo.join("examples/python/council_client.py"))
            .args(["watch", "--count", "1", "--after", "0"])
            .current_dir(&repo)
            .env("CPIS_REGISTRY_URL", &stack.registry_url)
            .env("CPIS_CA_CERT", &ca)
            .env("CPIS_COUNCIL_TOKEN", &stack.council_token)
            .output()
            .expect("run python");
        let out = String::from_utf8_lossy(&output.stdout);
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{out}{err}");
        assert!(out.starts_with("#1 ACCESS"), "{out}{err}");
    }
    let guide = stack.guide();
    for expected in [
        format!("export CPIS_CA_CERT={ca}"),
        format!("-cacert {ca}"),
        "grpc.ssl_channel_credentials".to_owned(),
    ] {
        assert!(
            guide.contains(&expected),
            "guide lacks {expected:?}:\n{guide}"
        );
    }
    // Without the CA, an https URL is refused in words.
    let out = crate::harness::run_in(
        stack.dir.path(),
        &["lookup", &nhs(0), "--token", &stack.ed_token],
        &[("CPIS_LOOKUP_URL", stack.lookup_url.as_str())],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("--ca-cert"), "{out:?}");

    // A second start keeps the certificates.
    let tls = stack.data_dir().join("tls");
    let first_ca = std::fs::read(tls.join("ca.pem")).unwrap();
    let dir = stack.restartable();
    let again = DevStack::start_in_with(dir, &["--tls"]);
    assert_eq!(
        std::fs::read(tls_dir(&again).join("ca.pem")).unwrap(),
        first_ca
    );
    assert_eq!(councils(&again.ed_lookup(&nhs(0))), ["DEV01"]);

    // An expired certificate is issued anew (with a new CA), and the stack works.
    let expired = cpis_testkit::pki::TestPki::new("old").issue(
        "expired",
        cpis_testkit::pki::Usage::Client,
        Some("spiffe://cpis/lookup"),
        |params| {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        },
    );
    std::fs::write(tls_dir(&again).join("lookup.pem"), &expired.cert_pem).unwrap();
    let dir = again.restartable();
    let renewed = DevStack::start_in_with(dir, &["--tls"]);
    assert_ne!(
        std::fs::read(tls_dir(&renewed).join("ca.pem")).unwrap(),
        first_ca
    );
    assert_eq!(councils(&renewed.ed_lookup(&nhs(0))), ["DEV01"]);
}

fn tls_dir(stack: &DevStack) -> std::path::PathBuf {
    stack.data_dir().join("tls")
}
