#!/usr/bin/env bash
# Spill run: ScyllaDB (the CQL test node) is stalled, so every request past the ring goes
# to the Kafka overflow topic; how fast can one shard spill, and does memory stay bounded?
#
#   scripts/load-spill.sh [SECONDS] [CONNECTIONS] [RING_MIB]
#
# Starts tansu (in-memory storage; scripts/install-tansu.sh builds it once) and a 1-node,
# 1-shard CQL test node with every request stalled, then tidegate (1 shard, scylla sink,
# ring bounded to RING_MIB MiB, overflow to tansu) on CPU 0. wrk (100-event requests,
# CONNECTIONS connections) on CPU 1 for SECONDS while the server's RSS is sampled every
# 100 ms. The broker and the test node run on CPU 1 beside wrk: the broker's cost is not
# charged to tidegate's core, as on a real edge node where Kafka is elsewhere. Reports
# spilled events/s (from tidegate's own counter), the 503 share, latency percentiles
# (mostly spilled requests, which wait for the broker's acknowledgements), and peak RSS
# against the ring plus the producer's queue budget.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
connections=${2:-64}
ring_mib=${3:-16}
queue_mib=64
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
tansu=$(scripts/install-tansu.sh)
cargo build --release --quiet --bin tidegate && cargo build --release --quiet -p cql-testnode

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
# shellcheck source=scripts/testnode.sh
source scripts/testnode.sh

kafka_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
(cd "$work" && taskset -c 1 "$tansu" broker --storage-engine memory://tansu/ \
  --listener-url "tcp://127.0.0.1:$kafka_port" --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
  >"$work/tansu.out" 2>&1) &
for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$kafka_port") 2>/dev/null && break; sleep 0.05; done

start_testnode 1 1 1

TIDEGATE_RING_CAPACITY_BYTES=$((ring_mib << 20)) TIDEGATE_RING_CAPACITY_EVENTS=10000000 \
  TIDEGATE_SCYLLA_REQUEST_TIMEOUT_MS=1000 TIDEGATE_KAFKA_BROKERS="127.0.0.1:$kafka_port" \
  TIDEGATE_KAFKA_QUEUE_MAX_KBYTES=$((queue_mib << 10)) TIDEGATE_KAFKA_PARTITIONS=4 \
  taskset -c 0 target/release/tidegate --listen 127.0.0.1:0 --shards 1 --sink scylla \
  --data-dir "$work/data" --log-level error >"$work/tg.out" 2>&1 &
pid=$!
for _ in $(seq 200); do grep -q 'listening on' "$work/tg.out" 2>/dev/null && break; sleep 0.05; done
url=$(grep -o 'http://[0-9.:]*' "$work/tg.out" | head -1)
rss() { awk '/VmRSS/ { print $2 }' "/proc/$pid/status"; }
idle_rss=$(rss)
control "fault 0 stall on" >/dev/null

( while kill -0 "$pid" 2>/dev/null; do rss; sleep 0.1; done ) >"$work/rss" &
sampler=$!
taskset -c 1 wrk -t1 -c"$connections" -d"${seconds}s" --latency -s bench/wrk/batch100.lua \
  "$url/v1/events" >"$work/wrk.txt" 2>&1 || true
kill "$sampler" 2>/dev/null || true
metrics=$(curl -s "$url/metrics")
sum() { echo "$metrics" | awk -v n="$1" '$1 ~ "^"n"({|$)" { s += $2 } END { printf "%.0f", s }'; }
spilled=$(sum tidegate_kafka_spilled_events_total)
accepted=$(sum tidegate_events_accepted_total)
produce_count=$(sum tidegate_kafka_produce_seconds_count)
produce_sum=$(echo "$metrics" | awk '$1 == "tidegate_kafka_produce_seconds_sum{}" { print $2 }')
peak=$(sort -n "$work/rss" | tail -1)
requests=$(awk '/requests in/ { print $1 }' "$work/wrk.txt")
non2xx=$(awk '/Non-2xx/ { print $NF }' "$work/wrk.txt"); non2xx=${non2xx:-0}
p50=$(awk '$1 == "50%" { print $2 }' "$work/wrk.txt")
p99=$(awk '$1 == "99%" { print $2 }' "$work/wrk.txt")

out="bench/results/spill-$(date -u +%Y%m%d-%H%M%S).md"
{
  echo "# Spill run, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Machine: $(nproc) cores, $(awk -F: '/model name/ { print $2; exit }' /proc/cpuinfo | sed 's/^ *//'). tidegate (1 shard, scylla sink to a stalled 1x1 CQL test node, ring ${ring_mib} MiB, overflow to tansu with in-memory storage) on CPU 0; wrk (1 thread, $connections connections, 100-event requests, ${seconds}s), tansu and the test node on CPU 1."
  echo "Command: \`scripts/load-spill.sh $seconds $connections $ring_mib\`"
  echo
  echo "| requests | 503 share | events accepted | events spilled | spilled events/s | mean produce (first event to last ack) | p50 | p99 | RSS idle | RSS peak | ring + producer queue budget |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  awk -v r="$requests" -v n="$non2xx" -v a="$accepted" -v s="$spilled" -v sec="$seconds" \
    -v pc="$produce_count" -v ps="$produce_sum" -v p50="$p50" -v p99="$p99" \
    -v idle="$idle_rss" -v peak="$peak" -v b="$(( (ring_mib + queue_mib) << 10 ))" \
    'BEGIN { printf "| %s | %.4f | %s | %s | %.0f | %.1f ms | %s | %s | %.1f MiB | %.1f MiB | %.1f MiB |\n", r, (r ? n / r : 0), a, s, s / sec, (pc ? ps / pc * 1000 : 0), p50, p99, idle / 1024, peak / 1024, b / 1024 }'
} | tee "$out"
echo "written to $out"
