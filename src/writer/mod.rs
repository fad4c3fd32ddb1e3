//! The shard's writer, which turns a stream of small requests into few large writes.
//!
//! It waits for the first event, then gives the batch until it holds `max_events` events or
//! `max_bytes` bytes, or until `max_delay` after that first event, whichever comes first,
//! and hands it to the sink. A failed write is retried with exponential backoff, never
//! dropped: while the sink fails, the buffer fills and admission answers 503, which is the
//! backpressure the client can act on. Events leave the buffer only once stored.
//!
//! One exception to "retry until the sink takes it": during shutdown, a batch the sink
//! refuses may be handed to a [`Fallback`] (the Kafka overflow, acknowledged by the broker
//! before the batch leaves the buffer), so that a stop does not wait forever on a dead sink.
//!
//! The writer reads through [`BatchSource`], what it needs of a buffer, so that the buffer
//! can be the memory ring today and a log on disk tomorrow; it publishes whether its sink
//! is failing in [`SinkHealth`], which readiness reads.

mod retry;
mod stats;

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::timer::sleep;

use crate::encoded::EventBatch;
use crate::sink::{Sink, SinkError, TICK};

pub use retry::{store_with_retries, Backoff, Retry};
pub use stats::{SinkHealth, WriterStats, WritersCollector};

/// When the writer flushes.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    pub max_events: usize,
    pub max_bytes: usize,
    pub max_delay: Duration,
}

/// What the writer needs of the buffer it drains.
#[allow(async_fn_in_trait)] // shard-local: futures never cross threads
pub trait BatchSource {
    fn is_empty(&self) -> bool;
    /// Whether a full batch (by the writer's policy) is waiting.
    fn has_full_batch(&self, policy: &BatchPolicy) -> bool;
    /// Puts the oldest events into `batch` (emptied first) without removing them; returns
    /// the bytes peeked. Async because what is kept on disk only is read back from it.
    async fn peek_batch(&self, policy: &BatchPolicy, batch: &mut EventBatch) -> usize;
    /// Removes the `count` oldest events, which are stored.
    fn consume(&self, count: usize);
    /// Removes the `count` oldest events, which a [`Fallback`] took instead of the sink.
    fn consume_unstored(&self, count: usize) {
        self.consume(count)
    }
    /// A future that completes at the next push or close; create it *before* checking the
    /// condition it waits for, so a push in between is not missed.
    fn listen(&self) -> event_listener::EventListener;
    /// Whether nothing more will be pushed: drain what is left and stop.
    fn is_closing(&self) -> bool;
}

/// Where a batch may go at shutdown when the sink refuses it.
#[allow(async_fn_in_trait)] // shard-local: futures never cross threads
pub trait Fallback {
    /// Takes the whole batch (true) or none of it (false).
    async fn take(&self, shard: usize, batch: &EventBatch) -> bool;
}

/// No fallback: at shutdown, as at any time, the writer retries until the sink takes it.
pub struct NoFallback;

impl Fallback for NoFallback {
    async fn take(&self, _shard: usize, _batch: &EventBatch) -> bool {
        false
    }
}

/// Backoff between retries of a failed write.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs until the buffer is closed and empty, then closes the sink.
pub async fn run<B: BatchSource, S: Sink, F: Fallback>(
    shard: usize,
    buffer: Rc<B>,
    mut sink: S,
    policy: BatchPolicy,
    stats: Arc<WriterStats>,
    fallback: Option<F>,
) -> Result<(), SinkError> {
    let mut batch = EventBatch::with_capacity(policy.max_events);
    let mut handed_nothing = false;
    loop {
        // Idle: wait for the first event, keeping the sink's upkeep going.
        while buffer.is_empty() {
            if buffer.is_closing() {
                return sink.close().await;
            }
            let pushed = buffer.listen();
            if !buffer.is_empty() || buffer.is_closing() {
                continue;
            }
            future::or(pushed, sleep(TICK)).await;
            if let Err(err) = sink.tick().await {
                tracing::warn!(shard, error = %err, "sink upkeep failed");
            }
        }

        // Filling: give the batch until it is full or its first event has waited long enough.
        // Pushes wake us only once a full batch is waiting (see the ring's `notify_pushed`).
        let deadline = Instant::now() + policy.max_delay;
        loop {
            let now = Instant::now();
            if buffer.has_full_batch(&policy) || now >= deadline || buffer.is_closing() {
                break;
            }
            let pushed = buffer.listen();
            future::or(pushed, sleep(deadline - now)).await;
        }

        let bytes = buffer.peek_batch(&policy, &mut batch).await;
        if batch.is_empty() {
            // A buffer that holds events but hands none over (the log's backlog, were it
            // ever unable to find where a request's group starts) must not turn the writer
            // into a loop of empty writes that never yields: with a sink that does not
            // wait, the shard would stop serving altogether. Say so once, then look again
            // each tick.
            if !std::mem::replace(&mut handed_nothing, true) {
                tracing::error!(
                    shard,
                    "the buffer holds events but gave none to write; retrying every tick"
                );
            }
            sleep(TICK).await;
            continue;
        }
        if std::mem::replace(&mut handed_nothing, false) {
            tracing::info!(shard, "the buffer gives events to write again");
        }
        let started = Instant::now();
        let stored =
            write_until_stored(shard, &mut sink, &batch, &stats, &*buffer, &fallback).await;
        match stored {
            Stored::InSink => {
                buffer.consume(batch.len());
                stats.flushed(batch.len(), bytes, started.elapsed());
            }
            Stored::InFallback => buffer.consume_unstored(batch.len()),
        }
        batch.clear();
    }
}

/// Where a batch ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    InSink,
    /// Taken by the fallback during shutdown (counted there).
    InFallback,
}

/// Writes `batch`, retrying with capped exponential backoff until the sink takes it.
/// Accepted events are never dropped; a sink that fails forever holds the shard at 503, and
/// holds a shutdown too unless the fallback takes the batch instead.
async fn write_until_stored<S: Sink, B: BatchSource, F: Fallback>(
    shard: usize,
    sink: &mut S,
    batch: &EventBatch,
    stats: &WriterStats,
    buffer: &B,
    fallback: &Option<F>,
) -> Stored {
    let mut in_fallback = false;
    let stored = store_with_retries(
        sink,
        batch,
        Backoff::new(FIRST_BACKOFF, MAX_BACKOFF),
        async |err: &SinkError| {
            stats.write_failed();
            if !stats.health.set_failing(true) {
                tracing::error!(shard, error = %err, events = batch.len(), "sink write failed; retrying");
            }
            if let (true, Some(fallback)) = (buffer.is_closing(), fallback) {
                if fallback.take(shard, batch).await {
                    tracing::warn!(
                        shard,
                        events = batch.len(),
                        "shutting down with the sink failing: batch handed to the fallback"
                    );
                    in_fallback = true;
                    return Retry::Stop;
                }
            }
            Retry::After
        },
    )
    .await;
    if in_fallback {
        return Stored::InFallback;
    }
    debug_assert!(stored.is_ok(), "only the fallback stops the retries");
    if stats.health.set_failing(false) {
        tracing::info!(shard, "sink recovered");
    }
    Stored::InSink
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use bytes::Bytes;

    use super::*;

    /// A buffer that claims `events` events but hands over none until `gives` is set.
    #[derive(Default)]
    struct Withholding {
        events: Cell<usize>,
        gives: Cell<bool>,
        pushed: event_listener::Event,
    }

    impl BatchSource for Withholding {
        fn is_empty(&self) -> bool {
            self.events.get() == 0
        }
        fn has_full_batch(&self, _policy: &BatchPolicy) -> bool {
            !self.is_empty()
        }
        async fn peek_batch(&self, _policy: &BatchPolicy, batch: &mut EventBatch) -> usize {
            batch.clear();
            if self.gives.get() {
                for _ in 0..self.events.get() {
                    batch.push(Bytes::from_static(b"event"));
                }
            }
            batch.bytes()
        }
        fn consume(&self, count: usize) {
            self.events.set(self.events.get() - count);
        }
        fn listen(&self) -> event_listener::EventListener {
            self.pushed.listen()
        }
        fn is_closing(&self) -> bool {
            true
        }
    }

    /// Counts its writes; never waits.
    struct Counting(Rc<Cell<usize>>);

    impl Sink for Counting {
        async fn write_batch(&mut self, batch: &EventBatch) -> Result<(), SinkError> {
            assert!(!batch.is_empty(), "the writer never writes an empty batch");
            self.0.set(self.0.get() + 1);
            Ok(())
        }
        async fn close(&mut self) -> Result<(), SinkError> {
            Ok(())
        }
    }

    #[test]
    fn a_buffer_that_hands_over_nothing_does_not_hold_the_shard() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let buffer = Rc::new(Withholding::default());
                buffer.events.set(3);
                let writes = Rc::new(Cell::new(0));
                let policy = BatchPolicy {
                    max_events: 10,
                    max_bytes: 1 << 20,
                    max_delay: Duration::from_millis(1),
                };
                let writer = glommio::spawn_local(run(
                    0,
                    buffer.clone(),
                    Counting(writes.clone()),
                    policy,
                    Arc::new(WriterStats::default()),
                    None::<NoFallback>,
                ));
                // Other tasks on the shard still run while the buffer withholds.
                let mut ran = 0;
                for _ in 0..20 {
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                    ran += 1;
                }
                assert_eq!((ran, writes.get()), (20, 0));
                buffer.gives.set(true);
                writer.await.unwrap();
                assert_eq!((writes.get(), buffer.events.get()), (1, 0));
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
