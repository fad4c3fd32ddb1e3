#!/usr/bin/env bash
# Open-loop latency at fractions of each target's own saturation rate.
#
#   scripts/openloop.sh [SCENARIO] [SECONDS] [FRACTIONS...]     e.g. scripts/openloop.sh single 10 0.5 0.8
#
# For the baseline (hyper on one tokio thread answering 202) and tidegate with the
# blackhole and spool sinks, durable (the default) and with `--ack memory` (targets ending
# in -memory; TARGETS narrows the list), each pinned to CPU 0 with the load on CPU 1: measures saturation with wrk
# (closed loop, 64 connections), then offers FRACTION x saturation at a fixed rate with
# bench/openloop.rs and reports p50/p99/p99.9 measured from intended send times. Writes the
# table to bench/results/openloop-<date>.md. ROUNDS=N repeats the targets N times, interleaved.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/machine.sh
scenario=${1:-single}
seconds=${2:-10}
shift $(( $# >= 2 ? 2 : $# ))
fractions=("$@"); ((${#fractions[@]})) || fractions=(0.5 0.8)
connections=${CONNECTIONS:-64}
rounds=${ROUNDS:-1}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet --bin tidegate --example baseline-server --example openloop

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
start() {
  case $1 in
    baseline) taskset -c 0 target/release/examples/baseline-server 127.0.0.1:0 >"$work/out" 2>&1 & ;;
    *) rm -rf "$work/data"
       local ack=durable
       [[ $1 == *-memory ]] && ack=memory
       taskset -c 0 target/release/tidegate --listen 127.0.0.1:0 --shards 1 --sink "${1%-memory}" \
         --ack "$ack" --data-dir "$work/data" --log-level warn >"$work/out" 2>&1 & ;;
  esac
  pid=$!
  for _ in $(seq 100); do grep -q 'listening on' "$work/out" 2>/dev/null && break; sleep 0.05; done
  addr=$(grep -o '127.0.0.1:[0-9]*' "$work/out" | head -1)
}
stop() { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }

out="bench/results/openloop-$scenario-$(date -u +%Y%m%d-%H%M).md"
{
  echo "# Open-loop latency, scenario $scenario, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  describe_machine
  echo "Server on CPU 0, load on CPU 1."
  echo "Saturation: wrk, 1 thread, 64 connections, 5 s. Open loop: $connections connections, ${seconds} s at a fixed rate, latency from the intended send time."
  echo "Command: \`ROUNDS=$rounds scripts/openloop.sh $scenario $seconds ${fractions[*]}\`"
  echo
  echo "The generator is one thread driving every connection from an epoll loop. *gen lag* is how"
  echo "late it sent requests whose connection was free when they were due (p99 / p99.9 µs);"
  echo "*gen capacity* is the requests/s its core could offer, from the CPU it spent per request"
  echo "outside idle polling. A row is marked *generator late* when its gen lag p99 is over 100 µs"
  echo "(the latencies then measure the generator), and *server behind* when it answered under"
  echo "98% of the offered rate. Compare targets within one run only."
  echo
  echo "| round | target | saturation req/s | offered req/s | achieved req/s | non-2xx | p50 µs | p99 µs | p99.9 µs | max µs | gen lag µs | gen capacity req/s | note |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  for round in $(seq "$rounds"); do
  for target in ${TARGETS:-baseline blackhole blackhole-memory spool spool-memory}; do
    start "$target"
    sat=$(taskset -c 1 wrk -t1 -c64 -d5s -s "bench/wrk/$scenario.lua" "http://$addr/v1/events" | awk '/Requests\/sec/ { printf "%.0f", $2 }')
    for f in "${fractions[@]}"; do
      rate=$(awk -v s="$sat" -v f="$f" 'BEGIN { printf "%.0f", s * f }')
      line=$(taskset -c 1 target/release/examples/openloop "$addr" "$rate" "$seconds" "$connections" "$scenario")
      get() { echo "$line" | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k { print $2 }'; }
      note=$(awk -v a="$(get achieved_rate)" -v r="$rate" -v lag="$(get gen_lag_p99_us)" \
        'BEGIN { if (lag > 100) print "generator late"; else if (a < 0.98 * r) print "server behind" }')
      echo "| $round | $target | $sat | $rate ($f) | $(get achieved_rate) | $(get non_2xx) | $(get p50_us) | $(get p99_us) | $(get p999_us) | $(get max_us) | $(get gen_lag_p99_us) / $(get gen_lag_p999_us) | $(get gen_capacity) | $note |"
    done
    stop
  done
  done
} | tee "$out"
echo "written to $out"
