#!/usr/bin/env bash
# How fast a shard drains the backlog its write-ahead log kept on disk during a sink outage.
#
#   scripts/backlog-drain.sh [BINARY] [ROUNDS]
#
# Builds the release binary with the test hooks (unless BINARY is given; it needs them),
# stalls the blackhole sink with --test-stall-file, offers 4 s of single-event load (wrk,
# 64 connections) to a shard whose ring holds 1,000 events, so nearly everything is kept on
# disk only, then lifts the stall and times how long until tidegate_log_backlog_events is
# 0. Server on CPU 0, wrk on CPU 1.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-}
rounds=${2:-3}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v bc >/dev/null || { apt-get update -qq && apt-get install -y -qq bc >/dev/null; }
if [[ -z $binary ]]; then
  cargo build --release --quiet --features test-hooks --bin tidegate
  binary=target/release/tidegate
fi
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
backlog() { curl -s "$1/metrics" | awk '/^tidegate_log_backlog_events/ { print $2 }'; }
for round in $(seq "$rounds"); do
  rm -rf "$work/data"; touch "$work/stall"
  TIDEGATE_RING_CAPACITY_EVENTS=1000 TIDEGATE_LIMITS_MAX_EVENTS_PER_REQUEST=100 \
    taskset -c 0 "$binary" --listen 127.0.0.1:0 --shards 1 --sink blackhole \
    --data-dir "$work/data" --log-level warn --test-stall-file "$work/stall" >"$work/out" 2>&1 &
  pid=$!
  for _ in $(seq 100); do grep -q 'listening on' "$work/out" && break; sleep 0.05; done
  url=$(grep -o 'http://[0-9.:]*' "$work/out" | head -1)
  taskset -c 1 wrk -t1 -c64 -d4s -s bench/wrk/single.lua "$url/v1/events" >/dev/null
  kept=$(backlog "$url")
  start=$(date +%s.%N); rm "$work/stall"
  while [[ $(backlog "$url") != 0 ]]; do sleep 0.02; done
  end=$(date +%s.%N)
  seconds=$(echo "$end - $start" | bc)
  echo "round $round: $kept events kept on disk, drained in $seconds s ($(echo "$kept / $seconds" | bc) events/s)"
  kill -TERM "$pid"; wait "$pid" || true
done
