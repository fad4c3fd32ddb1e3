# tidegate's own: each shard polls io_uring for 100 µs before sleeping (glommio's
# spin-before-park), so a request arriving just after the last one wakes no thread.
SCOPE=process
DESCRIPTION="server.spin_before_park_us=100"
TIDEGATE=(TIDEGATE_SERVER_SPIN_BEFORE_PARK_US=100)
