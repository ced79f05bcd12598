#!/usr/bin/env bash
# The deployment checkers, at pinned versions, built from the Go module proxy into the cache:
# helm (renders the chart), kubeconform (validates manifests against the Kubernetes and KEDA
# schemas), promtool (checks the alert rules). hadolint and the Kubernetes JSON schemas are
# Python packages in requirements.lock. KEDA's CRDs come from its Go module, and are turned into
# the JSON schemas kubeconform reads by crd_schemas.py.
#
#   deploy/tools/install.sh      install what is missing; print the directory to put on PATH
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"

HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.8.0
PROMETHEUS_VERSION=v0.316.0 # the Go module version of Prometheus 3.x, whose cmd/promtool we build
KEDA_VERSION=v2.21.0
KUBERNETES_VERSION=1.33.0 # the schemas manifests are validated against

TOOLS="$PACKLINE_CACHE_DIR/deploy-tools"
BIN="$TOOLS/bin"
mkdir -p "$BIN"
command -v go >/dev/null || die "Go is needed to build the deployment checkers (helm, kubeconform, promtool)"

build() {
  local name=$1 package=$2 version=$3
  [[ -x "$BIN/$name" && -f "$BIN/.$name-$version" ]] && return 0
  log "building $name $version from the Go module proxy (once; cached in $BIN)"
  GOBIN="$BIN" GOFLAGS=-mod=mod CGO_ENABLED=0 go install "$package@$version" >&2
  rm -f "$BIN/.$name-"* && touch "$BIN/.$name-$version"
}

build helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION"
build kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION"
build promtool github.com/prometheus/prometheus/cmd/promtool "$PROMETHEUS_VERSION"

SCHEMAS="$TOOLS/keda-$KEDA_VERSION"
if [[ ! -f "$SCHEMAS/.complete" ]]; then
  log "fetching KEDA $KEDA_VERSION's CRDs from its Go module"
  dir=$(GOFLAGS=-mod=mod go mod download -json "github.com/kedacore/keda/v2@$KEDA_VERSION" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
  mkdir -p "$SCHEMAS"
  "$PACKLINE_ROOT/.venv/bin/python" "$PACKLINE_ROOT/deploy/tools/crd_schemas.py" "$SCHEMAS" "$dir"/config/crd/bases/*.yaml
  touch "$SCHEMAS/.complete"
fi
ln -sfn "$SCHEMAS" "$TOOLS/keda-schemas"

# Kubernetes' own strict schemas come from the kubernetes-validate package (requirements.lock),
# made standalone for kubeconform by k8s_schemas.py.
K8S="$TOOLS/kubernetes-schemas/v$KUBERNETES_VERSION"
if [[ ! -f "$K8S/.complete" ]]; then
  source_dir=$("$PACKLINE_ROOT/.venv/bin/python" -c 'import kubernetes_validate, os; print(os.path.dirname(kubernetes_validate.__file__))')/kubernetes-json-schema/v$KUBERNETES_VERSION-local-strict
  [[ -d "$source_dir" ]] || die "no Kubernetes $KUBERNETES_VERSION schemas in kubernetes-validate; run deploy/packline setup"
  rm -rf "$K8S"
  "$PACKLINE_ROOT/.venv/bin/python" "$PACKLINE_ROOT/deploy/tools/k8s_schemas.py" "$source_dir" "$K8S"
  touch "$K8S/.complete"
fi
echo "$BIN"
