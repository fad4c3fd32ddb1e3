//! Stage 4: the shard's writer, which turns a stream of small requests into few large writes.
//!
//! It waits for the first event, then gives the batch until it holds `max_events` events or
//! `max_bytes` bytes, or until `max_delay` after that first event, whichever comes first,
//! and hands it to the sink. A failed write is retried with exponential backoff, never
//! dropped: while the sink fails, the ring fills and admission answers 503, which is the
//! backpressure the client can act on. Events leave the ring only once stored.
//!
//! One exception to "retry until the sink takes it": during shutdown, with the Kafka
//! overflow configured, a batch the sink refuses is spilled instead (acknowledged by the
//! broker before it leaves the ring), so that a stop does not wait forever on a dead sink
//! and the drain delivers those events later.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future;
use glommio::timer::sleep;

use crate::observe::metrics::Metrics;
use crate::overflow::spill::Spill;
use crate::ring::ShardRing;
use crate::sink::{Sink, SinkError, TICK};

/// When the writer flushes.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    pub max_events: usize,
    pub max_bytes: usize,
    pub max_delay: Duration,
}

/// Backoff between retries of a failed write.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs until the ring is closed and empty, then closes the sink.
pub async fn run<S: Sink>(
    shard: usize,
    ring: Rc<ShardRing>,
    mut sink: S,
    policy: BatchPolicy,
    metrics: Arc<Metrics>,
    overflow: Option<Arc<Spill>>,
) -> Result<(), SinkError> {
    let m = metrics.shard(shard);
    let mut batch: Vec<Bytes> = Vec::with_capacity(policy.max_events);
    loop {
        // Idle: wait for the first event, keeping the sink's upkeep going.
        while ring.ring.borrow().is_empty() {
            if ring.is_closing() {
                return sink.close().await;
            }
            let pushed = ring.listen();
            if !ring.ring.borrow().is_empty() || ring.is_closing() {
                continue;
            }
            future::or(pushed, sleep(TICK)).await;
            if let Err(err) = sink.tick().await {
                tracing::warn!(shard, error = %err, "sink upkeep failed");
            }
        }

        // Filling: give the batch until it is full or its first event has waited long enough.
        // Pushes wake us only once a full batch is waiting (see `ShardRing::notify_pushed`).
        let deadline = Instant::now() + policy.max_delay;
        loop {
            let full = ring
                .ring
                .borrow()
                .has_full_batch(policy.max_events, policy.max_bytes);
            let now = Instant::now();
            if full || now >= deadline || ring.is_closing() {
                break;
            }
            let pushed = ring.listen();
            future::or(pushed, sleep(deadline - now)).await;
        }

        let bytes = ring
            .ring
            .borrow()
            .peek_batch(policy.max_events, policy.max_bytes, &mut batch);
        let started = Instant::now();
        let stored = write_until_stored(shard, &mut sink, &batch, &metrics, &ring, &overflow).await;

        let mut r = ring.ring.borrow_mut();
        r.consume(batch.len());
        m.ring_depth(r.len(), r.bytes());
        drop(r);
        if stored == Stored::InSink {
            m.flush_latency.observe(started.elapsed());
            m.batches_flushed.fetch_add(1, Relaxed);
            m.events_flushed.fetch_add(batch.len() as u64, Relaxed);
            m.bytes_flushed.fetch_add(bytes as u64, Relaxed);
        }
        batch.clear();
    }
}

/// Where a batch ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    InSink,
    /// Spilled to the overflow topic during shutdown (counted there as spilled).
    InOverflow,
}

/// Writes `batch`, retrying with capped exponential backoff until the sink takes it.
/// Accepted events are never dropped; a sink that fails forever holds the shard at 503, and
/// holds a shutdown too unless the overflow can take the batch instead.
async fn write_until_stored<S: Sink>(
    shard: usize,
    sink: &mut S,
    batch: &[Bytes],
    metrics: &Metrics,
    ring: &ShardRing,
    overflow: &Option<Arc<Spill>>,
) -> Stored {
    let m = metrics.shard(shard);
    let mut backoff = FIRST_BACKOFF;
    loop {
        match sink.write_batch(batch).await {
            Ok(()) => {
                if m.sink_failing.swap(false, Relaxed) {
                    tracing::info!(shard, "sink recovered");
                }
                return Stored::InSink;
            }
            Err(err) => {
                m.sink_errors.fetch_add(1, Relaxed);
                if !m.sink_failing.swap(true, Relaxed) {
                    tracing::error!(shard, error = %err, events = batch.len(), "sink write failed; retrying");
                }
                if let (true, Some(spill)) = (ring.is_closing(), overflow) {
                    if let Ok(elapsed) = spill.send(shard, batch).await {
                        spill.stats.spilled_at_shutdown(batch.len(), elapsed);
                        tracing::warn!(
                            shard,
                            events = batch.len(),
                            "shutting down with the sink failing: batch spilled to the overflow topic"
                        );
                        return Stored::InOverflow;
                    }
                }
                sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
