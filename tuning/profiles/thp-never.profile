# Transparent huge pages off: khugepaged's compaction can stall a shard's allocation for
# milliseconds; "never" trades those stalls for more TLB misses.
SCOPE=host
DESCRIPTION="transparent_hugepage enabled=never, defrag=never"
SETTINGS=(
  /sys/kernel/mm/transparent_hugepage/enabled=never
  /sys/kernel/mm/transparent_hugepage/defrag=never
)
