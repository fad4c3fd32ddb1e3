# Each of the NIC's queue interrupts on its own core, round robin, instead of wherever
# irqbalance put them: a shard's packets arrive on a predictable core. The NIC is
# TIDEGATE_TUNING_NIC, else the default route's device.
SCOPE=host
DESCRIPTION="NIC queue IRQs spread one per core"
settings() {
  local nic=${TIDEGATE_TUNING_NIC:-$(awk '$2 == "00000000" { print $1; exit }' /proc/net/route)}
  [[ -n $nic && $nic != lo ]] || { echo "no NIC to tune"; return 1; }
  local cpus irqs i=0 irq
  cpus=$(nproc)
  # virtio names its queue IRQs after the device (virtioN-input.M), others after the NIC.
  irqs=$(grep -E "$nic|virtio[0-9]+-(input|output)" /proc/interrupts | awk -F: '{ gsub(/ /, "", $1); print $1 }')
  [[ -n $irqs ]] || { echo "no IRQs found for $nic in /proc/interrupts"; return 1; }
  for irq in $irqs; do
    echo "/proc/irq/$irq/smp_affinity_list=$((i % cpus))"
    i=$((i + 1))
  done
}
