#!/usr/bin/env bash
# Outage soak: concurrent clients against a stalled sink, with durable acknowledgement.
#
#   [BIN=path] [SINKS="blackhole scylla"] scripts/outage-soak.sh [SEEDS] [FIRST_SEED]
#
# For each seed and sink, starts tidegate (one shard, durable acknowledgement, the sink
# stalled through the test-only gate, a small ring and a random batch size) and twelve
# clients that POST between 10 and 40 requests of 1 to 100 events each, concurrently. The
# ring fills, so most requests wait in the write-ahead log's backlog; requests of several
# clients share a sync. The stall is lifted after 0.2 to 1.5 s while clients may still be
# sending. Then every event answered 202 must reach the sink exactly once, and the backlog
# must drain, within 30 s: the sink's event counter must equal the accepted events (a
# higher count is a duplicate), and with the scylla sink the CQL test node must hold that
# many distinct event ids. A seed that breaks this prints the server's log and metrics and
# the script fails.
#
# tests/durable_ack.rs drives the same outage with one client, in the suite; this runs many
# more interleavings than the suite's time allows. Writes bench/results/outage-soak-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/machine.sh
seeds=${1:-20}
first=${2:-0}
sinks=${SINKS:-blackhole scylla}
if [[ -z ${BIN:-} ]]; then
  cargo build --release --quiet --bin tidegate --features test-hooks
fi
binary=${BIN:-target/release/tidegate}
if [[ $sinks == *scylla* ]]; then cargo build --release --quiet -p cql-testnode; fi
out=bench/results/outage-soak-$(date -u +%Y%m%d-%H%M).md
log=$(mktemp)
trap 'rm -f "$log"' EXIT

status=0
python3 - "$binary" "$seeds" "$first" "$sinks" >"$log" <<'PY' || status=$?
import json, os, random, re, socket, subprocess, sys, tempfile, threading, time

binary, seeds, first, sinks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split()


def http(addr, request):
    s = socket.create_connection(addr)
    s.settimeout(30)
    s.sendall(request)
    data = b""
    while chunk := s.recv(1 << 16):
        data += chunk
    s.close()
    return data


def post(addr, body):
    head = ("POST /v1/events HTTP/1.1\r\nhost: soak\r\ncontent-type: application/json\r\n"
            "content-length: %d\r\nconnection: close\r\n\r\n" % len(body)).encode()
    return int(http(addr, head + body).split(b" ", 2)[1])


def metrics(addr):
    text = http(addr, b"GET /metrics HTTP/1.1\r\nhost: soak\r\nconnection: close\r\n\r\n")
    sums = {}
    for line in text.decode().split("\r\n\r\n", 1)[1].splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            base = name.split("{")[0]
            sums[base] = sums.get(base, 0) + float(value)
    return sums


def test_node():
    node = subprocess.Popen(
        ["target/release/cql-testnode", "--nodes", "1", "--standby", "0", "--shards", "2",
         "--port", "0", "--shard-aware-port", "0", "--control-port", "0"],
        stdout=subprocess.PIPE, text=True)
    words = node.stdout.readline().split()
    port = int(words[words.index("port") + 1])
    control = int(words[words.index("control-port") + 1])
    env = dict(os.environ, TIDEGATE_SCYLLA_CONTACT_POINTS="127.0.0.1:%d" % port,
               TIDEGATE_SCHEMA_REPLICATION_FACTOR="1")
    subprocess.run([binary, "schema", "apply"], env=env, check=True, capture_output=True)
    return node, port, control


def distinct_rows(control):
    s = socket.create_connection(("127.0.0.1", control))
    s.sendall(b"rows\n")
    data = b""
    while not data.endswith(b"END\n"):
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    lines = data.decode().splitlines()
    return len({json.loads(line)["event_id"] for line in lines if line.startswith("{")})


def soak(sink, seed):
    rnd = random.Random(seed)
    work = tempfile.mkdtemp()
    stall = os.path.join(work, "stall")
    open(stall, "w").close()
    env = dict(os.environ,
               TIDEGATE_RING_CAPACITY_EVENTS=str(rnd.choice([100, 300, 500])),
               TIDEGATE_LIMITS_MAX_EVENTS_PER_REQUEST="100",
               TIDEGATE_BATCH_MAX_EVENTS=str(rnd.choice([50, 200, 10000])))
    node = None
    if sink == "scylla":
        node, port, control = test_node()
        env["TIDEGATE_SCYLLA_CONTACT_POINTS"] = "127.0.0.1:%d" % port
    server = subprocess.Popen(
        [binary, "--listen", "127.0.0.1:0", "--shards", "1", "--sink", sink, "--ack", "durable",
         "--data-dir", os.path.join(work, "data"), "--log-level", "info",
         "--test-stall-file", stall],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    addr = None
    for line in server.stdout:
        found = re.search(r"listening on \S*?127\.0\.0\.1:(\d+)", line)
        if found:
            addr = ("127.0.0.1", int(found.group(1)))
            break
    logs = []
    threading.Thread(target=lambda: logs.extend(server.stdout), daemon=True).start()
    accepted, refused, lock = [0], [0], threading.Lock()

    def client(k):
        r = random.Random(seed * 100 + k)
        for _ in range(r.randint(10, 40)):
            count = r.randint(1, 100)
            body = json.dumps([{"user_id": "u%d" % r.randint(0, 50), "event_type": "soak",
                                "event_time": 1700000000000, "payload": {"n": i}}
                               for i in range(count)]).encode()
            status = post(addr, body)
            with lock:
                if status == 202:
                    accepted[0] += count
                elif status == 503:
                    refused[0] += 1
                else:
                    raise SystemExit("unexpected status %d" % status)

    clients = [threading.Thread(target=client, args=(k,)) for k in range(12)]
    for c in clients:
        c.start()
    time.sleep(rnd.uniform(0.2, 1.5))
    backlog = metrics(addr).get("tidegate_log_backlog_events", 0)
    os.remove(stall)
    for c in clients:
        c.join()
    deadline = time.time() + 30
    verdict = None
    while verdict is None:
        m = metrics(addr)
        written = m.get("tidegate_sink_events_total", 0)
        if written > accepted[0]:
            verdict = "DUPLICATES: %d written, %d accepted" % (written, accepted[0])
        elif written == accepted[0] and m.get("tidegate_log_backlog_events", 0) == 0:
            verdict = "ok"
        elif time.time() > deadline:
            verdict = "STUCK: %d of %d written, backlog %d" % (
                written, accepted[0], m.get("tidegate_log_backlog_events", 0))
        else:
            time.sleep(0.2)
    stored = distinct_rows(control) if node else None
    if verdict == "ok" and node and stored != accepted[0]:
        verdict = "ROWS: %d distinct ids stored, %d accepted" % (stored, accepted[0])
    server.terminate()
    server.wait()
    if node:
        node.kill()
        node.wait()
    print("| %s | %d | %d | %d | %d | %s | %s |" % (
        sink, seed, backlog, accepted[0], refused[0], "-" if stored is None else stored, verdict))
    if verdict != "ok":
        print("metrics: %s" % {k: v for k, v in m.items()
                               if k.startswith(("tidegate_sink_", "tidegate_log_", "tidegate_ring_"))})
        print("".join(logs[-40:]))
    return verdict == "ok"


print("| sink | seed | backlog at the stall's end (events) | accepted | 503s | distinct rows | verdict |")
print("|---|---|---|---|---|---|---|")
results = [soak(sink, seed) for seed in range(first, first + seeds) for sink in sinks]
sys.exit(0 if all(results) else 1)
PY
{
  echo "# Outage soak $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  describe_machine
  echo "Command: \`SINKS=\"$sinks\" scripts/outage-soak.sh $seeds $first\`"
  echo
  cat "$log"
} >"$out"
cat "$out"
echo "written to $out"
exit "$status"
