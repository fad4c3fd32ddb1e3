//! What the writers publish: per shard, whether the sink is failing (read by readiness and
//! the drain's pressure check) and what was flushed (read by `/metrics`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::observe::{self, Collector, DescriptorEncoder, Histogram};

/// Whether a shard's sink is failing: set by its writer on a failed write, cleared by the
/// next stored batch.
#[derive(Debug, Default)]
pub struct SinkHealth {
    failing: AtomicBool,
}

impl SinkHealth {
    pub fn is_failing(&self) -> bool {
        self.failing.load(Relaxed)
    }

    /// Sets the state; returns the previous one.
    pub fn set_failing(&self, failing: bool) -> bool {
        self.failing.swap(failing, Relaxed)
    }
}

/// One shard's writer, as others may read it.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub health: SinkHealth,
    batches: AtomicU64,
    events: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    flush_latency: Histogram,
}

impl WriterStats {
    pub fn flushed(&self, events: usize, bytes: usize, elapsed: Duration) {
        self.flush_latency.observe(elapsed);
        self.batches.fetch_add(1, Relaxed);
        self.events.fetch_add(events as u64, Relaxed);
        self.bytes.fetch_add(bytes as u64, Relaxed);
    }

    pub fn write_failed(&self) {
        self.errors.fetch_add(1, Relaxed);
    }

    /// Events the sink has stored.
    pub fn events_flushed(&self) -> u64 {
        self.events.load(Relaxed)
    }
}

/// Every shard's writer statistics, as one `/metrics` collector.
#[derive(Debug)]
pub struct WritersCollector(pub Vec<Arc<WriterStats>>);

impl Collector for WritersCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let each = |get: fn(&WriterStats) -> u64| observe::per_shard(&self.0, get);
        observe::counter(
            &mut encoder,
            "tidegate_sink_batches",
            "Batches the sink stored.",
            each(|s| s.batches.load(Relaxed)),
        )?;
        observe::counter(
            &mut encoder,
            "tidegate_sink_events",
            "Events the sink stored.",
            each(|s| s.events.load(Relaxed)),
        )?;
        observe::counter(
            &mut encoder,
            "tidegate_sink_bytes",
            "Encoded bytes the sink stored.",
            each(|s| s.bytes.load(Relaxed)),
        )?;
        observe::counter(
            &mut encoder,
            "tidegate_sink_errors",
            "Failed batch writes (each retried).",
            each(|s| s.errors.load(Relaxed)),
        )?;
        observe::gauge(
            &mut encoder,
            "tidegate_sink_healthy",
            "1 while the sink's last write succeeded.",
            each(|s| u64::from(!s.health.is_failing())).map(|(l, v)| (l, v as i64)),
        )?;
        observe::histogram(
            &mut encoder,
            "tidegate_sink_flush_seconds",
            "Time to store one batch.",
            1e6,
            self.0
                .iter()
                .enumerate()
                .map(|(id, s)| (observe::shard_labels(id), &s.flush_latency)),
        )
    }
}
