#!/usr/bin/env bash
# Load run: tidegate against a same-run baseline, server and load generator pinned apart.
#
#   scripts/load.sh [DURATION_SECONDS] [REPEATS]
#
# Builds release binaries, then for each wrk scenario (bench/wrk/*.lua) runs the baseline
# (hyper on one tokio thread answering 202) and tidegate with the blackhole and the spool
# sink, each with durable acknowledgement (the default) and with `--ack memory`, each on
# CPU 0 with wrk on CPU 1, REPEATS times each, interleaved so drift in the machine hits all
# targets alike. Prints medians, the ratio to the baseline and durable against memory, and
# writes the table to bench/results/load-<date>.md. SCENARIOS and TARGETS narrow a run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/machine.sh
duration=${1:-10}
repeats=${2:-3}
connections=${CONNECTIONS:-64}
server_cpu=${SERVER_CPU:-0}
load_cpu=${LOAD_CPU:-1}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v taskset >/dev/null || { apt-get update -qq && apt-get install -y -qq util-linux >/dev/null; }
cargo build --release --quiet --bin tidegate --example baseline-server

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

start() { # start NAME -> prints the address once the server announced it
  local name=$1 out="$work/$1.out"
  case $name in
    baseline) taskset -c "$server_cpu" target/release/examples/baseline-server 127.0.0.1:0 >"$out" 2>&1 & ;;
    blackhole|spool|blackhole-memory|spool-memory)
      rm -rf "$work/data"
      local ack=durable
      [[ $name == *-memory ]] && ack=memory
      taskset -c "$server_cpu" target/release/tidegate --listen 127.0.0.1:0 --shards 1 \
        --sink "${name%-memory}" --ack "$ack" --data-dir "$work/data" --log-level warn \
        >"$out" 2>&1 & ;;
  esac
  echo $! >"$work/$name.pid"
  for _ in $(seq 100); do
    grep -q 'listening on' "$out" 2>/dev/null && break
    sleep 0.05
  done
  grep -o 'http://[0-9.:]*' "$out" | head -1
}

# The server was started in a command substitution's subshell, so `wait` cannot reap it:
# poll until it is gone, so that the next start does not race its last writes.
stop() {
  local pid; pid=$(cat "$work/$1.pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
  kill -KILL "$pid" 2>/dev/null || true
}

# Converts wrk's latency text (e.g. 1.23ms, 850.00us, 1.02s) to microseconds.
to_us() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n*1000; else if (v ~ /s$/) print n*1000000; else print n }'; }

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

declare -A events_per_request=([single]=1 [batch100]=100 [many_users]=1)
scenarios=(${SCENARIOS:-single batch100 many_users})
targets=(${TARGETS:-baseline blackhole blackhole-memory spool spool-memory})
results="$work/results.tsv"
for scenario in "${scenarios[@]}"; do
  for run in $(seq "$repeats"); do
    for target in "${targets[@]}"; do
      url=$(start "$target")
      taskset -c "$load_cpu" wrk -t1 -c"$connections" -d"${duration}s" --latency \
        -s "bench/wrk/$scenario.lua" "$url/v1/events" >"$work/wrk.txt" 2>&1 || true
      stop "$target"
      rps=$(awk '/^Requests\/sec/ { print $2 }' "$work/wrk.txt")
      p50=$(to_us "$(awk '$1 == "50%" { print $2 }' "$work/wrk.txt")")
      p99=$(to_us "$(awk '$1 == "99%" { print $2 }' "$work/wrk.txt")")
      non2xx=$(awk '/Non-2xx/ { print $NF }' "$work/wrk.txt"); non2xx=${non2xx:-0}
      # Events accepted per second: a refused request (503 when the sink falls behind)
      # carries no event, and refusals are quick, so counting them would overstate.
      total=$(awk '/requests in/ { print $1 }' "$work/wrk.txt")
      eps=$(awk -v r="$rps" -v t="${total:-0}" -v bad="$non2xx" -v n="${events_per_request[$scenario]}" \
        'BEGIN { printf "%.0f", (t > 0 ? r * (t - bad) / t * n : 0) }')
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$target" "$run" "$rps" "$p50" "$p99" "$non2xx" "$eps" >>"$results"
    done
  done
done

out="bench/results/load-$(date -u +%Y%m%d-%H%M).md"
{
  echo "# Load run $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  describe_machine
  echo "Server pinned to CPU $server_cpu, wrk (1 thread, $connections connections, ${duration}s) to CPU $load_cpu; median of $repeats interleaved runs."
  echo "Command: \`${SCENARIOS:+SCENARIOS=\"$SCENARIOS\" }${TARGETS:+TARGETS=\"$TARGETS\" }scripts/load.sh $duration $repeats\`"
  echo
  echo "Targets without \`-memory\` run with durable acknowledgement (the default)."
  echo
  echo "| scenario | target | requests/s | events/s accepted | p50 µs | p99 µs | non-2xx | ratio to baseline (req/s) |"
  echo "|---|---|---|---|---|---|---|---|"
  for scenario in "${scenarios[@]}"; do
    base=$(awk -F'\t' -v s="$scenario" '$1 == s && $2 == "baseline" { print $4 }' "$results" | median)
    for target in "${targets[@]}"; do
      sel() { awk -F'\t' -v s="$scenario" -v t="$target" -v c="$1" '$1 == s && $2 == t { print $c }' "$results" | median; }
      rps=$(sel 4); p50=$(sel 5); p99=$(sel 6); bad=$(sel 7); eps=$(sel 8)
      ratio=$(awk -v r="$rps" -v b="$base" 'BEGIN { printf "%.2f", r / b }')
      echo "| $scenario | $target | $rps | $eps | $p50 | $p99 | $bad | $ratio |"
    done
  done
  echo
  # Accepted events, not requests: a sink that falls behind makes memory acknowledgement
  # answer 503 at once, and those quick refusals counted as throughput.
  echo "Durable against memory acknowledgement (median accepted events/s, and every round's range; then the median and range of each round's own ratio):"
  echo
  for scenario in "${scenarios[@]}"; do
    for sink in blackhole spool; do
      d=$(awk -F'\t' -v s="$scenario" -v t="$sink" '$1 == s && $2 == t { print $8 }' "$results" | median)
      m=$(awk -F'\t' -v s="$scenario" -v t="$sink-memory" '$1 == s && $2 == t { print $8 }' "$results" | median)
      [[ -n $d && -n $m ]] || continue
      range=$(awk -F'\t' -v s="$scenario" -v t="$sink" '$1 == s && $2 == t { print $8 }' "$results" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo "–" hi }')
      # Each round's durable figure over the same round's memory figure, taken minutes
      # apart at most: on a shared machine whose speed drifts, steadier than the ratio of
      # the medians.
      paired=$(awk -F'\t' -v s="$scenario" -v t="$sink" '
          $1 == s && $2 == t { d[$3] = $8 }
          $1 == s && $2 == t "-memory" { m[$3] = $8 }
          END { for (r in d) if (r in m && m[r] > 0) printf "%.3f\n", d[r] / m[r] }' "$results" | sort -g)
      paired_median=$(echo "$paired" | median)
      paired_range=$(echo "$paired" | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.2f–%.2f", lo, hi }')
      echo "- $scenario, $sink: $(awk -v d="$d" -v m="$m" 'BEGIN { printf "%.2f", d / m }')× (durable $d events/s, rounds $range; memory $m); round by round $(printf '%.2f' "$paired_median")× ($paired_range)"
    done
  done
} | tee "$out"
echo "written to $out"
