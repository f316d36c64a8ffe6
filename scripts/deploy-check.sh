#!/usr/bin/env bash
#! Static checks of deploy/ and the Dockerfile (no cluster runs here): renders every overlay
#! with kubectl kustomize, validates built-in kinds with kubernetes-validate --strict and the
#! custom resources (CloudNativePG, cert-manager, Prometheus Operator) against their published
#! schemas, then yamllint, hadolint and checkov (zero findings not explained by a
#! checkov.io/skip annotation on the resource). Tools come from scripts/tools.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TOOLS="$ROOT/.tools"
VENV="$TOOLS/deploy-venv/bin"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

command -v kubectl >/dev/null || { echo "deploy-check: kubectl is needed (it renders the overlays with its built-in kustomize)" >&2; exit 1; }

# The custom resource kinds the overlays use: kubernetes-validate has no schema for them, so
# they are validated by scripts/validate_crds.mjs instead (and only they may be skipped here).
CUSTOM_KINDS='Certificate|Issuer|ClusterIssuer|Cluster|ScheduledBackup|PodMonitor|PrometheusRule'

for overlay in deploy/overlays/*/; do
  name="$(basename "$overlay")"
  echo "deploy-check: rendering $name"
  kubectl kustomize "$overlay" > "$OUT/$name.yaml"
  echo "deploy-check: every object in the cpis namespace ($name)"
  "$VENV/python" - "$OUT/$name.yaml" <<'PY'
import sys, yaml
# Objects without a namespace land wherever the operator's kubectl context points.
cluster_scoped = {"Namespace", "ClusterIssuer", "ClusterRole", "ClusterRoleBinding"}
stray = [f"{d['kind']} {d['metadata']['name']}" for d in yaml.safe_load_all(open(sys.argv[1]))
         if d and d["kind"] not in cluster_scoped and d["metadata"].get("namespace") != "cpis"]
if stray:
    sys.exit("deploy-check: not in namespace cpis: " + ", ".join(stray))
PY
  echo "deploy-check: kubernetes-validate --strict ($name)"
  set +e
  "$VENV/kubernetes-validate" --strict "$OUT/$name.yaml" > "$OUT/$name.validate" 2>&1
  status=$?
  set -e
  # A warning is acceptable only for the custom kinds checked below.
  if grep -v -E "^(INFO|WARN) .*(Couldn't find schema for kind ($CUSTOM_KINDS) with api version|passed)" "$OUT/$name.validate" | grep -q .; then
    cat "$OUT/$name.validate" >&2
    echo "deploy-check: kubernetes-validate found problems in $name" >&2
    exit 1
  fi
  if [ "$status" -ne 0 ] && grep -q "^ERROR\|^FAIL" "$OUT/$name.validate"; then
    cat "$OUT/$name.validate" >&2
    exit 1
  fi
  echo "deploy-check: custom resources against published schemas ($name)"
  "$VENV/python" - "$OUT/$name.yaml" "$name" > "$OUT/$name.custom.json" <<'PY'
import json, sys, yaml
path, name = sys.argv[1], sys.argv[2]
# Built-in API groups (kubernetes-validate's); everything else is a custom resource.
builtin = {"", "apps", "batch", "policy", "networking.k8s.io", "autoscaling", "rbac.authorization.k8s.io"}
objects = [d for d in yaml.safe_load_all(open(path)) if d]
group = lambda d: d["apiVersion"].rpartition("/")[0]
custom = [{"source": name, "object": d} for d in objects if group(d) not in builtin]
json.dump(custom, sys.stdout)
PY
  cp scripts/validate_crds.mjs "$TOOLS/deploy-npm/validate_crds.mjs"
  (cd "$TOOLS/deploy-npm" && node validate_crds.mjs < "$OUT/$name.custom.json")
done

echo "deploy-check: the dashboard and alerts name only metrics the services export"
# Every cpis_* series they query (histogram suffixes aside) must be in the README's metric table,
# which a unit test of core::metrics keeps in step with what the code registers.
documented="$(awk '/^## Metrics/,/^## Configuration/' README.md | grep -o 'cpis_[a-z_]*' | sort -u)"
used="$(grep -ho 'cpis_[a-z_]*' deploy/observability/grafana-dashboard.json deploy/observability/prometheus/alerts.yaml \
  | sed -E 's/_(bucket|count|sum)$//' | sort -u)"
missing="$(comm -13 <(echo "$documented") <(echo "$used"))"
if [ -n "$missing" ]; then
  echo "deploy-check: deploy/observability queries metrics the README does not list: $missing" >&2
  exit 1
fi

echo "deploy-check: yamllint"
"$VENV/yamllint" --strict -c .yamllint.yaml deploy .yamllint.yaml

echo "deploy-check: hadolint"
"$VENV/hadolint" Dockerfile

echo "deploy-check: checkov"
# --skip-download and BC_SKIP_MAPPING: offline, no platform calls.
BC_SKIP_MAPPING=TRUE "$VENV/checkov" --quiet --compact --skip-download \
  --framework kubernetes dockerfile \
  $(for f in "$OUT"/*.yaml; do printf -- '-f %s ' "$f"; done) -f Dockerfile \
  | tee "$OUT/checkov.txt"
# Every framework's summary must say "Failed checks: 0" (and there must be summaries).
grep -q "Passed checks:" "$OUT/checkov.txt" \
  || { echo "deploy-check: checkov scanned nothing" >&2; exit 1; }
if grep -E "Failed checks: [1-9]" "$OUT/checkov.txt" > /dev/null; then
  echo "deploy-check: checkov found problems not explained by a checkov.io/skip annotation" >&2
  exit 1
fi
echo "deploy-check: ok"
