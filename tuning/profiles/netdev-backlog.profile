# Packets queued per CPU between the NIC's interrupt and the protocol stack: at high
# packet rates the default (1000) drops before TCP ever sees them.
SCOPE=host
DESCRIPTION="netdev_max_backlog=16384, netdev_budget=600"
SETTINGS=(
  net.core.netdev_max_backlog=16384
  net.core.netdev_budget=600
)
