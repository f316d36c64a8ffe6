#!/usr/bin/env bash
#! Contract checks with buf: lint (STANDARD), formatting, and breaking changes against the
#! released baseline image proto/baseline.binpb and, when CPIS_BREAKING_AGAINST names a git ref
#! (for example a pull request's base, "main"), against the contracts at that ref too.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/tools.sh
BUF="$ROOT/.tools/npm/node_modules/.bin/buf"

"$BUF" lint
"$BUF" format -d --exit-code
"$BUF" breaking --against proto/baseline.binpb
if [ -n "${CPIS_BREAKING_AGAINST:-}" ]; then
  "$BUF" breaking --against ".git#ref=${CPIS_BREAKING_AGAINST}"
fi
echo "proto: lint, format and breaking checks passed"
