# Receive packet steering and flow steering: spread a single-queue NIC's receive work over
# every core, steering each flow to the core whose shard reads it (RFS), and pin transmit
# queues to cores (XPS). The NIC is TIDEGATE_TUNING_NIC, else the default route's device.
SCOPE=host
DESCRIPTION="RPS on every core, RFS 32768 flows, XPS per tx queue"
settings() {
  local nic=${TIDEGATE_TUNING_NIC:-$(awk '$2 == "00000000" { print $1; exit }' /proc/net/route)}
  [[ -n $nic && $nic != lo && -d /sys/class/net/$nic/queues ]] \
    || { echo "no NIC to tune (TIDEGATE_TUNING_NIC=${nic:-unset})"; return 1; }
  local cpus mask q i=0
  cpus=$(nproc)
  mask=$(printf '%x' $(( (1 << cpus) - 1 )))
  echo "net.core.rps_sock_flow_entries=32768"
  for q in /sys/class/net/$nic/queues/rx-*; do
    echo "$q/rps_cpus=$mask"
    echo "$q/rps_flow_cnt=4096"
  done
  for q in /sys/class/net/$nic/queues/tx-*; do
    [[ -e $q/xps_cpus ]] || continue
    echo "$q/xps_cpus=$(printf '%x' $(( 1 << (i % cpus) )))"
    i=$((i + 1))
  done
}
