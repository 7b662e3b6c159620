# Shared by the load harnesses (benches/envoy_load.sh, benches/flood.sh); sourced, not run.
# A private work directory, free loopback ports, a private PostgreSQL cluster, portcullis
# (release) on it, and Envoy from the bench templates in envoy/bench/. Everything started here
# is stopped on exit; nothing outside the work directory is touched.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TARGET_DIR=${CARGO_TARGET_DIR:-target}
ENVOY_BIN=${ENVOY:-.venv/bin/envoy}
KEYS=tests/data/keys

work=$(mktemp -d /tmp/portcullis-load.XXXXXX)
chmod 755 "$work"
pids=()
pg_data=""

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "$pg_data" ]; then as_postgres pg_ctl -D "$pg_data" -m immediate -w stop >/dev/null 2>&1 || true; fi
  if [ -z "${KEEP_WORK:-}" ]; then rm -rf "$work"; else echo "work directory kept: $work" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# PostgreSQL's server programs: on the PATH, else Debian's newest versioned directory.
if ! command -v initdb >/dev/null 2>&1; then
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$pg_bin" ] || { echo "PostgreSQL's server programs are needed: make postgres" >&2; exit 1; }
  PATH="$PATH:$pg_bin"
fi

# The binaries are copied first: the shared target directory may be rebuilt meanwhile.
mkdir -p "$work/bin"
for b in portcullis examples/noop_authz examples/sql_baseline_authz examples/loadgen examples/gen_api_tokens; do
  cp "$TARGET_DIR/release/$b" "$work/bin/"
done
cp "$TARGET_DIR/wasm32-wasip1/wasm/portcullis_wasm.wasm" "$work/bin/"
P_BIN="$work/bin/portcullis"

# N free loopback ports, all distinct.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# Polls a command until it succeeds, for at most $2 seconds.
wait_for() {
  local what=$1 seconds=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then echo "timed out waiting for $what" >&2; return 1; fi
    sleep 0.1
  done
}

# A private cluster on a free port with pg_stat_statements loaded; prints nothing.
start_postgres() {
  PG_PORT=$(free_ports 1)
  local dir="$work/pg"
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
  pg_data="$dir/data"
  as_postgres initdb -D "$pg_data" -A trust -U postgres --no-sync >"$dir/initdb.log" 2>&1
  as_postgres pg_ctl -D "$pg_data" -l "$dir/postgres.log" -w start -o \
    "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir -c fsync=off \
     -c max_connections=200 -c shared_preload_libraries=pg_stat_statements" >/dev/null
  PG_URL="postgres://postgres@127.0.0.1:$PG_PORT"
}

psql_q() { psql -X -q -t -A -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"; }

# portcullis on database $1 of the private cluster, RS256 key, minting enabled. Sets
# P_CONFIG, P_PORT, P_ADMIN; writes $work/portcullis.log.
start_portcullis() {
  local db=$1
  psql_q -c "CREATE DATABASE $db"
  read -r P_PORT P_ADMIN <<<"$(free_ports 2)"
  P_CONFIG="$work/portcullis.yaml"
  cat >"$P_CONFIG" <<YAML
server: {listen: "127.0.0.1:$P_PORT", admin_listen: "127.0.0.1:$P_ADMIN"}
database: {url: "$PG_URL/$db", reload_interval: 1s}
jwt:
  issuer: portcullis-bench
  audience: [portcullis]
  keys:
    - kid: bench-rs256
      algorithm: RS256
      public_key_file: $PWD/$KEYS/rs256.pub.pem
      private_key_file: $PWD/$KEYS/rs256.key.pem
  signing_key: bench-rs256
log: {level: info}
YAML
  "$P_BIN" --config "$P_CONFIG" migrate >/dev/null
  "$P_BIN" --config "$P_CONFIG" policy apply examples/policy.yaml >/dev/null
  "$P_BIN" --config "$P_CONFIG" serve 2>"$work/portcullis.log" &
  pids+=($!)
}

pc() { "$P_BIN" --config "$P_CONFIG" "$@"; }

# Envoy (--concurrency 1) from template envoy/bench/$1.yaml as instance $2, fronting the
# ext_authz server on port $3 (when the template has one). Sets ENVOY_PORT[$2].
declare -A ENVOY_PORT ENVOY_ADMIN
start_envoy() {
  local template=$1 name=$2 authz=${3:-0} listen admin
  read -r listen admin <<<"$(free_ports 2)"
  sed -e "s/@LISTEN_PORT@/$listen/" -e "s/@ADMIN_PORT@/$admin/" -e "s/@AUTHZ_PORT@/$authz/" \
    -e "s#@WASM_FILE@#$work/bin/portcullis_wasm.wasm#" \
    "envoy/bench/$template.yaml" >"$work/envoy-$name.yaml"
  "$ENVOY_BIN" -c "$work/envoy-$name.yaml" --disable-hot-restart --concurrency 1 -l error \
    2>"$work/envoy-$name.log" &
  pids+=($!)
  ENVOY_PORT[$name]=$listen
  ENVOY_ADMIN[$name]=$admin
}

envoy_ready() {
  local name=$1
  curl -fsS "http://127.0.0.1:${ENVOY_ADMIN[$name]}/ready" | grep -q LIVE || return 1
  if grep -q "name: authz" "$work/envoy-$name.yaml"; then
    curl -fsS "http://127.0.0.1:${ENVOY_ADMIN[$name]}/clusters" | grep -q "^authz::.*health_flags::healthy"
  fi
}

# The HTTP status of GET $2 through Envoy instance $1, with extra curl arguments.
status_of() {
  local name=$1 path=$2; shift 2
  curl -s -o /dev/null -w '%{http_code}' "$@" "http://127.0.0.1:${ENVOY_PORT[$name]}$path"
}

# Fails loudly when Envoy instance $1 answers GET $2 with anything but $3.
expect_status() {
  local name=$1 path=$2 want=$3 got; shift 3
  got=$(status_of "$name" "$path" "$@")
  if [ "$got" != "$want" ]; then
    echo "sanity check failed: $name GET $path answered $got, expected $want" >&2
    tail -5 "$work/envoy-$name.log" "$work/portcullis.log" >&2 2>/dev/null || true
    exit 1
  fi
}

# wrk output -> "rps p50_ms p99_ms non2xx requests" (latencies converted to milliseconds).
parse_wrk() {
  python3 -c '
import re, sys
text = sys.stdin.read()
unit = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
def lat(q):
    m = re.search(r"^\s*" + q + r"%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    return float(m.group(1)) * unit[m.group(2)] if m else float("nan")
rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
total = re.search(r"(\d+) requests in", text)
print("%.0f %.3f %.3f %d %d" % (float(rps.group(1)) if rps else 0, lat("50"), lat("99"),
      int(non2xx.group(1)) if non2xx else 0, int(total.group(1)) if total else 0))
'
}

machine_info() {
  echo "date:     $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "machine:  $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr)"
  echo "envoy:    $("$ENVOY_BIN" --version 2>/dev/null | grep -o 'version: [^ ]*' | cut -d/ -f2)"
  echo "rustc:    $(rustc --version 2>/dev/null || echo unknown)"
  echo "wrk:      $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
  echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min, before the run)"
}
