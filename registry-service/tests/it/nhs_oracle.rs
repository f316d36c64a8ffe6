//! The NHS-number validator agrees with the independent `nhs-number` PyPI package on 100,000+
//! generated numbers, valid and invalid — except that CP-IS also refuses numbers of one repeated
//! digit (the package accepts e.g. 0000000000 on checksum alone).

use cpis_core::nhs_number::{NhsNumber, NhsNumberError};

#[test]
fn validator_agrees_with_the_nhs_number_package() {
    let Some(python) = cpis_testkit::tools::python() else {
        return;
    };
    let script = cpis_testkit::tools::repo_root().join("tests/python/nhs_oracle.py");
    let output = std::process::Command::new(python)
        .arg(script)
        .output()
        .expect("run oracle");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let (mut checked, mut valid, mut repdigits) = (0, 0, 0);
    for line in text.lines() {
        let (number, verdict) = line.split_once(' ').expect("'number verdict'");
        let oracle_valid = verdict == "1";
        let ours = NhsNumber::parse(number);
        let repeated = number.bytes().all(|b| Some(b) == number.bytes().next());
        if repeated && oracle_valid {
            assert_eq!(ours, Err(NhsNumberError::Implausible), "{number}");
            repdigits += 1;
        } else {
            assert_eq!(
                ours.is_ok(),
                oracle_valid,
                "{number}: ours {ours:?}, oracle {oracle_valid}"
            );
        }
        checked += 1;
        valid += usize::from(oracle_valid);
    }
    assert!(checked >= 100_000, "only {checked} numbers");
    assert!(
        valid >= 45_000 && checked - valid >= 45_000,
        "{valid} valid of {checked}: both kinds must be well represented"
    );
    assert!(
        repdigits >= 1,
        "the repeated-digit difference was exercised"
    );
}
