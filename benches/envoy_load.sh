#!/usr/bin/env bash
# `make load`: portcullis through real Envoy 1.40 (--concurrency 1), side by side with its
# comparators, in one run, alternating, with the same RS256 Bearer token everywhere:
#   a  Envoy alone                          envoy/bench/plain.yaml
#   b  Envoy's jwt_authn + rbac             envoy/bench/jwt_rbac.yaml (examples/policy.yaml)
#   c  Envoy + the no-op ext_authz server   envoy/bench/ext_authz.yaml -> examples/noop_authz
#   d  Envoy + portcullis, allowed / denied envoy/bench/ext_authz.yaml -> portcullis (release)
#   e  Envoy + per-request SQL baseline     envoy/bench/ext_authz.yaml -> examples/sql_baseline_authz
#   f  Envoy + portcullis in-process        envoy/bench/wasm.yaml (the Wasm filter, bundle from d)
# Every route is a direct response, so only Envoy and the authorization differ. wrk drives
# GET /api/v1/roles (the denied case sends no credential: a 401); then, without Envoy, the
# in-repo gRPC generator (examples/loadgen) drives Check on the no-op server and portcullis.
# portcullis and the baseline use a private PostgreSQL cluster on a temp dir. Loopback only;
# every run is bounded. Prints a table with requests/s, p50 and p99 per case and the ratios
# d/c, d/b, d/e, f/b, f/d; writes it to target/load-report.md too, with the resident memory of
# Envoy with the filter (f) beside Envoy alone (a).
#
# Environment: DURATION (10s per case), WARMUP (2s), THREADS (1), CONNECTIONS (32),
# ROUNDS (1: a..e once; more rounds alternate again and report medians), GRPC (1: run the
# loadgen part; 0 skips it), GRPC_CONCURRENCY (32), KEEP_WORK (keep the temp dir).
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
THREADS=${THREADS:-1}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-1}
GRPC=${GRPC:-1}
GRPC_CONCURRENCY=${GRPC_CONCURRENCY:-32}
REPORT=${LOAD_REPORT:-target/load-report.md}

info=$(machine_info)
start_postgres
psql_q -c "CREATE DATABASE baseline"
start_portcullis portcullis
read -r NOOP_PORT SQL_PORT <<<"$(free_ports 2)"
"$work/bin/noop_authz" "127.0.0.1:$NOOP_PORT" 2>"$work/noop.log" &
pids+=($!)
"$work/bin/sql_baseline_authz" --listen "127.0.0.1:$SQL_PORT" \
  --database-url "$PG_URL/baseline" --public-key "$KEYS/rs256.pub.pem" --kid bench-rs256 \
  --issuer portcullis-bench --audience portcullis 2>"$work/sql.log" &
pids+=($!)

TOKEN=$(pc jwt mint --user ada@example.com --ttl 2h)
AUTH="Authorization: Bearer $TOKEN"

start_envoy plain a
start_envoy jwt_rbac b
start_envoy ext_authz c "$NOOP_PORT"
start_envoy ext_authz d "$P_PORT"
start_envoy ext_authz e "$SQL_PORT"
start_envoy wasm f "$P_ADMIN"
for n in a b c d e f; do wait_for "Envoy $n" 60 envoy_ready "$n"; done
# The filter answers 503 until its first bundle has arrived.
bundle_ready() { [ "$(status_of f /healthz)" = 200 ]; }
wait_for "the in-process bundle" 30 bundle_ready

# The configurations enforce what they claim before anything is measured.
for n in a b c d e f; do expect_status "$n" /api/v1/roles 200 -H "$AUTH"; done
for n in b d e f; do
  expect_status "$n" /api/v1/roles 401
  expect_status "$n" /api/v1/roles/42 403 -X DELETE -H "$AUTH"
  expect_status "$n" /healthz 200
done

declare -A LABEL=(
  [a]="a  Envoy alone (direct response)"
  [b]="b  Envoy jwt_authn + rbac"
  [c]="c  Envoy + no-op ext_authz (ceiling)"
  [d]="d  Envoy + portcullis, allowed"
  [d-deny]="d  Envoy + portcullis, denied (401)"
  [e]="e  Envoy + per-request SQL baseline"
  [f]="f  Envoy + portcullis in-process (Wasm)"
  [f-deny]="f  Envoy + portcullis in-process, denied"
)
CASES=(a b c d d-deny e f f-deny)

# Resident memory of Envoy instance $1, MiB.
rss_of() {
  local pid
  pid=$(pgrep -f -- "-c $work/envoy-$1.yaml" | head -1)
  awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$pid/status"
}
results="$work/results"
: >"$results"
run_case() {
  local round=$1 case=$2 name=${2%-deny} header=()
  [ "$case" = "$name" ] && header=(-H "$AUTH")
  local url="http://127.0.0.1:${ENVOY_PORT[$name]}/api/v1/roles"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "${header[@]}" "$url" >/dev/null
  local out
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "${header[@]}" "$url")
  echo "$round $case $(parse_wrk <<<"$out")" >>"$results"
  printf '  round %s  %-40s %s\n' "$round" "${LABEL[$case]}" "$(tail -1 "$results" | cut -d' ' -f3-)"
}

echo "== through Envoy: wrk -t$THREADS -c$CONNECTIONS -d$DURATION (warm-up $WARMUP), $ROUNDS round(s)"
echo "   columns: requests/s p50_ms p99_ms non-2xx requests"
for round in $(seq 1 "$ROUNDS"); do
  for case in "${CASES[@]}"; do run_case "$round" "$case"; done
done

grpc_results="$work/grpc-results"
: >"$grpc_results"
if [ "$GRPC" = 1 ]; then
  echo "== direct gRPC, no Envoy: examples/loadgen --concurrency $GRPC_CONCURRENCY --duration $DURATION"
  loadgen() {
    local label=$1; shift
    local out
    out=$("$work/bin/loadgen" --duration "$DURATION" --warmup "$WARMUP" \
      --concurrency "$GRPC_CONCURRENCY" --jwt "$TOKEN" --result-line "$@")
    local line
    line=$(grep '^RESULT' <<<"$out" | sed 's/^RESULT //')
    echo "$label|$*|$line" >>"$grpc_results"
    printf '  %-44s %s\n' "$label" "$line"
  }
  loadgen "no-op server, max rate" --target "127.0.0.1:$NOOP_PORT" --rate max --mix jwt-header
  noop_rps=$(tail -1 "$grpc_results" | grep -o 'rps=[0-9]*' | cut -d= -f2)
  loadgen "portcullis, allowed (jwt-header), max rate" --target "127.0.0.1:$P_PORT" --rate max --mix jwt-header
  loadgen "per-request SQL baseline, allowed, max rate" --target "127.0.0.1:$SQL_PORT" --rate max --mix jwt-header
  loadgen "portcullis, denied (deny-401), max rate" --target "127.0.0.1:$P_PORT" --rate max --mix deny-401
  loadgen "portcullis, mixed (all but api-token), max" --target "127.0.0.1:$P_PORT" --rate max --mix all
  half=$((noop_rps / 2))
  if [ "$half" -gt 0 ]; then
    loadgen "portcullis, allowed, at half the no-op rate" --target "127.0.0.1:$P_PORT" --rate "$half" --mix jwt-header
  fi
fi

mkdir -p "$(dirname "$REPORT")"
RSS="Envoy alone $(rss_of a) MiB, Envoy with the filter $(rss_of f) MiB (one worker VM, examples/policy.yaml)" \
INFO=$info python3 - "$results" "$grpc_results" "$DURATION" "$THREADS" "$CONNECTIONS" "$ROUNDS" <<'PY' | tee "$REPORT"
import os, statistics, sys
results, grpc, duration, threads, conns, rounds = sys.argv[1:7]
labels = {
    "a": "a. Envoy alone (direct response)",
    "b": "b. Envoy built-in jwt_authn + rbac",
    "c": "c. Envoy + no-op ext_authz (protocol ceiling)",
    "d": "d. Envoy + portcullis, allowed",
    "d-deny": "d. Envoy + portcullis, denied (401)",
    "e": "e. Envoy + per-request SQL baseline",
    "f": "f. Envoy + portcullis in-process (Wasm filter)",
    "f-deny": "f. Envoy + portcullis in-process, denied (401)",
}
rows = {}
for line in open(results):
    rnd, case, rps, p50, p99, non2xx, total = line.split()
    rows.setdefault(case, []).append((float(rps), float(p50), float(p99), int(non2xx), int(total)))
med = {c: tuple(statistics.median(v[i] for v in rs) for i in range(3)) for c, rs in rows.items()}
print()
print(os.environ["INFO"])
print(f"command:  make load (wrk -t{threads} -c{conns} -d{duration}, {rounds} round(s), median shown)")
print()
print("| configuration | requests/s | p50 | p99 | non-2xx |")
print("|---|---|---|---|---|")
for case in ["a", "b", "c", "d", "d-deny", "e", "f", "f-deny"]:
    if case in med:
        rps, p50, p99 = med[case]
        bad = sum(r[3] for r in rows[case])
        tot = sum(r[4] for r in rows[case])
        print(f"| {labels[case]} | {rps:,.0f} | {p50:.2f} ms | {p99:.2f} ms | {bad:,} of {tot:,} |")
print()
def ratio(x, y, what):
    if x in med and y in med and med[y][0] > 0:
        print(f"- {what}: {med[x][0] / med[y][0]:.2f}x throughput, p99 {med[x][2]:.2f} / {med[y][2]:.2f} ms = {med[x][2] / med[y][2]:.2f}x")
ratio("d", "c", "d/c allowed vs no-op ceiling")
ratio("d-deny", "c", "d/c denied vs no-op ceiling")
ratio("d", "b", "d/b allowed vs jwt_authn + rbac")
ratio("d", "e", "d/e allowed vs per-request SQL")
ratio("c", "a", "c/a no-op ext_authz vs Envoy alone")
ratio("f", "b", "f/b in-process vs jwt_authn + rbac")
ratio("f", "d", "f/d in-process vs ext_authz sidecar")
ratio("f", "a", "f/a in-process vs Envoy alone")
if os.environ.get("RSS"):
    print(f"- resident memory after the run: {os.environ['RSS']}")
lines = [l.rstrip("\n").split("|") for l in open(grpc) if l.strip()]
if lines:
    print()
    print("Direct gRPC, no Envoy (examples/loadgen, one HTTP/2 connection):")
    print()
    print("| server, load | requests/s | p50 | p90 | p99 | p99.9 | errors / mismatched |")
    print("|---|---|---|---|---|---|---|")
    for label, args, result in lines:
        kv = dict(p.split("=") for p in result.split())
        print(f"| {label} | {float(kv['rps']):,.0f} | {kv['p50_ms']} ms | {kv['p90_ms']} ms | {kv['p99_ms']} ms | {kv['p999_ms']} ms | {kv['errors']} / {kv['mismatched']} |")
    rps = {label.split(",")[0] + "," + label.split(",")[1]: float(dict(p.split("=") for p in r.split())["rps"]) for label, _, r in lines if label.count(",") >= 1}
    def direct(x, y, what):
        if x in rps and y in rps and rps[y] > 0:
            print(f"- {what}: {rps[x] / rps[y]:.2f}x throughput")
    print()
    direct("portcullis, allowed (jwt-header)", "no-op server, max rate", "direct allowed vs no-op server")
    direct("portcullis, denied (deny-401)", "no-op server, max rate", "direct denied vs no-op server")
    direct("portcullis, allowed (jwt-header)", "per-request SQL baseline, allowed", "direct allowed vs per-request SQL")
PY
