#!/usr/bin/env bash
# What TLS costs: tidegate over TLS against tidegate in plaintext, in one run.
#
#   scripts/tls-load.sh [DURATION_SECONDS] [REPEATS]
#
# Both targets are the same release binary with one shard, the blackhole sink and memory
# acknowledgement (so only the transport differs), on CPU 0 with wrk on CPU 1, REPEATS
# interleaved rounds. Three scenarios:
# - single, batch100: bench/wrk's bodies on 64 keep-alive connections (the bulk cost of
#   encryption);
# - handshake: the single-event body with `Connection: close`, so every request makes a new
#   connection, and over TLS a full handshake (wrk does not resume sessions): the cost of a
#   handshake is the difference between the two targets' time per request.
# Requests/s alone can mislead here: wrk's own TLS work on its one core may be the limit.
# So the server's CPU time (user + system, from /proc) over each run is divided by the
# requests it answered: CPU µs per request is the figure that isolates the server's cost.
# Writes the table to bench/results/tls-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-5}
repeats=${2:-3}
server_cpu=${SERVER_CPU:-0}
load_cpu=${LOAD_CPU:-1}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl >/dev/null; }
cargo build --release --quiet --bin tidegate

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
# ECDSA P-256, as most public certificates for such an edge are today.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

start() { # start TARGET -> prints the URL once the server announced it
  local target=$1 out="$work/$1.out" tls=()
  [[ $target == tls ]] && tls=(TIDEGATE_SERVER_TLS_CERT_FILE="$work/cert.pem" TIDEGATE_SERVER_TLS_KEY_FILE="$work/key.pem")
  rm -rf "$work/data"
  env "${tls[@]}" taskset -c "$server_cpu" target/release/tidegate --listen 127.0.0.1:0 \
    --shards 1 --sink blackhole --ack memory --data-dir "$work/data" --log-level warn \
    >"$out" 2>&1 &
  echo $! >"$work/$target.pid"
  for _ in $(seq 100); do grep -q 'listening on' "$out" 2>/dev/null && break; sleep 0.05; done
  grep -o 'https\?://[0-9.:]*' "$out" | head -1
}

stop() {
  local pid; pid=$(cat "$work/$1.pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
  kill -KILL "$pid" 2>/dev/null || true
}

# The server's user + system CPU so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
range() { sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo "–" hi }'; }

results="$work/results.tsv"
for run in $(seq "$repeats"); do
  for scenario in single batch100 handshake; do
    for target in plain tls; do
      url=$(start "$target")
      case $scenario in
        handshake) args=(-c16 -H "Connection: close" -s bench/wrk/single.lua) ;;
        *) args=(-c64 -s "bench/wrk/$scenario.lua") ;;
      esac
      pid=$(cat "$work/$target.pid")
      before=$(cpu_ticks "$pid")
      taskset -c "$load_cpu" wrk -t1 -d"${duration}s" "${args[@]}" "$url/v1/events" \
        >"$work/wrk.txt" 2>&1 || true
      after=$(cpu_ticks "$pid")
      stop "$target"
      requests=$(awk '/requests in/ { print $1 }' "$work/wrk.txt")
      cpu_us=$(awk -v t="$((after - before))" -v hz="$(getconf CLK_TCK)" -v n="$requests" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
      rps=$(awk '/^Requests\/sec/ { print $2 }' "$work/wrk.txt")
      errors=$(awk '/Non-2xx|Socket errors/ { print }' "$work/wrk.txt" | tr '\n' ' ')
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$target" "$run" "$rps" "$errors" "$cpu_us" >>"$results"
    done
  done
done

out="bench/results/tls-$(date -u +%Y%m%d-%H%M).md"
{
  echo "# TLS against plaintext, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Machine: $(nproc) cores, $(awk -F: '/model name/ { print $2; exit }' /proc/cpuinfo | sed 's/^ *//'), kernel $(uname -r)."
  echo "One shard on CPU $server_cpu, blackhole sink, memory ack; wrk (1 thread, ${duration}s) on CPU $load_cpu; $repeats interleaved rounds."
  echo "Certificate: ECDSA P-256, self-signed. Command: \`scripts/tls-load.sh $duration $repeats\`"
  echo
  echo "| scenario | plain req/s (rounds) | TLS req/s (rounds) | TLS / plain req/s, median of each round's ratio (range) | plain server CPU µs/request (rounds) | TLS server CPU µs/request (rounds) |"
  echo "|---|---|---|---|---|---|"
  for scenario in single batch100 handshake; do
    sel() { awk -F'\t' -v s="$scenario" -v t="$1" -v c="${2:-4}" '$1 == s && $2 == t { print $c }' "$results"; }
    ratios=$(awk -F'\t' -v s="$scenario" '
        $1 == s && $2 == "plain" { p[$3] = $4 }
        $1 == s && $2 == "tls" { t[$3] = $4 }
        END { for (r in p) if (r in t && p[r] > 0) printf "%.3f\n", t[r] / p[r] }' "$results")
    echo "| $scenario | $(sel plain | median) ($(sel plain | range)) | $(sel tls | median) ($(sel tls | range)) | $(echo "$ratios" | median) ($(echo "$ratios" | range)) | $(sel plain 6 | median) ($(sel plain 6 | range)) | $(sel tls 6 | median) ($(sel tls 6 | range)) |"
  done
  echo
  plain_close=$(awk -F'\t' '$1 == "handshake" && $2 == "plain" { print $6 }' "$results" | median)
  tls_close=$(awk -F'\t' '$1 == "handshake" && $2 == "tls" { print $6 }' "$results" | median)
  echo "Server CPU per full handshake (TLS minus plaintext server CPU per request, a new connection per request in both): $(awk -v p="$plain_close" -v t="$tls_close" 'BEGIN { printf "%.0f", t - p }') µs."
  echo
  echo "Errors reported by wrk:"
  awk -F'\t' '$5 != "" { print "- " $1 " " $2 " round " $3 ": " $5 }' "$results"
} | tee "$out"
echo "written to $out"
