#!/usr/bin/env bash
# Instructions per request, counted by callgrind: repeatable where timings are not.
#
#   [ACK=memory|durable] [KEYED=1] [REFUSED=1] [CONNECTIONS=C] scripts/instructions.sh [BINARY] [SCENARIO] [REQUESTS] [RUNS]
#
# Starts BINARY (default target/release/tidegate) under callgrind with one shard and the
# blackhole sink (or the baseline server, if BINARY is baseline-server), sends REQUESTS requests of bench/wrk/SCENARIO.lua's body on one
# keep-alive connection, and prints the instructions executed while they were served
# divided by their number: counters are zeroed once the server listens and dumped after
# the last answer (callgrind_control), so start-up and shutdown are not counted. The
# server is then killed: under valgrind it did not always act on SIGTERM.
#
# The writer normally flushes a batch 10 ms after its first event: under valgrind, which
# runs tidegate some 50 times slower, how many events share a flush then depends on how
# busy the machine is, and the count per request varied by ±8% from run to run. Here a
# batch is flushed at 500 events (about what 10 ms holds at native speed), never by time,
# so each run does the same work. The whole count is still repeated RUNS times (default 5)
# and reported as the median with the lowest and highest run.
#
# Compare binaries built by the same command. scripts/load.sh builds tidegate together with
# the baseline example, which brings in the dev-dependencies and so (probably through
# feature unification) other code: the same source counted 495.5k per 100-event request
# built that way and 486.7k built by `cargo build --release`.
#
# CONNECTIONS=C (default 1) keeps C requests in flight, one per connection, as a loaded
# server sees them; with one, every request also pays for the shard parking and waking.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-target/release/tidegate}
scenario=${2:-batch100}
requests=${3:-2000}
runs=${4:-5}
# REFUSED counts memory acknowledgement's 503s; the server refuses a second --ack.
if [[ -n ${REFUSED:-} && ${ACK:-memory} != memory ]]; then
  echo "REFUSED=1 counts refusals with memory acknowledgement: leave ACK unset or memory" >&2
  exit 2
fi
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
# client ADDR SCENARIO N EXPECT: sends N requests on one keep-alive connection, each
# answered EXPECT (202 or 503); EXPECT=fill sends until the first 503.
client() {
  python3 - "$1" "$2" "$3" "$4" "${KEYED:-}" "${5:-1}" <<'PY'
import json, socket, sys
addr, scenario, n, expect, keyed = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
connections = int(sys.argv[6])
event = lambda i: json.dumps({"user_id": "user-%06d" % i, "event_type": "screen_view",
    "event_time": "2024-05-01T12:00:%02d.123Z" % (i % 60),
    "payload": {"screen": "home", "app_version": "4.2.1", "os": "android", "n": i}},
    separators=(",", ":"))
body = event(42) if scenario == "single" else "[" + ",".join(event(i) for i in range(1, 101)) + "]"
host, port = addr.split(":")
# Each request goes out in one write, so the server never sees half of one: how many reads
# a request takes would otherwise depend on timing.
key = "x-api-key: tg_bench_0123456789abcdef\r\n" if keyed else ""
request = ("POST /v1/events HTTP/1.1\r\nHost: %s\r\ncontent-type: application/json\r\n"
           "%scontent-length: %d\r\n\r\n%s" % (addr, key, len(body), body)).encode()
# CONNECTIONS=C: C keep-alive connections, each sent one request per wave before any answer
# is read, so the server finds C requests per poll as under load, not one (then every
# request also pays for the shard parking and waking; C=1 counts exactly that).
conns = []
for _ in range(connections):
    c = socket.create_connection((host, int(port)))
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conns.append([c, b""])

def answer(state):
    conn, pending = state
    while b"\r\n\r\n" not in pending:
        pending += conn.recv(65536)
    head, _, pending = pending.partition(b"\r\n\r\n")
    status = head[9:12].decode()
    assert status == expect or (expect == "fill" and status in ("202", "503")), head
    length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(pending) < length:
        pending += conn.recv(65536)
    state[1] = pending[length:]
    return status

sent = 0
while sent < n:
    wave = conns[: min(len(conns), n - sent)]
    for state in wave:
        state[0].sendall(request)
    sent += len(wave)
    statuses = [answer(state) for state in wave]
    if expect == "fill" and "503" in statuses:
        break
PY
}

count_once() {
  local work; work=$(mktemp -d)
  if [[ $(basename "$binary") == baseline-server ]]; then
    args=(127.0.0.1:0)   # the same-run baseline: bench/baseline_server.rs
  else
    args=(--listen 127.0.0.1:0 --shards 1 --sink blackhole --log-level warn --data-dir "$work/data")
    # ACK=memory or ACK=durable picks the acknowledgement (binaries before it had none).
    [[ -n ${ACK:-} ]] && args+=(--ack "$ACK")
  fi
  # valgrind cannot follow glommio's direct writes through io_uring (the server never
  # answers), so a durable count is of the log written through the page cache
  # (DIRECT_IO=keep for binaries older than that setting).
  local direct=()
  [[ ${ACK:-} == durable && ${DIRECT_IO:-} != keep ]] && direct=(TIDEGATE_DURABILITY_DIRECT_IO=false)
  # REFUSED=1: the cost of a 503 under overload. The sink is stalled (a test hook: BINARY
  # must be built with --features test-hooks), the ring is filled before counting, and
  # every counted request is refused (memory acknowledgement).
  local expect=202
  if [[ -n ${REFUSED:-} ]]; then
    touch "$work/stall"
    [[ -n ${ACK:-} ]] || args+=(--ack memory)
    args+=(--test-stall-file "$work/stall")
    direct+=(TIDEGATE_RING_CAPACITY_EVENTS=1000 TIDEGATE_LIMITS_MAX_EVENTS_PER_REQUEST=1000)
    expect=503
  fi
  # KEYED=1: API keys on, each request carrying one (X-Api-Key), with a rate it never meets.
  if [[ -n ${KEYED:-} ]]; then
    printf '[[key]]\nname = "bench"\nkey = "tg_bench_0123456789abcdef"\nevents_per_second = 100000000\n' >"$work/keys.toml"
    direct+=(TIDEGATE_AUTH_KEYS_FILE="$work/keys.toml")
  fi
  env "${direct[@]}" TIDEGATE_BATCH_MAX_EVENTS=500 TIDEGATE_BATCH_MAX_DELAY_MS=3600000 \
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "$binary" "${args[@]}" \
    >"$work/out" 2>"$work/err" &
  pid=$!
  # Start-up under valgrind takes from a few seconds to over 20 on a busy machine.
  for _ in $(seq 900); do grep -q 'listening on' "$work/out" 2>/dev/null && break; sleep 0.1; done
  addr=$(grep -o '127.0.0.1:[0-9]*' "$work/out" | head -1)
  if [[ -z $addr ]]; then
    kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; rm -rf "$work"
    return 1
  fi
  # With REFUSED, fill the ring first: requests until the first 503.
  [[ -n ${REFUSED:-} ]] && client "$addr" "$scenario" 1000 fill
  callgrind_control -z "$pid" >/dev/null 2>&1
  client "$addr" "$scenario" "$requests" "$expect" "${CONNECTIONS:-1}"
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill -KILL "$pid"; wait "$pid" 2>/dev/null || true
  dump=$(ls -t "$work"/cg.out.* | head -1)
  total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
  # KEEP_PROFILE=FILE keeps the last run's profile, for callgrind_annotate.
  [[ -n ${KEEP_PROFILE:-} ]] && cp "$dump" "$KEEP_PROFILE"
  echo "$((total / requests))"
  rm -rf "$work"
}

per_request=()
for run in $(seq "$runs"); do
  # A server that did not start in time (a busy machine) is a failed run, not a count.
  n=$(count_once || count_once || count_once) || { echo "run $run failed three times" >&2; exit 1; }
  echo "run $run: $n instructions per request" >&2
  per_request+=("$n")
done
sorted=($(printf '%s\n' "${per_request[@]}" | sort -n))
median=${sorted[$((runs / 2))]}
echo "$scenario: median $median instructions per request over $runs runs of $requests requests" \
  "(lowest ${sorted[0]}, highest ${sorted[$((runs - 1))]})"
