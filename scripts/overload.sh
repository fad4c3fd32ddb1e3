#!/usr/bin/env bash
# Overload run: the sink is stalled, offered load far exceeds what can be taken.
#
#   [ACK=memory|durable] [SINK=spool|blackhole] [BIN=path] scripts/overload.sh [SECONDS] [CONNECTIONS] [RING_MIB]
#
# Starts tidegate (1 shard, spool sink stalled through the test-only gate, ring bounded to
# RING_MIB MiB) on CPU 0, fills its ring, then drives wrk (100-event requests,
# CONNECTIONS connections) on CPU 1 for SECONDS while sampling the server's RSS every
# 100 ms. Once the ring is full every answer is a 503, so wrk's latency percentiles in
# that phase are the 503 latencies. Reports the 503 share, their p50/p99, and peak RSS
# against the ring's budget and the README's memory formula for this configuration (RSS
# growth over idle is what the formula bounds). Acknowledgement is `memory` unless ACK says
# otherwise: with the spool sink and durable acknowledgement the log is the store, and a
# stalled sink fills nothing, so ACK=durable wants SINK=blackhole. Then the write-ahead log
# is what fills: it is bounded to 4 x RING_MIB, and its refusals are 503 log_full.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/machine.sh
seconds=${1:-10}
connections=${2:-256}
ring_mib=${3:-16}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
# The stall file that fills the ring is a test hook, compiled in only with test-hooks.
# BIN runs another build (one made with --features test-hooks), for same-run comparisons.
binary=${BIN:-target/release/tidegate}
[[ -n ${BIN:-} ]] || cargo build --release --quiet --bin tidegate --features test-hooks

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
touch "$work/stall"
# Connection slots just above what wrk opens, so that the memory formula is this run's.
export TIDEGATE_RING_CAPACITY_BYTES=$((ring_mib << 20)) TIDEGATE_RING_CAPACITY_EVENTS=10000000 \
  TIDEGATE_SERVER_MAX_CONNECTIONS_PER_SHARD=$((connections + 16)) \
  TIDEGATE_DURABILITY_MAX_LOG_BYTES=$((4 * ring_mib << 20))
# The README's memory formula for one shard, from the effective configuration.
formula_kib=$("$binary" config print | awk -F' = ' '
  { v[$1] = $2 }
  END {
    head = v["max_header_bytes"] > 8192 ? v["max_header_bytes"] : 8192
    b = v["max_connections_per_shard"] * (2 * head + 16384) + v["max_inflight_body_bytes"] \
      + v["max_decompressed_bytes"] * 32 + 16 * 1048576 + v["capacity_bytes"]
    printf "%d", b / 1024
  }')
taskset -c 0 "$binary" --listen 127.0.0.1:0 --shards 1 --data-dir "$work/data" \
  --log-level error --ack "${ACK:-memory}" --sink "${SINK:-spool}" --test-stall-file "$work/stall" >"$work/out" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q 'listening on' "$work/out" 2>/dev/null && break; sleep 0.05; done
url=$(grep -o 'http://[0-9.:]*' "$work/out" | head -1)
rss() { awk '/VmRSS/ { print $2 }' "/proc/$pid/status"; }
idle_rss=$(rss)

# Phase 1: fill the ring (until the first 503).
taskset -c 1 wrk -t1 -c16 -d3s -s bench/wrk/batch100.lua "$url/v1/events" >/dev/null 2>&1 || true
filled=$(curl -s "$url/metrics" | awk '/^tidegate_ring_bytes/ { s += $2 } END { print s + 0 }')

# Phase 2: overload, sampling RSS.
peak=0
( while kill -0 "$pid" 2>/dev/null; do rss; sleep 0.1; done ) >"$work/rss" &
sampler=$!
taskset -c 1 wrk -t1 -c"$connections" -d"${seconds}s" --latency -s bench/wrk/batch100.lua \
  "$url/v1/events" >"$work/wrk.txt" 2>&1 || true
kill "$sampler" 2>/dev/null || true
peak=$(sort -n "$work/rss" | tail -1)
requests=$(awk '/requests in/ { print $1 }' "$work/wrk.txt")
non2xx=$(awk '/Non-2xx/ { print $NF }' "$work/wrk.txt"); non2xx=${non2xx:-0}
p50=$(awk '$1 == "50%" { print $2 }' "$work/wrk.txt")
p99=$(awk '$1 == "99%" { print $2 }' "$work/wrk.txt")
rps=$(awk '/^Requests\/sec/ { print $2 }' "$work/wrk.txt")
budget_kib=$(( (ring_mib << 10) ))

out="bench/results/overload-$(date -u +%Y%m%d-%H%M%S).md"
{
  echo "# Overload run, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  describe_machine
  echo "tidegate (1 shard, ${SINK:-spool} sink stalled, ${ACK:-memory} acknowledgement) on CPU 0; wrk (1 thread, $connections connections, 100-event requests, ${seconds}s) on CPU 1."
  echo "Command: \`ACK=${ACK:-memory} SINK=${SINK:-spool}${BIN:+ BIN=$BIN} scripts/overload.sh $seconds $connections $ring_mib\`"
  echo
  echo "| requests | requests/s | 503 share | 503 p50 | 503 p99 | ring filled (bytes) | RSS idle | RSS peak | ring budget | RSS growth | memory formula |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  awk -v r="$requests" -v n="$non2xx" 'BEGIN { printf "| %s | ", r }'
  awk -v rps="$rps" -v r="$requests" -v n="$non2xx" -v p50="$p50" -v p99="$p99" -v f="$filled" \
    -v idle="$idle_rss" -v peak="$peak" -v b="$budget_kib" -v formula="$formula_kib" \
    'BEGIN { printf "%s | %.4f | %s | %s | %d | %.1f MiB | %.1f MiB | %.1f MiB | %.1f MiB | %.1f MiB |\n", rps, (r ? n / r : 0), p50, p99, f, idle / 1024, peak / 1024, b / 1024, (peak - idle) / 1024, formula / 1024 }'
} | tee "$out"
echo "written to $out"
