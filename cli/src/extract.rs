//! A council's extract file, as `cpis upload` reads it: CSV with a header row, or NDJSON (one
//! JSON object per line), with the same flat column names. Each row becomes one `ChildRecord`
//! or a `MalformedRow` naming its line; the server remains the judge of everything else (NHS
//! number checksum, date rules, plan rules), so this module only parses shapes.

use std::collections::VecDeque;
use std::io::{BufRead, Read};
use std::sync::{Arc, Mutex, PoisonError};

use cpis_proto::cpis::common::v1::{
    ChildProtectionPlan, ChildRecord, LookedAfterChild, LookedAfterLegalBasis, PlanPeriod,
    UnbornChildProtectionPlan,
};
use cpis_proto::google::r#type::Date;

/// Every column an extract may carry, in the documented order (README, "cpis upload").
pub const COLUMNS: [&str; 16] = [
    "nhs_number",
    "local_case_id",
    "given_name",
    "family_name",
    "date_of_birth",
    "cpp_start_date",
    "cpp_end_date",
    "cpp_delete_date",
    "lac_start_date",
    "lac_end_date",
    "lac_delete_date",
    "lac_legal_basis",
    "ucpp_start_date",
    "ucpp_end_date",
    "ucpp_delete_date",
    "ucpp_expected_delivery_date",
];

/// The extract's column for a field path the registry names in a rejection
/// (`child_protection_plan.period.start_date` is `cpp_start_date`), so the report speaks the
/// file's language; a path with no column (`record`) is kept as it is.
pub fn column_for_field(path: &str) -> String {
    let path = path.strip_prefix("record.").unwrap_or(path);
    let blocks = [
        ("child_protection_plan", "cpp"),
        ("looked_after_child", "lac"),
        ("unborn_child_protection_plan", "ucpp"),
    ];
    for (block, prefix) in blocks {
        let Some(rest) = path.strip_prefix(block) else {
            continue;
        };
        let rest = rest.strip_prefix('.').unwrap_or(rest);
        let rest = rest.strip_prefix("period.").unwrap_or(rest);
        return if rest.is_empty() || rest == "period" {
            format!("{prefix}_*")
        } else {
            format!("{prefix}_{rest}")
        };
    }
    path.to_owned()
}

/// The known column nearest to an unknown one, when it is near enough to be a slip.
pub fn did_you_mean(name: &str) -> Option<&'static str> {
    COLUMNS
        .iter()
        .map(|known| (strsim::jaro_winkler(name, known), *known))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, known)| known)
}

/// Why a header that names no known column is not one: a file separated by semicolons (a
/// spreadsheet saved in a European locale) or one without a header row.
fn header_hint(line: &str) -> Option<String> {
    let looks_semicolon = line.contains(';')
        && line.split(';').any(|cell| {
            COLUMNS.contains(
                &cell
                    .trim()
                    .trim_start_matches('\u{feff}')
                    .to_ascii_lowercase()
                    .as_str(),
            )
        });
    if looks_semicolon {
        return Some(
            "the file is separated by semicolons; save it as CSV with commas (in Excel: \"CSV UTF-8 (Comma delimited)\")".into(),
        );
    }
    let first = line.split(',').next().unwrap_or_default().trim();
    let digits = first.chars().filter(char::is_ascii_digit).count();
    (digits >= 10 && first.chars().all(|c| c.is_ascii_digit() || c == ' ' || c == '-')).then(|| {
        "the first line looks like data, not a header: add a header row naming the columns, for example nhs_number,local_case_id,given_name,family_name,date_of_birth,cpp_start_date".into()
    })
}

/// The extract's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Comma-separated values with a header row naming the columns.
    Csv,
    /// One JSON object per line with the same names as the CSV columns.
    Ndjson,
}

impl Format {
    /// Guesses from the file name: `.ndjson`/`.jsonl`/`.json` are NDJSON, anything else CSV.
    pub fn from_path(path: &std::path::Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext)
                if ["ndjson", "jsonl", "json"]
                    .iter()
                    .any(|known| ext.eq_ignore_ascii_case(known)) =>
            {
                Self::Ndjson
            }
            _ => Self::Csv,
        }
    }
}

/// A row the tool could not turn into a record; it is reported and never sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MalformedRow {
    /// 1-based line of the file (the CSV header is line 1).
    pub line: u64,
    /// The row's case id, when it could be read.
    pub local_case_id: String,
    /// A `cpis.common.v1.ErrorReason` name without its prefix.
    pub reason: &'static str,
    /// The column at fault, empty for the row as a whole.
    pub field: String,
    /// What is wrong, for a person.
    pub message: String,
}

/// One row of the extract: a record to send, or why not.
#[derive(Debug)]
pub enum Row {
    /// A well-formed row, with its line.
    Record {
        /// 1-based line of the file.
        line: u64,
        /// The record.
        record: Box<ChildRecord>,
    },
    /// A row that cannot be sent.
    Malformed(MalformedRow),
}

/// Why the file as a whole cannot be read (the upload does not start).
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The CSV header is missing or names unknown columns.
    #[error("{0}")]
    Header(String),
    /// The file could not be read.
    #[error("cannot read the extract: {0}")]
    Io(#[from] std::io::Error),
}

/// The named cells of one row, in `COLUMNS` order; empty means absent.
type Cells = [String; COLUMNS.len()];

fn column(cells: &Cells, name: &str) -> String {
    COLUMNS
        .iter()
        .position(|c| *c == name)
        .and_then(|i| cells.get(i))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

/// Reads rows from a CSV or NDJSON source, one at a time (bounded memory whatever the size).
pub fn rows<R: Read + Send + 'static>(
    source: R,
    format: Format,
) -> Result<Box<dyn Iterator<Item = Result<Row, ExtractError>> + Send>, ExtractError> {
    match format {
        Format::Csv => csv_rows(source),
        Format::Ndjson => Ok(Box::new(ndjson_rows(std::io::BufReader::new(source)))),
    }
}

/// The line ends the csv reader has pulled in but no row has been numbered past yet. The csv
/// crate counts only LF as a line end; a person (and the report's `line`) counts LF, CR LF and a
/// lone CR (old Mac and some spreadsheet exports), so rows are numbered from their byte offset.
/// Holds at most the line ends of the csv reader's buffer.
#[derive(Debug, Default)]
struct LineEnds {
    /// Bytes read so far.
    read: u64,
    /// Whether the last byte read was a CR (an LF right after it ends the same line).
    after_cr: bool,
    /// Where each line end not yet passed by a row starts and ends (a CR LF is one).
    ahead: VecDeque<(u64, u64)>,
    /// Line ends already passed.
    passed: u64,
}

impl LineEnds {
    /// Notes the next byte read.
    fn note(&mut self, byte: u8) {
        let at = self.read;
        self.read += 1;
        let joins_cr = byte == b'\n' && self.after_cr;
        self.after_cr = byte == b'\r';
        match (byte, self.ahead.back_mut()) {
            (b'\n', Some((_, end))) if joins_cr && *end == at => *end = at + 1,
            (b'\n' | b'\r', _) => self.ahead.push_back((at, at + 1)),
            _ => {}
        }
    }

    /// The 1-based line of a row whose position is `offset`; offsets must not decrease between
    /// calls. csv may place a row at (or inside) the line ends it skipped before it, so line
    /// ends that follow `offset` with no byte between are passed too.
    fn line_at(&mut self, offset: u64) -> u64 {
        let mut at = offset;
        while let Some(&(start, end)) = self.ahead.front() {
            if start > at {
                break;
            }
            // A line end at (or around) the row's position: the row starts after it.
            at = at.max(end);
            self.ahead.pop_front();
            self.passed += 1;
        }
        self.passed + 1
    }
}

/// The extract as the csv reader reads it, noting the line ends in `ends` on the way.
struct CountingLines<R> {
    source: R,
    ends: Arc<Mutex<LineEnds>>,
}

impl<R: Read> Read for CountingLines<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.source.read(buf)?;
        let mut ends = self.ends.lock().unwrap_or_else(PoisonError::into_inner);
        for &byte in buf.get(..n).unwrap_or_default() {
            ends.note(byte);
        }
        Ok(n)
    }
}

fn csv_rows<R: Read + Send + 'static>(
    source: R,
) -> Result<Box<dyn Iterator<Item = Result<Row, ExtractError>> + Send>, ExtractError> {
    let ends = Arc::new(Mutex::new(LineEnds::default()));
    let line_of = {
        let ends = Arc::clone(&ends);
        move |position: Option<&csv::Position>| {
            let offset = position.map_or(0, csv::Position::byte);
            ends.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .line_at(offset)
        }
    };
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(CountingLines { source, ends });
    let header = reader
        .byte_headers()
        .map_err(|e| ExtractError::Header(format!("cannot read the CSV header: {e}")))?
        .clone();
    if header.is_empty() || header.iter().all(<[u8]>::is_empty) {
        return Err(ExtractError::Header(
            "the CSV file has no header row; the first line must name the columns".into(),
        ));
    }
    // Where each header column lands in `Cells`; an unknown column is refused up front, since a
    // misspelt plan column would otherwise silently drop a child's plan.
    let mut slots = Vec::with_capacity(header.len());
    let names: Vec<String> = header
        .iter()
        .map(|name| {
            String::from_utf8_lossy(name)
                .trim()
                .trim_start_matches('\u{feff}')
                .to_ascii_lowercase()
        })
        .collect();
    for name in &names {
        let slot = COLUMNS.iter().position(|c| c == name).ok_or_else(|| {
            let hint = header_hint(&names.join(","))
                .or_else(|| did_you_mean(name).map(|known| format!("did you mean {known:?}?")))
                .unwrap_or_else(|| format!("known columns: {}", COLUMNS.join(",")));
            ExtractError::Header(format!("unknown column {name:?} in the CSV header; {hint}"))
        })?;
        if slots.contains(&slot) {
            return Err(ExtractError::Header(format!(
                "column {name:?} appears twice in the CSV header"
            )));
        }
        slots.push(slot);
    }
    if !slots.contains(&0) {
        return Err(ExtractError::Header(
            "the CSV header has no nhs_number column".into(),
        ));
    }
    let width = slots.len();
    let iter = reader.into_byte_records().map(move |result| {
        let record = match result {
            Ok(record) => record,
            Err(error) => {
                let line = line_of(error.position());
                return match error.kind() {
                    csv::ErrorKind::Io(_) => {
                        Err(ExtractError::Io(std::io::Error::other(error.to_string())))
                    }
                    _ => Ok(Row::Malformed(MalformedRow {
                        line,
                        local_case_id: String::new(),
                        reason: "BATCH_MALFORMED",
                        field: String::new(),
                        message: format!("not a valid CSV row: {error}"),
                    })),
                };
            }
        };
        let line = line_of(record.position());
        let mut cells: Cells = Default::default();
        let mut bad_utf8 = None;
        for (slot, value) in slots.iter().zip(record.iter()) {
            match std::str::from_utf8(value) {
                Ok(text) => cells[*slot] = text.to_owned(),
                Err(_) => bad_utf8 = Some(COLUMNS[*slot]),
            }
        }
        let local_case_id = column(&cells, "local_case_id");
        if record.len() != width {
            return Ok(Row::Malformed(MalformedRow {
                line,
                local_case_id,
                reason: "BATCH_MALFORMED",
                field: String::new(),
                message: format!(
                    "expected {width} fields as in the header, found {}",
                    record.len()
                ),
            }));
        }
        if let Some(field) = bad_utf8 {
            return Ok(Row::Malformed(MalformedRow {
                line,
                local_case_id,
                reason: "FIELD_FORMAT",
                field: field.into(),
                message: "is not valid UTF-8".into(),
            }));
        }
        Ok(row_from_cells(line, &cells))
    });
    Ok(Box::new(iter))
}

/// The NDJSON shape: the CSV columns as string members; unknown members are refused.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRow {
    #[serde(default, deserialize_with = "string_or_number")]
    nhs_number: Option<String>,
    local_case_id: Option<String>,
    given_name: Option<String>,
    family_name: Option<String>,
    date_of_birth: Option<String>,
    cpp_start_date: Option<String>,
    cpp_end_date: Option<String>,
    cpp_delete_date: Option<String>,
    lac_start_date: Option<String>,
    lac_end_date: Option<String>,
    lac_delete_date: Option<String>,
    lac_legal_basis: Option<String>,
    ucpp_start_date: Option<String>,
    ucpp_end_date: Option<String>,
    ucpp_delete_date: Option<String>,
    ucpp_expected_delivery_date: Option<String>,
}

/// A string, or a whole number written without quotes (an NHS number exported as a number).
fn string_or_number<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Cell {
        Text(String),
        Number(u64),
    }
    Ok(
        <Option<Cell> as serde::Deserialize>::deserialize(deserializer)?.map(|cell| match cell {
            Cell::Text(text) => text,
            Cell::Number(number) => number.to_string(),
        }),
    )
}

impl JsonRow {
    fn into_cells(self) -> Cells {
        [
            self.nhs_number,
            self.local_case_id,
            self.given_name,
            self.family_name,
            self.date_of_birth,
            self.cpp_start_date,
            self.cpp_end_date,
            self.cpp_delete_date,
            self.lac_start_date,
            self.lac_end_date,
            self.lac_delete_date,
            self.lac_legal_basis,
            self.ucpp_start_date,
            self.ucpp_end_date,
            self.ucpp_delete_date,
            self.ucpp_expected_delivery_date,
        ]
        .map(Option::unwrap_or_default)
    }
}

fn ndjson_rows<R: BufRead + Send + 'static>(
    source: R,
) -> impl Iterator<Item = Result<Row, ExtractError>> + Send {
    source.split(b'\n').enumerate().filter_map(|(index, line)| {
        let number = index as u64 + 1;
        let bytes = match line {
            Ok(bytes) => bytes,
            Err(error) => return Some(Err(ExtractError::Io(error))),
        };
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return Some(Ok(Row::Malformed(MalformedRow {
                line: number,
                local_case_id: String::new(),
                reason: "BATCH_MALFORMED",
                field: String::new(),
                message: "is not valid UTF-8".into(),
            })));
        };
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        Some(Ok(match serde_json::from_str::<JsonRow>(text) {
            Ok(row) => row_from_cells(number, &row.into_cells()),
            Err(error) => Row::Malformed(MalformedRow {
                line: number,
                local_case_id: String::new(),
                reason: "BATCH_MALFORMED",
                field: String::new(),
                message: json_message(&error),
            }),
        }))
    })
}

/// What is wrong with an NDJSON line, for a person: an unknown member gets a suggestion as an
/// unknown CSV column does (serde names the member only in its message).
fn json_message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let unknown = text
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    match unknown.and_then(|name| did_you_mean(name).map(|known| (name, known))) {
        Some((name, known)) => format!("unknown member {name:?}; did you mean {known:?}?"),
        None => format!("not a valid JSON object of string members: {text}"),
    }
}

/// Turns named cells into a record, or says which cell cannot be read.
fn row_from_cells(line: u64, cells: &Cells) -> Row {
    let local_case_id = column(cells, "local_case_id");
    match record_from_cells(cells) {
        Ok(record) => Row::Record {
            line,
            record: Box::new(record),
        },
        Err((field, message)) => Row::Malformed(MalformedRow {
            line,
            local_case_id,
            reason: "FIELD_FORMAT",
            field: field.into(),
            message,
        }),
    }
}

type CellError = (&'static str, String);

fn record_from_cells(cells: &Cells) -> Result<ChildRecord, CellError> {
    let date = |name: &'static str| -> Result<Option<Date>, CellError> {
        let text = column(cells, name);
        if text.is_empty() {
            return Ok(None);
        }
        parse_date(&text).map(Some).ok_or((
            name,
            format!("{text:?} is not a date in the form YYYY-MM-DD"),
        ))
    };
    let period = |start: &'static str,
                  end: &'static str,
                  delete: &'static str|
     -> Result<Option<PlanPeriod>, CellError> {
        let period = PlanPeriod {
            start_date: date(start)?,
            end_date: date(end)?,
            delete_date: date(delete)?,
        };
        Ok((period != PlanPeriod::default()).then_some(period))
    };

    let cpp = period("cpp_start_date", "cpp_end_date", "cpp_delete_date")?;
    let lac_period = period("lac_start_date", "lac_end_date", "lac_delete_date")?;
    let legal_basis_text = column(cells, "lac_legal_basis");
    let legal_basis = if legal_basis_text.is_empty() {
        LookedAfterLegalBasis::Unspecified
    } else {
        parse_legal_basis(&legal_basis_text).ok_or((
            "lac_legal_basis",
            format!("{legal_basis_text:?} is not one of s31, s38, s20"),
        ))?
    };
    let ucpp_period = period("ucpp_start_date", "ucpp_end_date", "ucpp_delete_date")?;
    let expected_delivery = date("ucpp_expected_delivery_date")?;

    let looked_after_child = (lac_period.is_some()
        || legal_basis != LookedAfterLegalBasis::Unspecified)
        .then(|| LookedAfterChild {
            period: Some(lac_period.unwrap_or_default()),
            legal_basis: legal_basis as i32,
        });
    let unborn_child_protection_plan =
        (ucpp_period.is_some() || expected_delivery.is_some()).then(|| UnbornChildProtectionPlan {
            period: Some(ucpp_period.unwrap_or_default()),
            expected_delivery_date: expected_delivery,
        });

    Ok(ChildRecord {
        // Spaces and hyphens are how people write NHS numbers (`999 000 0018`, `999-000-0018`).
        nhs_number: column(cells, "nhs_number").replace([' ', '-'], ""),
        local_case_id: column(cells, "local_case_id"),
        given_name: column(cells, "given_name"),
        family_name: column(cells, "family_name"),
        date_of_birth: date("date_of_birth")?,
        child_protection_plan: cpp.map(|period| ChildProtectionPlan {
            period: Some(period),
        }),
        looked_after_child,
        unborn_child_protection_plan,
        ..ChildRecord::default()
    })
}

/// `YYYY-MM-DD` into a `google.type.Date`; the calendar check is the registry's (it names the
/// field in its answer), so 2025-02-30 passes here and is rejected there.
pub fn parse_date(text: &str) -> Option<Date> {
    let mut parts = text.split('-');
    let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || year.len() != 4
        || month.len() != 2
        || day.len() != 2
        || ![year, month, day]
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    Some(Date {
        year: year.parse().ok()?,
        month: month.parse().ok()?,
        day: day.parse().ok()?,
    })
}

/// `s31`, `s38`, `s20` (any case, "section 31" too) into the contract's legal basis.
fn parse_legal_basis(text: &str) -> Option<LookedAfterLegalBasis> {
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    match digits.as_str() {
        "31" => Some(LookedAfterLegalBasis::Section31CareOrder),
        "38" => Some(LookedAfterLegalBasis::Section38InterimCareOrder),
        "20" => Some(LookedAfterLegalBasis::Section20VoluntaryAccommodation),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(text: &str, format: Format) -> Vec<Row> {
        rows(std::io::Cursor::new(text.to_owned()), format)
            .map(|it| it.filter_map(Result::ok).collect())
            .unwrap_or_default()
    }

    #[test]
    fn csv_columns_in_any_order_and_blocks_from_present_cells() {
        let rows = collect(
            "local_case_id,nhs_number,lac_start_date,lac_legal_basis,given_name\n\
             C1,9990000018,2025-01-02,S20,Alex\n",
            Format::Csv,
        );
        let [Row::Record { line, record }] = rows.as_slice() else {
            panic!("one record expected: {rows:?}");
        };
        assert_eq!(*line, 2);
        assert_eq!(record.nhs_number, "9990000018");
        assert_eq!(record.local_case_id, "C1");
        let lac = record.looked_after_child.unwrap_or_default();
        assert_eq!(
            lac.legal_basis,
            LookedAfterLegalBasis::Section20VoluntaryAccommodation as i32
        );
        assert_eq!(
            lac.period.and_then(|p| p.start_date),
            Some(Date {
                year: 2025,
                month: 1,
                day: 2
            })
        );
        assert!(record.child_protection_plan.is_none());
        assert!(record.unborn_child_protection_plan.is_none());
    }

    #[test]
    fn malformed_rows_name_their_line_and_field() {
        let rows = collect(
            "nhs_number,local_case_id,cpp_start_date\n\
             9990000018,C1,2025-01-02\n\
             9990000026,C2,02/01/2025\n\
             9990000034,C3\n",
            Format::Csv,
        );
        assert_eq!(rows.len(), 3);
        let Row::Malformed(bad_date) = &rows[1] else {
            panic!("{rows:?}")
        };
        assert_eq!(
            (bad_date.line, bad_date.field.as_str(), bad_date.reason),
            (3, "cpp_start_date", "FIELD_FORMAT")
        );
        assert_eq!(bad_date.local_case_id, "C2");
        let Row::Malformed(short) = &rows[2] else {
            panic!("{rows:?}")
        };
        assert_eq!((short.line, short.reason), (4, "BATCH_MALFORMED"));
    }

    /// Found by the `extract_parser` fuzz target: csv counts only LF as a line end, so every
    /// row of a file with lone-CR line ends (old Mac, some spreadsheet exports) was reported on
    /// line 1, the header's, and rows split by a stray CR shared a line.
    #[test]
    fn lines_are_counted_however_they_end() {
        for (text, expected) in [
            (
                "nhs_number,local_case_id\r9990000018,C1\r9990000026\r\r9990000034,C3\r",
                vec![2, 3, 5],
            ),
            (
                "nhs_number,local_case_id\r\n9990000018,C1\r\n9990000026\r\n\r\n9990000034,C3\r\n",
                vec![2, 3, 5],
            ),
            (
                "nhs_number,local_case_id\n9990000018,\"C\r\n1\"\n9990000026,C2\r9990000034,C3",
                vec![2, 4, 5],
            ),
        ] {
            let lines: Vec<u64> = collect(text, Format::Csv)
                .iter()
                .map(|row| match row {
                    Row::Record { line, .. } => *line,
                    Row::Malformed(m) => m.line,
                })
                .collect();
            assert_eq!(lines, expected, "{text:?}");
        }
    }

    #[test]
    fn unknown_or_missing_columns_refuse_the_file() {
        for header in ["nhs_number,cpp_start\n", "local_case_id\n", "\n"] {
            assert!(
                rows(std::io::Cursor::new(header.to_owned()), Format::Csv).is_err(),
                "{header:?}"
            );
        }
    }

    #[test]
    fn ndjson_rows_and_bad_json() {
        let rows = collect(
            "{\"nhs_number\":\"9990000018\",\"ucpp_start_date\":\"2026-01-01\",\"ucpp_expected_delivery_date\":\"2026-06-01\"}\n\
             \n\
             {\"nhs_number\":\"9990000026\",\"bogus\":\"x\"}\n\
             not json\n",
            Format::Ndjson,
        );
        assert_eq!(rows.len(), 3);
        assert!(
            matches!(&rows[0], Row::Record { line: 1, record } if record.unborn_child_protection_plan.is_some())
        );
        assert!(matches!(&rows[1], Row::Malformed(m) if m.line == 3));
        assert!(matches!(&rows[2], Row::Malformed(m) if m.line == 4));
    }

    #[test]
    fn dates_are_strict_in_shape() {
        assert!(parse_date("2025-01-02").is_some());
        for bad in [
            "2025-1-02",
            "25-01-02",
            "2025-01-02-",
            "2025/01/02",
            "",
            "2025-0a-02",
        ] {
            assert!(parse_date(bad).is_none(), "{bad}");
        }
    }
}
