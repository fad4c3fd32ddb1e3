# Many short connections from one client address (a load balancer, a load generator)
# exhaust ephemeral ports in TIME_WAIT; reusing them for new outgoing connections and
# widening the port range keeps such clients connecting.
SCOPE=netns
DESCRIPTION="tcp_tw_reuse=1 and ip_local_port_range 1024-65000"
SETTINGS=(
  net.ipv4.tcp_tw_reuse=1
  "net.ipv4.ip_local_port_range=1024 65000"
)
