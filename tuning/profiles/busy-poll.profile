# Busy polling: a socket read or poll spins on the device queue for up to 50 µs before
# sleeping, trading CPU for lower latency on a core that has nothing else to do.
SCOPE=host
DESCRIPTION="busy_poll=50 and busy_read=50 (µs)"
SETTINGS=(
  net.core.busy_poll=50
  net.core.busy_read=50
)
