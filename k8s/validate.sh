#!/usr/bin/env bash
# Renders every overlay with `kubectl kustomize` and validates every object offline (and lints
# the Dockerfile and the kind workflow, below):
# Kubernetes kinds with kubernetes-validate --strict (no unknown fields; a kind it has no
# schema for is a failure), Istio kinds with k8s/validate/istio.mjs (Istio's CRD schemas).
# Also checks that the files copied into overlays are the shipped ones. `make manifests`
# installs the tools (into .venv and k8s/validate/node_modules) and runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
KUBECTL=${KUBECTL:-.venv/bin/kubectl}
VALIDATE=${KUBERNETES_VALIDATE:-.venv/bin/kubernetes-validate}
out=target/k8s
mkdir -p "$out"

# Copies a cluster gets must be the files the tests run.
cmp envoy/envoy.yaml k8s/overlays/sidecar/envoy.yaml
cmp examples/policy.yaml k8s/base/policy.yaml

for overlay in base overlays/dev overlays/sidecar overlays/istio overlays/istio-http overlays/istio-wasm; do
  name=${overlay##*/}
  "$KUBECTL" kustomize "k8s/$overlay" > "$out/$name.yaml"
  log=$("$VALIDATE" --strict "$out/$name.yaml" 2>&1) || { echo "$log" >&2; exit 1; }
  # Only Istio kinds may go without a Kubernetes schema; istio.mjs checks those.
  if grep -v 'istio.io/' <<<"$log" | grep -q "Couldn't find schema"; then
    echo "$log" >&2
    echo "k8s/$overlay: an object with no schema" >&2
    exit 1
  fi
  echo "k8s/$overlay: $(grep -c ' passed for resource ' <<<"$log") Kubernetes objects valid"
done
node k8s/validate/istio.mjs "$out/istio.yaml" "$out/istio-http.yaml" "$out/istio-wasm.yaml" k8s/overlays/istio/mesh-config.yaml

# The image and the kind workflow, offline: hadolint on the Dockerfile, the workflow against
# GitHub's workflow schema (SchemaStore's, vendored by check-jsonschema), the e2e script's syntax.
.venv/bin/hadolint Dockerfile
echo "Dockerfile: hadolint clean"
.venv/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/kind.yaml
bash -n k8s/e2e.sh
