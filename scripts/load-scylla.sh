#!/usr/bin/env bash
# Load run through the ScyllaDB sink against the CQL test node.
#
#   [TIDEGATE_SHARDS=N] [DRIVER_THREADS=N] [NODE_CPU=C] [SCENARIOS="..."] \
#     scripts/load-scylla.sh [DURATION_SECONDS] [NODES] [SHARDS]
#
# Starts cql-testnode (NODES x SHARDS), applies the schema, runs tidegate with the scylla
# sink pinned to CPU 0 and wrk on CPU 1 (batch100 and many_users scenarios), and reports
# events/s, CQL batches and rows per second and per CQL batch (tidegate's own histogram),
# the CPU the driver's threads used per row (from /proc), and the single-shard share: the
# fraction of write requests the test node received whose rows all belong to the
# receiving node and shard. The test node runs on NODE_CPU (default 0, beside tidegate);
# TIDEGATE_SHARDS (default 1) and DRIVER_THREADS (default: tidegate's own, one per four
# shards) size tidegate. The test node is no database, so this is a routing, batching and
# driver-cost measurement, not a throughput claim for a real cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
nodes=${2:-3}
shards=${3:-4}
tidegate_shards=${TIDEGATE_SHARDS:-1}
node_cpu=${NODE_CPU:-0}
[[ -n ${DRIVER_THREADS:-} ]] && export TIDEGATE_SCYLLA_DRIVER_THREADS=$DRIVER_THREADS
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet --bin tidegate && cargo build --release --quiet -p cql-testnode

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
# shellcheck source=scripts/testnode.sh
source scripts/testnode.sh

out="bench/results/load-scylla-$(date -u +%Y%m%d-%H%M%S).md"   # seconds: runs with different knobs often share a minute
{
  echo "# Load through the ScyllaDB sink to the CQL test node, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Test node: $nodes nodes x $shards shards on CPU $node_cpu; tidegate ($tidegate_shards shard(s), driver threads: ${DRIVER_THREADS:-default}) on CPU 0; wrk (1 thread, 64 connections, ${duration}s) on CPU 1."
  echo "Command: \`TIDEGATE_SHARDS=$tidegate_shards DRIVER_THREADS=${DRIVER_THREADS:-} NODE_CPU=$node_cpu scripts/load-scylla.sh $duration $nodes $shards\`. A routing, batching and driver-cost measurement, not a real cluster's throughput."
  echo
  echo "| scenario | requests/s | events/s | non-2xx | CQL batches/s | rows/s | rows per batch | driver CPU µs per row | write requests at the node | single-shard share |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for scenario in ${SCENARIOS:-batch100 many_users}; do
    start_testnode "$node_cpu" "$nodes" "$shards"
    taskset -c 0 target/release/tidegate --listen 127.0.0.1:0 --shards "$tidegate_shards" --sink scylla \
      --data-dir "$work/data" --log-level error >"$work/tg.out" 2>&1 &
    tg_pid=$!
    for _ in $(seq 100); do grep -q 'listening on' "$work/tg.out" 2>/dev/null && break; sleep 0.05; done
    url=$(grep -o 'http://[0-9.:]*' "$work/tg.out" | head -1)
    # Let the driver open its per-shard connections, then count from a clean record.
    sleep 1
    control forget-writes >/dev/null
    # CPU ticks (user + system) of the driver's threads, and the rows and batches so far.
    driver_ticks() {
      local t=0 task
      for task in /proc/"$tg_pid"/task/*; do
        [[ $(cat "$task/comm" 2>/dev/null) == tidegate-scylla* ]] || continue
        t=$((t + $(awk '{ print $14 + $15 }' "$task/stat")))
      done
      echo "$t"
    }
    sum() { echo "$metrics" | awk -v n="$1" '$1 ~ "^"n"({|$)" { s += $2 } END { printf "%.0f", s }'; }
    metrics=$(curl -s "$url/metrics")
    batches0=$(sum tidegate_scylla_rows_per_batch_count); rows0=$(sum tidegate_scylla_rows_per_batch_sum)
    ticks0=$(driver_ticks); started=$(date +%s.%N)
    taskset -c 1 wrk -t1 -c64 -d"${duration}s" -s "bench/wrk/$scenario.lua" "$url/v1/events" >"$work/wrk.txt" 2>&1 || true
    metrics=$(curl -s "$url/metrics")
    ticks=$(( $(driver_ticks) - ticks0 )); elapsed=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
    batches=$(( $(sum tidegate_scylla_rows_per_batch_count) - batches0 ))
    rows=$(( $(sum tidegate_scylla_rows_per_batch_sum) - rows0 ))
    sleep 1
    summary=$(control summary)
    writes=$(echo "$summary" | sed 's/.*"writes":\([0-9]*\).*/\1/')
    misrouted=$(echo "$summary" | sed 's/.*"misrouted_writes":\([0-9]*\).*/\1/')
    rps=$(awk '/^Requests\/sec/ { print $2 }' "$work/wrk.txt")
    per=$([[ $scenario == batch100 ]] && echo 100 || echo 1)
    non2xx=$(awk '/Non-2xx/ { print $NF }' "$work/wrk.txt"); non2xx=${non2xx:-0}
    hz=$(getconf CLK_TCK)
    awk -v s="$scenario" -v r="$rps" -v p="$per" -v n="$non2xx" -v b="$batches" -v rows="$rows" -v w="$writes" -v m="$misrouted" \
      -v ticks="$ticks" -v hz="$hz" -v e="$elapsed" \
      'BEGIN { printf "| %s | %.0f | %.0f | %s | %.0f | %.0f | %.1f | %.2f | %s | %.4f |\n", s, r, r * p, n, b / e, rows / e, (b ? rows / b : 0), (rows ? ticks / hz * 1e6 / rows : 0), w, (w ? 1 - m / w : 0) }'
    kill -TERM "$tg_pid"; wait "$tg_pid" || true
    kill "$node_pid"; wait "$node_pid" 2>/dev/null || true
  done
} | tee "$out"
echo "written to $out"
