#!/usr/bin/env bash
# One fuzz target for SECONDS on its corpus (fuzz/corpus, not committed) and its seeds and
# regression inputs (fuzz/seeds), as `make fuzz` runs each (several at once):
#   run-target.sh TARGET SECONDS MAX_LEN CARGO...      (FUZZ_BUILD=--dev for the smoke)
# A crash leaves the input in fuzz/artifacts/TARGET and exits 255, which stops xargs.
set -uo pipefail
cd "$(dirname "$0")"
target=$1 seconds=$2 max_len=$3
shift 3
mkdir -p "corpus/$target" "seeds/$target" ../target
log="../target/fuzz-$target.log"
# shellcheck disable=SC2086 # FUZZ_BUILD is empty or one flag
if ! "$@" fuzz run ${FUZZ_BUILD:-} "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -max_len="$max_len" -print_final_stats=1 >"$log" 2>&1; then
  tail -n 60 "$log"
  echo "fuzz: $target failed (log: target/fuzz-$target.log, input: fuzz/artifacts/$target)" >&2
  exit 255
fi
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
echo "fuzz: $target ok, $runs runs in $seconds s"
