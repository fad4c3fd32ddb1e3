# Guest halt polling (cpuidle-haltpoll, KVM and Firecracker guests): an idle vCPU polls for
# up to 200 µs before it halts. A task woken on a polling vCPU needs no interrupt; one woken
# on a halted vCPU needs an inter-processor interrupt, which a guest pays with a VM exit.
# On loopback the server wakes its load generator once per answer, so with polling off
# every answer to an idle generator costs the server that exit. Some images boot with
# haltpoll.guest_halt_poll_ns=0 (polling off); this profile sets it back on.
SCOPE=host
DESCRIPTION="cpuidle-haltpoll guest_halt_poll_ns=200000 (idle vCPUs poll 200 µs before halting)"
SETTINGS=(
  /sys/module/haltpoll/parameters/guest_halt_poll_ns=200000
)
