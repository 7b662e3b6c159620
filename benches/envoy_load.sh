#!/usr/bin/env bash
# Load through real Envoy: wrk against the shipped envoy/envoy.yaml, with portcullis (release)
# and the echo upstream behind it, on loopback only, bounded in time. `make load`.
# Prints requests/s and latency for: the upstream alone, an allowed request (cached JWT),
# and a denied one (no credential, 401). Figures go to BENCHMARKS.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM

head -c 48 /dev/urandom | base64 > "$work/secret"
cat > "$work/portcullis.yaml" <<YAML
server: {listen: "127.0.0.1:9001", admin_listen: null}
database: {url: "sqlite://$work/p.db"}
jwt:
  keys: [{kid: load, algorithm: HS256, secret_file: "$work/secret"}]
  signing_key: load
log: {level: warn}
YAML
P="target/release/portcullis --config $work/portcullis.yaml"
$P migrate >/dev/null
$P policy apply examples/policy.yaml >/dev/null
TOKEN=$($P jwt mint --user ada@example.com)
$P serve & pids+=($!)
target/release/examples/echo_upstream 127.0.0.1:8080 2>/dev/null & pids+=($!)
.venv/bin/envoy -c envoy/envoy.yaml --disable-hot-restart --concurrency 1 -l error & pids+=($!)
# The same Envoy without the ext_authz filter, on 10001 (admin 9902): the cost of Envoy alone.
python3 - "$work/plain.yaml" <<'PY'
import re, sys
text = open("envoy/envoy.yaml").read()
text = re.sub(r"\n          - name: envoy\.filters\.http\.ext_authz.*?(?=\n          - name: envoy\.filters\.http\.router)", "", text, flags=re.S)
text = text.replace("port_value: 10000", "port_value: 10001").replace("port_value: 9901", "port_value: 9902")
assert "ext_authz" not in text.split("clusters:")[0].split("http_filters:")[1]
open(sys.argv[1], "w").write(text)
PY
.venv/bin/envoy -c "$work/plain.yaml" --disable-hot-restart --concurrency 1 -l error --base-id 7 & pids+=($!)
for _ in $(seq 1 200); do
  curl -fsS -o /dev/null -H "Authorization: Bearer $TOKEN" http://127.0.0.1:10000/api/v1/roles 2>/dev/null && break
  sleep 0.1
done

run() { echo "== $1"; shift; wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$@" | grep -E "Requests/sec|Latency|50%|99%|Non-2xx"; }
run "upstream alone (no Envoy)" http://127.0.0.1:8080/api/v1/roles
for _ in $(seq 1 100); do curl -fsS -o /dev/null http://127.0.0.1:10001/api/v1/roles 2>/dev/null && break; sleep 0.1; done
run "Envoy alone (no ext_authz)" http://127.0.0.1:10001/api/v1/roles
run "Envoy + portcullis, allowed (cached JWT)" -H "Authorization: Bearer $TOKEN" http://127.0.0.1:10000/api/v1/roles
run "Envoy + portcullis, denied (401, no credential)" http://127.0.0.1:10000/api/v1/roles
