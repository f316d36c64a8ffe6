//! Fuzz target: arbitrary bytes as a council extract, read both as CSV and as NDJSON by the
//! parser `cpis upload` uses (`cpis::extract`). Whatever the bytes, rows come out in file order
//! with real line numbers, every refusal carries a contract reason, and every record read is in
//! the shape the parser promises; written back as CSV and as NDJSON, it reads back the same.
#![no_main]

use cpis::extract::{COLUMNS, Format, Row, rows};
use cpis_proto::cpis::common::v1::{ChildRecord, ErrorReason, LookedAfterLegalBasis};
use cpis_proto::google::r#type::Date;
use libfuzzer_sys::fuzz_target;

/// Every record the parser reads from `bytes`, after checking the rows' invariants.
fn read(bytes: &[u8], format: Format) -> Vec<ChildRecord> {
    let Ok(iter) = rows(std::io::Cursor::new(bytes.to_vec()), format) else {
        // A refused header: the upload does not start.
        return Vec::new();
    };
    let mut records = Vec::new();
    let mut last_line = 0;
    for row in iter {
        let Ok(row) = row else {
            // An I/O error ends the file (the upload is cancelled); an in-memory reader has none.
            panic!("an in-memory extract failed to read");
        };
        let line = match &row {
            Row::Record { line, .. } => *line,
            Row::Malformed(malformed) => {
                let reason = format!("ERROR_REASON_{}", malformed.reason);
                assert!(
                    ErrorReason::from_str_name(&reason).is_some(),
                    "unknown reason {}",
                    malformed.reason
                );
                assert!(
                    malformed.field.is_empty() || COLUMNS.contains(&malformed.field.as_str()),
                    "unknown column {:?}",
                    malformed.field
                );
                malformed.line
            }
        };
        // Lines of the file, in order; the CSV header is line 1, so a CSV row starts on line 2.
        let first = if format == Format::Csv { 2 } else { 1 };
        assert!(
            line >= first && line > last_line,
            "line {line} after {last_line}"
        );
        last_line = line;
        if let Row::Record { record, .. } = row {
            check_shape(&record);
            records.push(*record);
        }
    }
    records
}

fn check_date(date: Option<&Date>) {
    if let Some(d) = date {
        assert!(
            (0..=9999).contains(&d.year)
                && (0..=99).contains(&d.month)
                && (0..=99).contains(&d.day)
        );
    }
}

/// What the parser promises of a record it reads: trimmed text, no spaces in the NHS number,
/// dates of the `YYYY-MM-DD` shape, a known (or absent) legal basis, every block with a period.
fn check_shape(record: &ChildRecord) {
    assert!(!record.nhs_number.contains(' '));
    for text in [
        &record.nhs_number,
        &record.local_case_id,
        &record.given_name,
        &record.family_name,
    ] {
        assert_eq!(text.trim(), text.as_str());
    }
    check_date(record.date_of_birth.as_ref());
    let periods = [
        record
            .child_protection_plan
            .as_ref()
            .map(|p| p.period.as_ref()),
        record
            .looked_after_child
            .as_ref()
            .map(|l| l.period.as_ref()),
        record
            .unborn_child_protection_plan
            .as_ref()
            .map(|u| u.period.as_ref()),
    ];
    for period in periods.into_iter().flatten() {
        let period = period.unwrap_or_else(|| panic!("a block without a period"));
        check_date(period.start_date.as_ref());
        check_date(period.end_date.as_ref());
        check_date(period.delete_date.as_ref());
    }
    if let Some(lac) = &record.looked_after_child {
        assert!(LookedAfterLegalBasis::try_from(lac.legal_basis).is_ok());
    }
    if let Some(ucpp) = &record.unborn_child_protection_plan {
        check_date(ucpp.expected_delivery_date.as_ref());
    }
}

/// The record's cells in `COLUMNS` order, as a council's system would write them.
fn cells(record: &ChildRecord) -> Vec<String> {
    let date = |d: Option<&Date>| {
        d.map_or(String::new(), |d| {
            format!("{:04}-{:02}-{:02}", d.year, d.month, d.day)
        })
    };
    let cpp = record
        .child_protection_plan
        .as_ref()
        .and_then(|p| p.period.clone())
        .unwrap_or_default();
    let lac = record
        .looked_after_child
        .as_ref()
        .and_then(|l| l.period.clone())
        .unwrap_or_default();
    let ucpp = record
        .unborn_child_protection_plan
        .as_ref()
        .and_then(|u| u.period.clone())
        .unwrap_or_default();
    let basis = match record
        .looked_after_child
        .as_ref()
        .map(|l| LookedAfterLegalBasis::try_from(l.legal_basis))
    {
        Some(Ok(LookedAfterLegalBasis::Section31CareOrder)) => "s31",
        Some(Ok(LookedAfterLegalBasis::Section38InterimCareOrder)) => "s38",
        Some(Ok(LookedAfterLegalBasis::Section20VoluntaryAccommodation)) => "s20",
        _ => "",
    };
    vec![
        record.nhs_number.clone(),
        record.local_case_id.clone(),
        record.given_name.clone(),
        record.family_name.clone(),
        date(record.date_of_birth.as_ref()),
        date(cpp.start_date.as_ref()),
        date(cpp.end_date.as_ref()),
        date(cpp.delete_date.as_ref()),
        date(lac.start_date.as_ref()),
        date(lac.end_date.as_ref()),
        date(lac.delete_date.as_ref()),
        basis.to_owned(),
        date(ucpp.start_date.as_ref()),
        date(ucpp.end_date.as_ref()),
        date(ucpp.delete_date.as_ref()),
        date(
            record
                .unborn_child_protection_plan
                .as_ref()
                .and_then(|u| u.expected_delivery_date.as_ref()),
        ),
    ]
}

/// Written back in the format it was read from, the records read back the same. (Each format's
/// writer is checked against its own reader only: crossing formats would triple the readers
/// built per input, the target's main cost, and find nothing a same-format trip does not.)
fn round_trip(records: &[ChildRecord], format: Format) {
    if records.is_empty() {
        return;
    }
    let written = match format {
        Format::Csv => {
            let mut csv = csv::Writer::from_writer(Vec::new());
            let _ = csv.write_record(COLUMNS);
            for record in records {
                let _ = csv.write_record(cells(record));
            }
            let Ok(csv) = csv.into_inner() else {
                panic!("writing CSV to memory failed");
            };
            csv
        }
        Format::Ndjson => {
            let mut written = Vec::new();
            for record in records {
                let object: serde_json::Map<String, serde_json::Value> = COLUMNS
                    .iter()
                    .zip(cells(record))
                    .map(|(name, cell)| ((*name).to_owned(), serde_json::Value::String(cell)))
                    .collect();
                if let Ok(line) = serde_json::to_vec(&object) {
                    written.extend_from_slice(&line);
                    written.push(b'\n');
                }
            }
            written
        }
    };
    assert_eq!(read(&written, format), records, "{format:?} round trip");
}

fuzz_target!(|data: &[u8]| {
    for format in [Format::Csv, Format::Ndjson] {
        round_trip(&read(data, format), format);
    }
});
