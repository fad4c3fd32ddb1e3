# tidegate's own: the writer drains 1,000 events at a time instead of 10,000 (more, smaller
# sink writes), with a 1 ms batch deadline.
SCOPE=process
DESCRIPTION="batch.max_events=1000, batch.max_delay_ms=1"
TIDEGATE=(TIDEGATE_BATCH_MAX_EVENTS=1000 TIDEGATE_BATCH_MAX_DELAY_MS=1)
