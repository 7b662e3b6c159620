#!/usr/bin/env bash
# `make flood` (and the end of `make load`): a flood of distinct random well-formed API tokens
# (examples/gen_api_tokens: pass the format and checksum checks, were never issued) sent
# through Envoy to portcullis on a private PostgreSQL cluster, with one `portcullis token
# revoke` every second, while a wrk allowed load (RS256 Bearer JWT) runs. Reports the
# database queries for API tokens during the flood (pg_stat_statements, and portcullis' own
# store-lookup counter) and the allowed requests' latency before and during the flood.
#
# Environment: DURATION (10s: the flood, and the allowed run before it), WARMUP (2s),
# FLOOD_TOKENS (10000), CONNECTIONS (32, the allowed load), FLOOD_CONNECTIONS (16),
# KEEP_WORK (keep the temp dir).
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
FLOOD_TOKENS=${FLOOD_TOKENS:-10000}
CONNECTIONS=${CONNECTIONS:-32}
FLOOD_CONNECTIONS=${FLOOD_CONNECTIONS:-16}
REPORT=${FLOOD_REPORT:-target/flood-report.md}
secs=$(python3 -c 'import re,sys; m=re.fullmatch(r"(\d+)(s|m)?", sys.argv[1]); print(int(m.group(1)) * (60 if m.group(2) == "m" else 1))' "$DURATION")

info=$(machine_info)
start_postgres
start_portcullis portcullis
psql_q -d portcullis -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"
TOKEN=$(pc jwt mint --user ada@example.com --ttl 2h)
AUTH="Authorization: Bearer $TOKEN"

# Issued tokens to revoke during the flood (one a second), and one that stays valid.
ids=() secrets=()
for i in $(seq 0 "$secs"); do
  secret=$(pc token issue --user ada@example.com --label "flood-$i" 2>"$work/issue.err")
  ids+=("$(grep -o 'tok_[A-Za-z0-9]*' "$work/issue.err" | head -1)")
  secrets+=("$secret")
done
"$work/bin/gen_api_tokens" "$FLOOD_TOKENS" >"$work/tokens.txt"

start_envoy ext_authz d "$P_PORT"
wait_for "Envoy" 60 envoy_ready d
expect_status d /api/v1/roles 200 -H "$AUTH"
expect_status d /api/v1/roles 200 -H "x-api-token: ${secrets[$secs]}"
expect_status d /api/v1/roles 401 -H "x-api-token: $(head -1 "$work/tokens.txt")"

url="http://127.0.0.1:${ENVOY_PORT[d]}/api/v1/roles"
lookups() {
  pc status --admin "127.0.0.1:$P_ADMIN" 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin).get("api_token_store_lookups", "n/a"))' ||
    echo n/a
}

echo "== allowed load alone: wrk -t1 -c$CONNECTIONS -d$DURATION"
wrk -t1 -c"$CONNECTIONS" -d"$WARMUP" -H "$AUTH" "$url" >/dev/null
before=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -H "$AUTH" "$url" | parse_wrk)
echo "   $before"

psql_q -d portcullis -c "SELECT pg_stat_statements_reset()" >/dev/null
lookups_before=$(lookups)

echo "== flood: $FLOOD_TOKENS random tokens (wrk -t1 -c$FLOOD_CONNECTIONS) + a revoke a second + allowed load, $DURATION"
wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -H "$AUTH" "$url" >"$work/allowed.out" &
allowed_pid=$!
pids+=($allowed_pid)
wrk -t1 -c"$FLOOD_CONNECTIONS" -d"$DURATION" --latency -s benches/flood.lua "$url" -- "$work/tokens.txt" >"$work/flood.out" &
flood_pid=$!
pids+=($flood_pid)
t0=$(date +%s%N)
revoked=0
for ((k = 0; k < secs; k++)); do
  pc token revoke "${ids[$k]}" >/dev/null
  revoked=$((revoked + 1))
  while (($(date +%s%N) < t0 + (k + 1) * 1000000000)); do sleep 0.05; done
done
wait "$allowed_pid" "$flood_pid"

lookups_after=$(lookups)
during=$(parse_wrk <"$work/allowed.out")
flood=$(parse_wrk <"$work/flood.out")
psql_q -d portcullis -F '|' -c "SELECT calls, regexp_replace(query, '\s+', ' ', 'g') FROM pg_stat_statements WHERE query ILIKE '%api_tokens%' ORDER BY calls DESC" >"$work/statements"
digest_lookups=$(python3 -c '
import sys
print(sum(int(l.split("|", 1)[0]) for l in open(sys.argv[1]) if "digest = $1" in l and l.split("|", 1)[1].lstrip().upper().startswith("SELECT")))' "$work/statements")

# The revocations were enforced: the first revoked token is refused, the kept one allowed.
sleep 1.5
expect_status d /api/v1/roles 401 -H "x-api-token: ${secrets[0]}"
expect_status d /api/v1/roles 200 -H "x-api-token: ${secrets[$secs]}"

mkdir -p "$(dirname "$REPORT")"
{
  echo
  echo "$info"
  echo "command:  make flood (DURATION=$DURATION FLOOD_TOKENS=$FLOOD_TOKENS; allowed wrk -t1 -c$CONNECTIONS, flood wrk -t1 -c$FLOOD_CONNECTIONS)"
  echo
  echo "| load | requests/s | p50 | p99 | non-2xx of requests |"
  echo "|---|---|---|---|---|"
  read -r rps p50 p99 bad total <<<"$before"
  echo "| allowed (Bearer RS256 JWT), alone | $rps | $p50 ms | $p99 ms | $bad of $total |"
  read -r rps p50 p99 bad total <<<"$during"
  echo "| allowed, during the flood and revocations | $rps | $p50 ms | $p99 ms | $bad of $total |"
  read -r rps p50 p99 bad total <<<"$flood"
  flood_total=$total
  echo "| flood: random well-formed API tokens | $rps | $p50 ms | $p99 ms | $bad of $total |"
  echo
  distinct=$((flood_total < FLOOD_TOKENS ? flood_total : FLOOD_TOKENS))
  echo "- flood requests: $flood_total, distinct tokens: $distinct (the file of $FLOOD_TOKENS is cycled); revocations: $revoked"
  echo "- api_tokens lookups by digest on PostgreSQL during the flood (pg_stat_statements): $digest_lookups"
  echo "- portcullis' store-lookup counter (/status api_token_store_lookups): $lookups_before -> $lookups_after"
  echo "- every statement on api_tokens during the flood (calls | query):"
  sed 's/^/    /' "$work/statements"
} | tee "$REPORT"
