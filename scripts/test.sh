#!/usr/bin/env bash
#! The project's test command: installs what the tests need (third-party tools into .tools/,
#! PostgreSQL if it is not running) and runs every test of the workspace.
#! Extra arguments go to `cargo test` (for example a test name filter).
#! The privacy check runs over the whole suite: an OTLP receiver collects every span (and metric)
#! the servers export while the tests run, test processes copy their log lines to a directory,
#! and scripts/privacy_check.py then searches all of it for the NHS numbers, names and dates of
#! birth the tests sent; any hit (or nothing scanned) fails the run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/tools.sh
bash scripts/postgres.sh
export CPIS_TOOLS="$ROOT/.tools"
export CPIS_TEST_DATABASE_URL="${CPIS_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

PYTHON="${CPIS_TOOLS}/venv/bin/python"
LOG="$(mktemp)"
export CPIS_TEST_LOG_DIR="$(mktemp -d)"
RECEIVER_PID=""
cleanup() {
  if [ -n "$RECEIVER_PID" ]; then kill "$RECEIVER_PID" 2>/dev/null || true; wait "$RECEIVER_PID" 2>/dev/null || true; fi
  rm -f "$LOG"
  # Kept when the privacy check failed, so its hits can be looked at.
  if [ "${privacy:-0}" -eq 0 ]; then rm -rf "$CPIS_TEST_LOG_DIR"; else echo "test.sh: exported spans and logs kept in $CPIS_TEST_LOG_DIR" >&2; fi
}
trap cleanup EXIT

# The checker must catch what it is meant to catch before its verdict on the suite counts.
"$PYTHON" scripts/privacy_check.py --self-test

# The suite's collector, bounded to two hours; its port is on its first line of output.
PORT_FILE="$CPIS_TEST_LOG_DIR/receiver.port"
"$PYTHON" tests/python/otlp_receiver.py "$CPIS_TEST_LOG_DIR/otlp.jsonl" --max-seconds 7200 >"$PORT_FILE" &
RECEIVER_PID=$!
for _ in $(seq 100); do grep -q '^port ' "$PORT_FILE" 2>/dev/null && break; sleep 0.1; done
PORT="$(sed -n 's/^port //p' "$PORT_FILE")"
[ -n "$PORT" ] || { echo "test.sh: the OTLP receiver did not start" >&2; exit 1; }
rm -f "$PORT_FILE"
# Every server the tests start (in-process through testkit, or a binary) exports here, quickly.
export OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$PORT"
export OTEL_BSP_SCHEDULE_DELAY=100
# Metrics every half second (the default is a minute, longer than most test processes live),
# so their labels reach the receiver and the privacy check too.
export OTEL_METRIC_EXPORT_INTERVAL=500

set +e
cargo test --workspace --all-targets --locked "$@" 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
set -e
# The last batches of spans reach the receiver, then it stops (its file is complete).
sleep 1
kill "$RECEIVER_PID" 2>/dev/null || true
wait "$RECEIVER_PID" 2>/dev/null || true
RECEIVER_PID=""
set +e
"$PYTHON" scripts/privacy_check.py "$CPIS_TEST_LOG_DIR"
privacy=$?
set -e
if [ "$status" -eq 0 ] && [ "$privacy" -ne 0 ]; then status=$privacy; fi
# One closing line for the whole workspace (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;/) p += $i; if ($(i+1) ~ /^failed;/) f += $i; if ($(i+1) ~ /^ignored;/) s += $i } }
     END { printf "workspace: %d passed, %d failed, %d skipped\n", p, f, s }' "$LOG"
exit "$status"
