#!/usr/bin/env bash
# End to end against a real cluster (kind in CI, or any cluster kubectl points at). Needs the
# image `portcullis:dev` loadable by the cluster (kind load docker-image portcullis:dev),
# kubectl, curl, and for `istio` an Istio installed with k8s/overlays/istio/mesh-config.yaml.
#
#   k8s/e2e.sh sidecar   # dev (PostgreSQL + Secret) + sidecar overlays; checks through the pod's Envoy
#   k8s/e2e.sh istio     # dev + istio overlays; checks through the Istio ingress gateway
#   k8s/e2e.sh istio-http
#
# The checks: an allow with portcullis's identity headers, a 401, a 403, and a client's
# spoofed x-auth-* headers replaced. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?usage: k8s/e2e.sh sidecar|istio|istio-http}
KUBECTL=${KUBECTL:-kubectl}
NS=${NS:-default}
PORT=${PORT:-18080}

"$KUBECTL" -n "$NS" apply -k k8s/overlays/dev
"$KUBECTL" -n "$NS" rollout status statefulset/postgres --timeout=180s
"$KUBECTL" -n "$NS" apply -k "k8s/overlays/$mode"
"$KUBECTL" -n "$NS" wait --for=condition=complete job/portcullis-migrate --timeout=180s
"$KUBECTL" -n "$NS" rollout status deployment/portcullis --timeout=180s

case "$mode" in
  sidecar)
    "$KUBECTL" -n "$NS" rollout status deployment/app --timeout=180s
    "$KUBECTL" -n "$NS" port-forward service/app "$PORT:80" >/dev/null 2>&1 &
    ;;
  istio|istio-http)
    "$KUBECTL" -n "$NS" rollout status deployment/echo --timeout=180s
    "$KUBECTL" -n istio-system port-forward service/istio-ingressgateway "$PORT:80" >/dev/null 2>&1 &
    ;;
  *) echo "unknown mode $mode" >&2; exit 64 ;;
esac
forward=$!
trap 'kill "$forward" 2>/dev/null || true' EXIT

base="http://127.0.0.1:$PORT"
for _ in $(seq 60); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "$base/healthz" || true)
  [ "$code" = 200 ] && break
  sleep 2
done
[ "$code" = 200 ] || { echo "never served /healthz (last: $code)" >&2; exit 1; }

# A token minted by portcullis itself, inside the cluster, with the pod's own config.
mint() {
  "$KUBECTL" -n "$NS" exec deployment/portcullis -- \
    portcullis --config /etc/portcullis/portcullis.yaml jwt mint --user "$1"
}
ada=$(mint ada@example.com)
grace=$(mint grace@example.com)

expect() { # expect STATUS CURL_ARGS... ; prints the body
  local want=$1; shift
  local body status
  body=$(mktemp)
  status=$(curl -s -o "$body" -w '%{http_code}' "$@")
  if [ "$status" != "$want" ]; then
    echo "FAIL: $* -> $status, wanted $want: $(cat "$body")" >&2
    exit 1
  fi
  cat "$body"; rm -f "$body"
}

echo "allow"
out=$(expect 200 -H "Authorization: Bearer $ada" "$base/api/v1/roles")
grep -q '"x-auth-email":\["ada@example.com"\]' <<<"$out" || { echo "FAIL: identity headers: $out" >&2; exit 1; }
echo "401"
expect 401 "$base/api/v1/roles" >/dev/null
echo "403"
expect 403 -X POST -H "Authorization: Bearer $grace" "$base/api/v1/roles" >/dev/null
echo "spoofed identity headers"
out=$(expect 200 -H "Authorization: Bearer $grace" -H 'x-auth-roles: admin' \
  -H 'x-auth-permissions: admin' -H 'x-auth-anything: forged' "$base/api/v1/roles")
grep -q '"x-auth-roles":\["viewer"\]' <<<"$out" || { echo "FAIL: x-auth-roles spoofed: $out" >&2; exit 1; }
grep -q '"x-auth-permissions":\["authenticated,public,roles:read"\]' <<<"$out" \
  || { echo "FAIL: x-auth-permissions spoofed: $out" >&2; exit 1; }
if grep -q 'x-auth-anything' <<<"$out"; then echo "FAIL: x-auth-anything reached the app: $out" >&2; exit 1; fi
echo "e2e $mode: ok"
