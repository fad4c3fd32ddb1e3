# Sourced by the load scripts that run against the CQL test node (not run on its own).
#
#   start_testnode CPU NODES SHARDS   # starts it pinned to CPU, applies tidegate's schema,
#                                     # sets $node_pid, $port, $control_port and exports
#                                     # TIDEGATE_SCYLLA_CONTACT_POINTS for tidegate
#   control COMMAND                   # the node's answer to a control command
#
# Expects $work (a scratch directory) and release builds of tidegate and cql-testnode.

start_testnode() {
  taskset -c "$1" target/release/cql-testnode --nodes "$2" --shards "$3" --port 0 \
    --shard-aware-port 0 --control-port 0 >"$work/node.out" 2>&1 &
  node_pid=$!
  for _ in $(seq 100); do grep -q control-port "$work/node.out" 2>/dev/null && break; sleep 0.05; done
  port=$(awk '{ for (i = 1; i < NF; i++) if ($i == "port") print $(i + 1) }' "$work/node.out")
  control_port=$(awk '{ for (i = 1; i < NF; i++) if ($i == "control-port") print $(i + 1) }' "$work/node.out")
  export TIDEGATE_SCYLLA_CONTACT_POINTS="127.0.0.1:$port" TIDEGATE_SCHEMA_REPLICATION_FACTOR=1
  target/release/tidegate schema apply >/dev/null
}

control() { # control COMMAND -> the node's answer, without the END line
  exec 3<>"/dev/tcp/127.0.0.1/$control_port"
  echo "$1" >&3
  while IFS= read -r line <&3; do [[ $line == END ]] && break; echo "$line"; done
  exec 3>&-
}
