#!/usr/bin/env bash
#! The project's test command: installs what the tests need (third-party tools into .tools/,
#! PostgreSQL if it is not running) and runs every test of the workspace.
#! Extra arguments go to `cargo test` (for example a test name filter).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/tools.sh
bash scripts/postgres.sh
export CPIS_TOOLS="$ROOT/.tools"
export CPIS_TEST_DATABASE_URL="${CPIS_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
set +e
cargo test --workspace --all-targets --locked "$@" 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole workspace (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;/) p += $i; if ($(i+1) ~ /^failed;/) f += $i; if ($(i+1) ~ /^ignored;/) s += $i } }
     END { printf "workspace: %d passed, %d failed, %d skipped\n", p, f, s }' "$LOG"
exit "$status"
