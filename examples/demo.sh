#!/usr/bin/env bash
# `make demo`: portcullis + header-echo upstream + Envoy on their default ports, then curl
# lines that show an allow, a 401 and a 403. Stays up until Ctrl-C (DEMO_EXIT=1: stop after).
set -euo pipefail
cd "$(dirname "$0")/.."
PORTCULLIS="target/debug/portcullis --config examples/portcullis.yaml"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

$PORTCULLIS serve 2> target/dev/portcullis.log & pids+=($!)
target/debug/examples/echo_upstream 127.0.0.1:8080 2> target/dev/echo.log & pids+=($!)
.venv/bin/envoy -c envoy/envoy.yaml --disable-hot-restart -l warning 2> target/dev/envoy.log & pids+=($!)

for _ in $(seq 1 100); do
  if curl -fsS http://127.0.0.1:9901/ready >/dev/null 2>&1 && curl -fsS -o /dev/null http://127.0.0.1:10000/healthz 2>/dev/null; then
    break
  fi
  sleep 0.1
done

ADA=$($PORTCULLIS jwt mint --user ada@example.com)
GRACE=$($PORTCULLIS jwt mint --user grace@example.com)
show() { echo; echo "\$ $*"; eval "$@" || true; echo; }

echo "== allow: Ada (admin) reads roles; the upstream echoes the x-auth-* headers it received"
show 'curl -sS -H "Authorization: Bearer $ADA" http://127.0.0.1:10000/api/v1/roles'
echo "== 401: no credential"
show 'curl -sS -i http://127.0.0.1:10000/api/v1/roles'
echo "== 403: Grace (viewer) may not create a role"
show 'curl -sS -i -X POST -H "Authorization: Bearer $GRACE" http://127.0.0.1:10000/api/v1/roles'
echo "== a forged x-auth-permissions header never reaches the upstream"
show 'curl -sS -H "Authorization: Bearer $GRACE" -H "x-auth-permissions: admin" http://127.0.0.1:10000/api/v1/roles'

if [ "${DEMO_EXIT:-0}" = 1 ]; then exit 0; fi
echo "Envoy on :10000, portcullis on :9001, echo upstream on :8080. Ctrl-C to stop."
echo "  export ADA=$ADA"
wait
