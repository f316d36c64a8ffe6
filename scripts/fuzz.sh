#!/usr/bin/env bash
#! Builds and runs the cargo-fuzz targets in fuzz/ (libFuzzer), one at a time.
#!   bash scripts/fuzz.sh --smoke              CI: each target for a few seconds from its seeds
#!   bash scripts/fuzz.sh [--runs N] [TARGET…]  long runs: N executions each (default 10,000,000)
#!   bash scripts/fuzz.sh --time S [TARGET…]    or S seconds each
#! Seeds are fuzz/corpus/TARGET (committed); what a run learns goes to fuzz/work/TARGET
#! (git-ignored), so long runs resume from it; crashes land in fuzz/artifacts/TARGET with the
#! command that reproduces them. Exits non-zero when a target crashes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TARGETS_ALL=(record_validator extract_parser token_claims)
SMOKE_SECONDS=10
mode=runs
runs=10000000
seconds=
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) mode=smoke ;;
    --runs) runs="$2"; mode=runs; shift ;;
    --time) seconds="$2"; mode=time; shift ;;
    -h|--help) sed -n 's/^#! \{0,1\}//p' "$0"; exit 0 ;;
    -*) echo "fuzz: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1") ;;
  esac
  shift
done
[ ${#targets[@]} -gt 0 ] || targets=("${TARGETS_ALL[@]}")

bash scripts/tools.sh
export PATH="$ROOT/.tools/cargo/bin:$PATH"

# libFuzzer's instrumentation needs nightly compiler flags: allowed for this command only.
# No sanitizer: the code under test forbids unsafe code, and without ASan each execution is
# several times cheaper; debug assertions (-a) keep overflow checks on.
# The smoke builds without optimisation (a few minutes less of CI on 2 cores; ten seconds of
# slower executions still reach every seed); long runs build optimised.
profile=()
[ "$mode" = smoke ] && profile=(--dev)
fuzz() { RUSTC_BOOTSTRAP=1 cargo fuzz "$1" --sanitizer none --debug-assertions "${profile[@]}" "${@:2}"; }

start=$(date +%s)
fuzz build
echo "fuzz: built in $(( $(date +%s) - start ))s" >&2

status=0
for target in "${targets[@]}"; do
  case "$mode" in
    smoke)
      # A fresh working corpus: the smoke depends only on the committed seeds.
      work="$(mktemp -d)"
      limit=(-max_total_time="$SMOKE_SECONDS") ;;
    time) work="fuzz/work/$target"; limit=(-max_total_time="$seconds") ;;
    runs) work="fuzz/work/$target"; limit=(-runs="$runs") ;;
  esac
  mkdir -p "$work"
  log="$(mktemp)"
  set +e
  # One process, one worker (libFuzzer's default without -jobs): the machine is shared.
  fuzz run "$target" "$work" "fuzz/corpus/$target" -- \
    "${limit[@]}" -max_len=65536 -print_final_stats=1 2>&1 | tee "$log" \
    | grep -Ev '^(#[0-9]|\s*NEW_FUNC|"|#+ .*dictionary|\s*(Compiling|Finished|Running) )' >&2
  code=${PIPESTATUS[0]}
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  if [ "$code" -eq 0 ]; then outcome="no crash"
  elif grep -q 'libFuzzer: run interrupted' "$log"; then outcome="interrupted, no crash"
  else outcome="FAILED (a crash is in fuzz/artifacts/$target, or the build failed)"; fi
  echo "fuzz: $target: ${execs:-?} executions in ${secs:-?} s (${rate:-?} exec/s): $outcome" >&2
  [ "$mode" = smoke ] && rm -rf "$work"
  rm -f "$log"
  [ "$code" -eq 0 ] || status=1
done
exit "$status"
