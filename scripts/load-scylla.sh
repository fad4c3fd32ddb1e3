#!/usr/bin/env bash
# Load run through the ScyllaDB sink against the CQL test node.
#
#   scripts/load-scylla.sh [DURATION_SECONDS] [NODES] [SHARDS]
#
# Starts cql-testnode (NODES x SHARDS), applies the schema, runs tidegate with the scylla
# sink pinned to CPU 0 and wrk on CPU 1 (batch100 and many_users scenarios), and reports
# events/s, rows per CQL batch (tidegate's own histogram) and the single-shard share: the
# fraction of write requests the test node received whose rows all belong to the
# receiving node and shard. The test node shares CPU 0 with tidegate, so this is a
# routing and batching measurement, not a throughput claim for a real cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
nodes=${2:-3}
shards=${3:-4}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet --bin tidegate && cargo build --release --quiet -p cql-testnode

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
# shellcheck source=scripts/testnode.sh
source scripts/testnode.sh

out="bench/results/load-scylla-$(date -u +%Y%m%d-%H%M).md"
{
  echo "# Load through the ScyllaDB sink to the CQL test node, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Test node: $nodes nodes x $shards shards on CPU 0 with tidegate (1 shard); wrk (1 thread, 64 connections, ${duration}s) on CPU 1."
  echo "Command: \`scripts/load-scylla.sh $duration $nodes $shards\`. A routing and batching measurement, not a real cluster's throughput."
  echo
  echo "| scenario | requests/s | events/s | non-2xx | CQL batches | rows per batch | write requests at the node | single-shard share |"
  echo "|---|---|---|---|---|---|---|---|"
  for scenario in batch100 many_users; do
    start_testnode 0 "$nodes" "$shards"
    taskset -c 0 target/release/tidegate --listen 127.0.0.1:0 --shards 1 --sink scylla \
      --data-dir "$work/data" --log-level error >"$work/tg.out" 2>&1 &
    tg_pid=$!
    for _ in $(seq 100); do grep -q 'listening on' "$work/tg.out" 2>/dev/null && break; sleep 0.05; done
    url=$(grep -o 'http://[0-9.:]*' "$work/tg.out" | head -1)
    # Let the driver open its per-shard connections, then count from a clean record.
    sleep 1
    control forget-writes >/dev/null
    taskset -c 1 wrk -t1 -c64 -d"${duration}s" -s "bench/wrk/$scenario.lua" "$url/v1/events" >"$work/wrk.txt" 2>&1 || true
    sleep 1
    metrics=$(curl -s "$url/metrics")
    sum() { echo "$metrics" | awk -v n="$1" '$1 ~ "^"n"({|$)" { s += $2 } END { printf "%.0f", s }'; }
    batches=$(sum tidegate_scylla_rows_per_batch_count)
    rows=$(sum tidegate_scylla_rows_per_batch_sum)
    summary=$(control summary)
    writes=$(echo "$summary" | sed 's/.*"writes":\([0-9]*\).*/\1/')
    misrouted=$(echo "$summary" | sed 's/.*"misrouted_writes":\([0-9]*\).*/\1/')
    rps=$(awk '/^Requests\/sec/ { print $2 }' "$work/wrk.txt")
    per=$([[ $scenario == batch100 ]] && echo 100 || echo 1)
    non2xx=$(awk '/Non-2xx/ { print $NF }' "$work/wrk.txt"); non2xx=${non2xx:-0}
    awk -v s="$scenario" -v r="$rps" -v p="$per" -v n="$non2xx" -v b="$batches" -v rows="$rows" -v w="$writes" -v m="$misrouted" \
      'BEGIN { printf "| %s | %.0f | %.0f | %s | %s | %.1f | %s | %.4f |\n", s, r, r * p, n, b, (b ? rows / b : 0), w, (w ? 1 - m / w : 0) }'
    kill -TERM "$tg_pid"; wait "$tg_pid" || true
    kill "$node_pid"; wait "$node_pid" 2>/dev/null || true
  done
} | tee "$out"
echo "written to $out"
