# tidegate's own: a 4 MiB ring per shard instead of 64 MiB (less memory; a burst the
# sink cannot absorb reaches 503 sooner).
SCOPE=process
DESCRIPTION="ring.capacity_bytes=4 MiB"
TIDEGATE=(TIDEGATE_RING_CAPACITY_BYTES=4194304)
