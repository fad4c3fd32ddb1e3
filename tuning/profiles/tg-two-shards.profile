# tidegate's own: two shards instead of one. On a 2-core machine the second shard shares
# its core with the load generator, so this row measures contention as much as scaling.
SCOPE=process
DESCRIPTION="server.shards=2"
TIDEGATE=(TIDEGATE_SHARDS=2)
