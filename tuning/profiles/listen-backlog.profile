# Accept queues deep enough for connection storms (an SDK fleet reconnecting after a
# deploy): the kernel caps every listen() backlog at somaxconn, so tidegate's own backlog
# only takes effect with it.
SCOPE=netns
DESCRIPTION="somaxconn, tcp_max_syn_backlog and server.backlog to 65535"
SETTINGS=(
  net.core.somaxconn=65535
  net.ipv4.tcp_max_syn_backlog=65535
)
TIDEGATE=(TIDEGATE_SERVER_BACKLOG=65535)
