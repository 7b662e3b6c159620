#!/usr/bin/env bash
# `make wasm-memory`: what the in-process filter costs in memory, per worker VM, with a large
# policy: 10,000 activities (1,000 permissions of 10), 200 roles and USERS users (default
# 100,000), the shape of examples/large_policy.rs, on embedded SQLite. Three Envoys
# (--concurrency 1, so one worker VM each) side by side: plain (envoy/bench/plain.yaml), the
# filter without a bundle (its cluster points at a closed port) and the filter with the
# bundle compiled; the resident memory of each, and the bundle's size. Loopback only.
source "$(dirname "$0")/lib.sh"

USERS=${USERS:-100000}
info=$(machine_info)

python3 - "$USERS" >"$work/policy.yaml" <<'PY'
import sys
users = int(sys.argv[1])
print("permissions:")
print("  public:\n    activities: [GET /healthz]")
for p in range(1000):
    print(f"  svc{p}:use:\n    activities:")
    for a in range(10):
        method = "GET" if a % 2 == 0 else "POST"
        print(f"      - {method} /api/v1/svc{p}/res{a}/[^/]+")
print("roles:")
for r in range(200):
    print(f"  role{r}: [{', '.join(f'svc{(r * 5 + k) % 1000}:use' for k in range(5))}]")
print("users:")
for n in range(users):
    print(f"  - {{email: user{n}@example.com, name: User {n}, roles: [role{n % 200}]}}")
PY

read -r P_PORT P_ADMIN <<<"$(free_ports 2)"
P_CONFIG="$work/portcullis.yaml"
cat >"$P_CONFIG" <<YAML
server: {listen: "127.0.0.1:$P_PORT", admin_listen: "127.0.0.1:$P_ADMIN"}
database: {url: "sqlite://$work/portcullis.db", reload_interval: 1s}
jwt:
  issuer: portcullis-bench
  audience: [portcullis]
  keys:
    - kid: bench-rs256
      algorithm: RS256
      public_key_file: $PWD/$KEYS/rs256.pub.pem
      private_key_file: $PWD/$KEYS/rs256.key.pem
  signing_key: bench-rs256
log: {level: warn}
YAML
pc() { "$P_BIN" --config "$P_CONFIG" "$@"; }
pc migrate >/dev/null
pc policy apply "$work/policy.yaml" >/dev/null
"$P_BIN" --config "$P_CONFIG" serve 2>"$work/portcullis.log" &
pids+=($!)
closed=$(free_ports 1)

start_envoy plain plain
start_envoy wasm empty "$closed"
start_envoy wasm loaded "$P_ADMIN"
for n in plain empty loaded; do wait_for "Envoy $n" 60 envoy_ready "$n"; done
bundle_ready() { [ "$(status_of loaded /healthz)" = 200 ]; }
started=$SECONDS
wait_for "the bundle" 300 bundle_ready
loaded_after=$((SECONDS - started))
[ "$(status_of empty /healthz)" = 503 ] || { echo "the filter without a bundle did not answer 503" >&2; exit 1; }
sleep 2

rss() {
  local pid
  pid=$(pgrep -f -- "-c $work/envoy-$1.yaml" | head -1)
  awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$pid/status"
}
bundle_bytes=$(curl -s "http://127.0.0.1:$P_ADMIN/bundle" | wc -c)
echo
echo "$info"
echo "command:  make wasm-memory (USERS=$USERS)"
echo
echo "| Envoy (--concurrency 1) | resident |"
echo "|---|---|"
echo "| alone (plain.yaml) | $(rss plain) MiB |"
echo "| with the filter, no bundle | $(rss empty) MiB |"
echo "| with the filter and the bundle (10,000 activities, $USERS users) | $(rss loaded) MiB |"
echo
echo "- bundle: $((bundle_bytes / 1024)) KiB of JSON; the filter decided from it ${loaded_after}s after Envoy was ready"
