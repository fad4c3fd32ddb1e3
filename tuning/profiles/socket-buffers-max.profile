# The host-wide ceilings on socket buffers that SO_RCVBUF/SO_SNDBUF may ask for.
SCOPE=host
DESCRIPTION="net.core rmem_max/wmem_max to 16 MiB"
SETTINGS=(
  net.core.rmem_max=16777216
  net.core.wmem_max=16777216
)
