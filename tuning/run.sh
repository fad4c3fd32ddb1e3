#!/usr/bin/env bash
# Runs the load benchmark once per tuning profile, in interleaved rounds, and writes a
# results table (CSV and Markdown), plots (SVG) and the machine's details.
#
#   tuning/run.sh [SECONDS] [ROUNDS] [PROFILE...]     (default: 5 s, 3 rounds, every profile)
#
# Each round applies each profile in turn, starts tidegate (release build, 1 shard unless
# the profile says otherwise, sink $TIDEGATE_TUNING_SINK or blackhole) pinned to CPU 0,
# runs wrk pinned to CPU 1 for SECONDS per scenario (one event per request, 100 events per
# request), stops tidegate and reverts the profile. Rounds interleave the profiles so that
# a noisy neighbour hits them all alike; the report gives medians and each profile's
# ratio to the `baseline` profile of the same run. A profile this machine refuses is
# reported as refused, with the reason, and not run. On any exit every profile this run
# applied is reverted.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
rounds=${2:-3}
shift $(($# > 2 ? 2 : $#))
profiles=("$@")
if ((${#profiles[@]} == 0)); then
  for file in tuning/profiles/*.profile; do profiles+=("$(basename "$file" .profile)"); done
fi
[[ " ${profiles[*]} " == *" baseline "* ]] || profiles=(baseline "${profiles[@]}")
sink=${TIDEGATE_TUNING_SINK:-blackhole}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet --bin tidegate

work=$(mktemp -d)
# Results are assembled aside and moved into bench/results only once complete, so that an
# interrupted run leaves no partial table behind.
final="bench/results/tuning-$(date -u +%Y%m%d-%H%M)"
out="$work/results"
mkdir -p "$out"
applied=()
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  for name in "${applied[@]}"; do
    [[ -z $name ]] || tuning/tune revert "$name" >/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

{
  echo "# Machine"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- kernel: $(uname -srm)"
  echo "- CPU: $(nproc) x $(awk -F: '/model name/ { print $2; exit }' /proc/cpuinfo | sed 's/^ *//')"
  echo "- memory: $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
  echo "- virtualization: $(systemd-detect-virt 2>/dev/null || echo unknown); container: $( [[ -e /.dockerenv || -e /run/.containerenv ]] && echo yes || echo no)"
  nic=$(awk '$2 == "00000000" { print $1; exit }' /proc/net/route)
  echo "- NIC: ${nic:-none} ($(basename "$(readlink -f /sys/class/net/${nic:-lo}/device/driver 2>/dev/null)" 2>/dev/null || echo no driver)); traffic here is loopback"
  echo "- tidegate: $(git rev-parse --short HEAD), sink $sink; wrk $(wrk -v 2>&1 | head -1 | awk '{ print $2 }')"
  echo "- command: \`tuning/run.sh $seconds $rounds ${profiles[*]}\`"
  echo
  echo '```text'
  tuning/tune list 2>/dev/null
  echo '```'
} >"$out/machine.md"

to_ms() { # wrk latency (e.g. 812.00us, 1.20ms, 2.01s) -> milliseconds
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /[0-9]s$/ && v !~ /ms$/) n *= 1000; printf "%.3f", n }'
}

echo "round,profile,scope,status,scenario,requests_per_s,events_per_s,p50_ms,p99_ms,reason" >"$out/raw.csv"
declare -A refused=()
for round in $(seq "$rounds"); do
  for name in "${profiles[@]}"; do
    scope=$(. "tuning/profiles/$name.profile"; echo "$SCOPE")
    if [[ -n ${refused[$name]:-} ]]; then continue; fi
    if ! reason=$(tuning/tune apply "$name" 2>&1 >/dev/null); then
      reason=$(echo "$reason" | sed "s/^tuning: refused: $name: //" | tr ',' ';' | head -1)
      refused[$name]=$reason
      echo "$round,$name,$scope,refused,,,,,,$reason" >>"$out/raw.csv"
      echo "tuning: $name refused: $reason" >&2
      continue
    fi
    applied+=("$name")
    mapfile -t env_settings < <(tuning/tune env "$name" | grep . || true)
    env "${env_settings[@]}" taskset -c 0 target/release/tidegate --listen 127.0.0.1:0 \
      --sink "$sink" --data-dir "$work/data-$name" --log-level error \
      $([[ " ${env_settings[*]} " == *TIDEGATE_SHARDS=* ]] || echo --shards 1) >"$work/tg.out" 2>&1 &
    pid=$!
    for _ in $(seq 200); do grep -q 'listening on' "$work/tg.out" 2>/dev/null && break; sleep 0.05; done
    url=$(grep -o 'http://[0-9.:]*' "$work/tg.out" | head -1)
    for scenario in single batch100; do
      events=$([[ $scenario == batch100 ]] && echo 100 || echo 1)
      taskset -c 1 wrk -t1 -c64 -d"${seconds}s" --latency -s "bench/wrk/$scenario.lua" \
        "$url/v1/events" >"$work/wrk.txt" 2>&1 || true
      rps=$(awk '/^Requests\/sec/ { print $2 }' "$work/wrk.txt")
      p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$work/wrk.txt")")
      p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$work/wrk.txt")")
      echo "$round,$name,$scope,ran,$scenario,$rps,$(awk -v r="$rps" -v e="$events" 'BEGIN { printf "%.0f", r * e }'),$p50,$p99," >>"$out/raw.csv"
      echo "round $round $name $scenario: $rps req/s, p99 $p99 ms" >&2
    done
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    tuning/tune revert "$name" >/dev/null
    applied=("${applied[@]/$name}")
  done
done
python3 tuning/report.py "$out"
mkdir -p "$(dirname "$final")"
mv "$out" "$final"
echo "written to $final"
