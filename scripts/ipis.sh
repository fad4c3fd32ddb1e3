#!/usr/bin/env bash
# Reschedule IPIs: how often the kernel interrupts the shard's core, against requests/s.
#
#   scripts/ipis.sh SCENARIO ROUNDS BINARY...
#
# For each round and each BINARY (interleaved, so drift in the machine hits all alike),
# runs tidegate with one shard on CPU 0 (blackhole sink) in memory and in durable mode,
# with wrk (1 thread, 64 connections, bench/wrk/SCENARIO.lua) on CPU 1: 2 s of warm-up,
# then 5 s counted. Prints requests/s, the reschedule IPIs per second CPU 0 received
# (/proc/interrupts, RES), the block device's interrupts per second, and the shard's CPU
# time per request (/proc/PID/stat). An io_uring completion for a thread that is running
# in user space interrupts it with such an IPI unless the ring was set up with
# IORING_SETUP_COOP_TASKRUN (src/main.rs); on a VM each costs microseconds.
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:-single}
rounds=${2:-3}
shift 2
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
res_cpu0() { awk '/^ *RES:/ { print $2 }' /proc/interrupts; }
# The block device's interrupts on every CPU (virtio, NVMe or SCSI queues).
blk_irqs() { awk '/virtio[0-9]*-req|nvme|ahci|scsi/ { for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) n += $i } END { print n + 0 }' /proc/interrupts; }
printf 'round\tbinary\tack\treq/s\tIPIs/s (CPU 0)\tblock IRQs/s\tshard µs/request\n'
for round in $(seq "$rounds"); do
  for binary in "$@"; do
    for ack in memory durable; do
      rm -rf "$work/data"
      taskset -c 0 "$binary" --listen 127.0.0.1:0 --shards 1 --sink blackhole --ack "$ack" \
        --data-dir "$work/data" --log-level warn >"$work/out" 2>&1 &
      pid=$!
      for _ in $(seq 200); do grep -q 'listening on' "$work/out" 2>/dev/null && break; sleep 0.05; done
      url=$(grep -o 'http://[0-9.:]*' "$work/out" | head -1)
      taskset -c 1 wrk -t1 -c64 -d2s -s "bench/wrk/$scenario.lua" "$url/v1/events" >/dev/null 2>&1
      r0=$(res_cpu0); b0=$(blk_irqs); t0=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
      rps=$(taskset -c 1 wrk -t1 -c64 -d5s -s "bench/wrk/$scenario.lua" "$url/v1/events" 2>/dev/null |
        awk '/^Requests\/sec/ { print $2 }')
      r1=$(res_cpu0); b1=$(blk_irqs); t1=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
      kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
      ticks=$(getconf CLK_TCK)
      awk -v r="$round" -v b="$binary" -v a="$ack" -v rps="$rps" -v res=$((r1 - r0)) -v blk=$((b1 - b0)) \
        -v t=$((t1 - t0)) -v hz="$ticks" 'BEGIN {
          printf "%s\t%s\t%s\t%.0f\t%.0f\t%.0f\t%.1f\n", r, b, a, rps, res / 5, blk / 5, t / hz * 1e6 / (rps * 5) }'
    done
  done
done
