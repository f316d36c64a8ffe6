#!/usr/bin/env python3
"""The suite's privacy check: searches everything the servers exported and logged while the
tests ran for the children's details the tests sent, and fails on any hit.

Scanned (under DIR, written by scripts/test.sh's run):
  - otlp*.jsonl: every OTLP request a receiver got (tests/python/otlp_receiver.py: the suite's,
    and copies of those tests start themselves): resource
    attributes, span names, span/event/link attributes, status messages, metric names and data
    point labels, log bodies and attributes;
  - *.jsonl: the JSON log lines of every test process (testkit's capture, $CPIS_TEST_LOG_DIR);
  - *.log: the output of every service binary a test started (JSON or text lines).
Not scanned, because they cannot carry caller data by construction: trace and span ids (hex the
SDK makes), timestamps (the clock's), and metric values (numbers the code counts).

What the tests sent:
  - NHS numbers: every test NHS number is in the test range 999 000 0000-999 999 9999
    (cpis_core::nhs_number::test_range), so any valid-checksum number there is one, in any of its
    forms (9990000018, 999 000 0018, 999-000-0018), except inside a run of 16 or more hex digits:
    the random ids the services generate (see HEX_ID_RE);
  - names and dates of birth: the literals the test sources give children (given_name,
    family_name, date_of_birth, and the date of birth passed to the fixtures' cpp(...)), read
    from the sources now; names shorter than 3 letters or not plain words are skipped (they
    would match ordinary words: "G" repeated, "Cy"). Dates of birth are searched as
    YYYY-MM-DD, DD/MM/YYYY, YYYYMMDD and the Debug form "year: Y, month: M, day: D".

Prints where each hit is (file, line, span or metric name, field) and what kind of detail it is,
never the value. Exits 1 on any hit, 2 when nothing was scanned (a check of nothing is no
check), 0 otherwise.

Usage: privacy_check.py DIR [--repo ROOT]
       privacy_check.py --self-test      (plants details in a sample and expects the check to fail)
"""

import argparse
import datetime
import json
import pathlib
import re
import sys
import tempfile

EXCLUDED_KEYS = {
    "traceId", "spanId", "parentSpanId", "trace_id", "span_id",
    "timestamp", "startTimeUnixNano", "endTimeUnixNano", "timeUnixNano",
    "observedTimeUnixNano",
}

NHS_RE = re.compile(r"(?<!\d)999[ -]?\d{3}[ -]?\d{4}(?!\d)")
# The random ids the services make (request ids, 32 hex digits; access and security-event ids,
# `acc-`/`sev-`, the clock in hex, then random hex; key ids; trace context): 16 or more hex digits
# in a row, masked before NHS numbers are looked for. A generated id's hex holds a ten-digit run
# with a valid checksum in the test range about once in 400,000 ids ("...fa9991914870", seen in
# CI): an identifier's randomness, not a child. Anything shorter is searched as written.
HEX_ID_RE = re.compile(r"(?:\b(?:acc|sev)-[0-9a-f]+-)?[0-9A-Fa-f]{16,}")
# A bearer token (a JWT: base64url header, payload and signature): never in telemetry.
TOKEN_RE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.")
# Case ids the test sources write literally (councils' own references for a child).
CASE_RES = [
    re.compile(r'local_case_id\s*[:=]\s*(?:Some\()?"([^"\\]{4,})"'),
    re.compile(r'\\?"local_case_id\\?"\s*:\s*\\?"([^"\\]{4,})\\?"'),
]


def valid_nhs(digits):
    """The NHS number checksum (modulus 11)."""
    if len(digits) != 10 or not digits.isdigit():
        return False
    total = sum(int(d) * (10 - i) for i, d in enumerate(digits[:9]))
    check = 11 - total % 11
    check = 0 if check == 11 else check
    return check != 10 and check == int(digits[9])


# ---------------------------------------------------------------- what the tests sent

NAME_RES = [
    re.compile(r'(?:given_name|family_name)\s*[:=]\s*"([^"\\]*)"'),
    re.compile(r'\\?"(?:given_name|family_name)\\?"\s*:\s*\\?"([^"\\]*)\\?"'),
]
DOB_RES = [
    re.compile(r"date_of_birth\s*[:=]\s*Some\(\s*date\((\d{4}),\s*(\d{1,2}),\s*(\d{1,2})\)"),
    re.compile(r"\bcpp\([^;()]*,\s*date\((\d{4}),\s*(\d{1,2}),\s*(\d{1,2})\)\s*\)"),
    re.compile(r'\\?"date_of_birth\\?"\s*:\s*\\?"(\d{4})-(\d{2})-(\d{2})'),
    re.compile(r"date_of_birth\s*=\s*date\((\d{4}),\s*(\d{1,2}),\s*(\d{1,2})\)"),
]


def sent_details(repo):
    """(names, dates of birth, case ids) the test sources give children."""
    names, dobs, cases = set(), set(), set()
    roots = [repo / p for p in ("testkit", "tests", "bench", "examples")]
    roots += [p / "tests" for p in repo.iterdir() if (p / "tests").is_dir()]
    files = set()
    for root in roots:
        if root.is_dir():
            files.update(f for f in root.rglob("*") if f.suffix in (".rs", ".py", ".csv", ".json"))
    for path in sorted(files):
        if "target" in path.parts or ".tools" in path.parts:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for regex in NAME_RES:
            for name in regex.findall(text):
                if re.fullmatch(r"[A-Za-z][A-Za-z' -]{2,}", name) and not re.fullmatch(r"(.)\1*", name):
                    names.add(name.strip())
        for regex in DOB_RES:
            for y, m, d in regex.findall(text):
                try:
                    dobs.add(datetime.date(int(y), int(m), int(d)))
                except ValueError:
                    pass  # an invalid date a test sends to be refused: stored nowhere
        for regex in CASE_RES:
            cases.update(c for c in regex.findall(text) if re.search(r"[A-Za-z]", c) and re.search(r"\d", c))
        if path.suffix == ".csv":
            # Extracts: the local_case_id column's values.
            import csv
            rows = list(csv.reader(text.splitlines()))
            if rows and "local_case_id" in rows[0]:
                column = rows[0].index("local_case_id")
                cases.update(r[column] for r in rows[1:] if len(r) > column and len(r[column]) >= 4)
    return names, dobs, cases


def dob_forms(day):
    return [
        day.strftime("%Y-%m-%d"),
        day.strftime("%d/%m/%Y"),
        day.strftime("%Y%m%d"),
        f"year: {day.year}, month: {day.month}, day: {day.day}",
    ]


class Detector:
    def __init__(self, names, dobs, cases=()):
        self.cases = re.compile(r"(?<![\w-])(?:" + "|".join(map(re.escape, sorted(cases))) + r")(?![\w-])") if cases else None
        self.names = re.compile(r"\b(?:" + "|".join(map(re.escape, sorted(names))) + r")\b") if names else None
        forms = [f for d in dobs for f in dob_forms(d)]
        self.dobs = re.compile(r"(?<!\d)(?:" + "|".join(map(re.escape, forms)) + r")(?!\d)") if forms else None

    def kinds(self, text):
        found = []
        if any(valid_nhs(re.sub(r"[ -]", "", m)) for m in NHS_RE.findall(HEX_ID_RE.sub("#", text))):
            found.append("NHS number")
        if self.names and self.names.search(text):
            found.append("child's name")
        if self.dobs and self.dobs.search(text):
            found.append("date of birth")
        if self.cases and self.cases.search(text):
            found.append("case id")
        if TOKEN_RE.search(text):
            found.append("token")
        return found


# ---------------------------------------------------------------- what was exported

def walk(value, path):
    """(field path, text) for every string or number in a JSON value, skipping excluded keys."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key in EXCLUDED_KEYS:
                continue
            yield from walk(inner, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from walk(inner, f"{path}[{i}]")
    elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
        yield path, str(value)


def otlp_items(request):
    """(where, field, text) for an OTLP request, where naming the span, metric or log record."""
    for rs in request.get("resourceSpans", []):
        for field, text in walk(rs.get("resource", {}), "resource"):
            yield "resource", field, text
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                where = f"span {span.get('name', '?')!r}"
                for field, text in walk(span, ""):
                    yield where, field, text
    for rm in request.get("resourceMetrics", []):
        for field, text in walk(rm.get("resource", {}), "resource"):
            yield "resource", field, text
        for sm in rm.get("scopeMetrics", []):
            for metric in sm.get("metrics", []):
                where = f"metric {metric.get('name', '?')!r}"
                yield where, "name", metric.get("name", "")
                for kind in ("sum", "gauge", "histogram", "exponentialHistogram", "summary"):
                    for i, point in enumerate(metric.get(kind, {}).get("dataPoints", [])):
                        for field, text in walk(point.get("attributes", []), f"{kind}.dataPoints[{i}].attributes"):
                            yield where, field, text
    for rl in request.get("resourceLogs", []):
        for field, text in walk(rl.get("resource", {}), "resource"):
            yield "resource", field, text
        for sl in rl.get("scopeLogs", []):
            for record in sl.get("logRecords", []):
                for field, text in walk(record, ""):
                    yield "log record", field, text


def check(directory, detector):
    """Returns (hits, counts)."""
    hits, counts = [], {"spans": 0, "metric points": 0, "log lines": 0}
    for path in sorted(directory.iterdir()):
        if not path.is_file():
            continue
        with path.open(encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, 1):
                line = line.rstrip("\n")
                if not line.strip():
                    continue
                if path.name.startswith("otlp") and path.suffix == ".jsonl":
                    try:
                        request = json.loads(line)["request"]
                    except (ValueError, KeyError, TypeError):
                        hits.append((path.name, number, "receiver line", "-", "unreadable export"))
                        continue
                    for rs in request.get("resourceSpans", []):
                        counts["spans"] += sum(len(ss.get("spans", [])) for ss in rs.get("scopeSpans", []))
                    for rm in request.get("resourceMetrics", []):
                        for sm in rm.get("scopeMetrics", []):
                            for metric in sm.get("metrics", []):
                                for kind in ("sum", "gauge", "histogram", "exponentialHistogram", "summary"):
                                    counts["metric points"] += len(metric.get(kind, {}).get("dataPoints", []))
                    items = otlp_items(request)
                else:
                    counts["log lines"] += 1
                    try:
                        parsed = json.loads(line)
                        items = (("log line", f, t) for f, t in walk(parsed, ""))
                    except ValueError:
                        items = [("log line", "text", line)]
                for where, field, text in items:
                    for kind in detector.kinds(text):
                        hits.append((path.name, number, where, field, kind))
    return hits, counts


def run(directory, repo):
    names, dobs, cases = sent_details(repo)
    if not names or not dobs:
        print("privacy check: found no test names or dates of birth in the sources", file=sys.stderr)
        return 2
    hits, counts = check(directory, Detector(names, dobs, cases))
    summary = ", ".join(f"{n} {what}" for what, n in counts.items())
    print(f"privacy check: scanned {summary} for test NHS numbers, tokens, {len(names)} names, {len(dobs)} dates of birth and {len(cases)} case ids")
    if counts["spans"] == 0 or counts["log lines"] == 0:
        print("privacy check: FAILED: nothing exported or logged to scan (is the receiver running? did the capture start?)", file=sys.stderr)
        return 2
    for file, number, where, field, kind in hits[:200]:
        print(f"privacy check: {file}:{number}: {where}, field {field}: a {kind}", file=sys.stderr)
    if hits:
        print(f"privacy check: FAILED: {len(hits)} hits", file=sys.stderr)
        return 1
    print("privacy check: passed")
    return 0


def self_test(repo):
    """Plants a test NHS number in a span attribute and a child's name in a log line, and expects
    the check to find both; then expects a clean sample to pass."""
    names, dobs, cases = sent_details(repo)
    name = "Alex" if "Alex" in names else sorted(names)[0]
    dob = sorted(dobs)[0]
    span = {
        "name": "cpis.registry.v1.CouncilService/PutChildRecord",
        "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
        "spanId": "00f067aa0ba902b7",
        "attributes": [{"key": "request_id", "value": {"stringValue": "r-1"}}],
    }
    clean = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "registry-service"}}]},
                                "scopeSpans": [{"spans": [span]}]}]}
    leaky_span = json.loads(json.dumps(clean))
    leaky_span["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"].append(
        {"key": "nhs", "value": {"stringValue": "999 000 0018"}})
    detector = Detector(names, dobs, cases)
    case = sorted(cases)[0] if cases else None
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        d = pathlib.Path(tmp)
        (d / "otlp.jsonl").write_text(json.dumps({"signal": "traces", "request": clean}) + "\n")
        (d / "1.jsonl").write_text(json.dumps({"timestamp": "2026-01-01", "message": "stored", "la": "AB1"}) + "\n")
        hits, counts = check(d, detector)
        if hits or counts["spans"] != 1 or counts["log lines"] != 1:
            failures.append(f"clean sample: {hits} {counts}")
        (d / "otlp.jsonl").write_text(json.dumps({"signal": "traces", "request": leaky_span}) + "\n")
        planted = {"message": f"stored {name}", "born": dob.isoformat(), "case": case,
                   "auth": "Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"}
        (d / "1.jsonl").write_text(json.dumps(planted) + "\n")
        hits, _ = check(d, detector)
        kinds = {h[4] for h in hits}
        expected = {"NHS number", "child's name", "date of birth", "token"} | ({"case id"} if case else set())
        if kinds != expected:
            failures.append(f"planted sample found only {sorted(kinds)}")
        if not case:
            failures.append("no case ids found in the test sources")
        # An invalid checksum and a number outside the test range are not test NHS numbers.
        if detector.kinds("9990000017 1234567881"):
            failures.append("matched a number that is not a test NHS number")
        # Nor is a valid-looking run inside a generated id's hex (a request id, an access id
        # with one in its clock or its random part, a traceparent) ...
        ids = ("8e9d1da5ea3167f47548fa9991914870 acc-9990000018-1a3605272159877009990000018e06f "
               "sev-661307aa-9990000018fe06fe9 00-04bf92f3577b34da6a3ce9990000018f-00f067aa0ba902b7-01")
        if detector.kinds(ids):
            failures.append("matched digits inside a generated hex identifier")
        # ... while one next to anything else, hex letters and escapes included, is found.
        for text in ('"request_id":"9991914870"', "code9990000018", "%7C9990000018",
                     "NhsNumber(9990000018)", "9990000018abc", "/Patient/999 000 0018"):
            if not detector.kinds(text):
                failures.append(f"missed a test NHS number in {text!r}")
    if run_empty_fails(repo):
        failures.append("an empty directory passed")
    for failure in failures:
        print(f"privacy check self-test: FAILED: {failure}", file=sys.stderr)
    if not failures:
        print("privacy check self-test: passed (planted details found, clean sample passes, empty fails)")
    return 1 if failures else 0


def run_empty_fails(repo):
    """True when the check passes on an empty directory (it must not)."""
    import contextlib
    import io

    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        return run(pathlib.Path(tmp), repo) == 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", nargs="?")
    parser.add_argument("--repo", default=str(pathlib.Path(__file__).resolve().parents[1]))
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    repo = pathlib.Path(args.repo)
    if args.self_test:
        sys.exit(self_test(repo))
    if not args.dir:
        parser.error("DIR is required")
    sys.exit(run(pathlib.Path(args.dir), repo))


if __name__ == "__main__":
    main()
