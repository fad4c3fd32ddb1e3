# Larger TCP autotuning bounds: 100-event bodies and pipelined requests move in fewer,
# larger reads. The per-namespace half of socket buffer sizing (tcp_rmem/tcp_wmem);
# rmem_max/wmem_max are host-wide and in socket-buffers-max.
SCOPE=netns
DESCRIPTION="tcp_rmem/tcp_wmem max 16 MiB, default 256 KiB"
SETTINGS=(
  "net.ipv4.tcp_rmem=4096 262144 16777216"
  "net.ipv4.tcp_wmem=4096 262144 16777216"
)
