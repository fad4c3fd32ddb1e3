//! What the overflow stage counts, shared by the shards, the drain and `/metrics`.
//!
//! The shards and the drain run on different threads, so these are atomics; spilling is the
//! slow path (a broker round trip per request), so a shared counter costs nothing that
//! matters there. The timestamps of the last spill and the last failed spill are what
//! `/ready` and the drain's pause decision read.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::observe::{self, Collector, DescriptorEncoder, Histogram};

/// Why a spill was refused; each is a `kind` label of the produce-error counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpillFailure {
    /// The producer's local queue could not take the request's events.
    QueueFull,
    /// Not every event was acknowledged within the deadline.
    Deadline,
    /// The broker or librdkafka reported an error for an event.
    Broker,
}

impl SpillFailure {
    pub const ALL: [SpillFailure; 3] = [
        SpillFailure::QueueFull,
        SpillFailure::Deadline,
        SpillFailure::Broker,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SpillFailure::QueueFull => "queue_full",
            SpillFailure::Deadline => "deadline",
            SpillFailure::Broker => "broker",
        }
    }
}

/// How long after its last spill a shard still counts as spilling, and after the last
/// failed spill the overflow still counts as saturated.
pub const SPILLING_WINDOW: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct OverflowStats {
    /// Events acknowledged by the broker for requests answered 202.
    pub(super) events_spilled: AtomicU64,
    /// Of those, events spilled by the hot-key limit rather than a full ring.
    pub(super) events_hot_key: AtomicU64,
    pub(super) requests_spilled: AtomicU64,
    /// Of the spilled events, those a writer spilled at shutdown because its sink failed.
    pub(super) events_spilled_at_shutdown: AtomicU64,
    failures: [AtomicU64; SpillFailure::ALL.len()],
    /// Events the broker holds although their request was answered 503 (acknowledged
    /// late, or beside an event that failed): they will be drained all the same (see the
    /// README on retries and event_id).
    pub(super) events_orphaned: AtomicU64,
    /// Time from the first produce of a request to its last acknowledgement.
    pub(super) produce_latency: Histogram,
    /// Messages in the producer's queue or in flight, as of the last spill.
    pub(super) producer_queue: AtomicU64,
    pub(super) queue_max_messages: AtomicU64,
    last_spill_ms: AtomicI64,
    last_failure_ms: AtomicI64,

    pub(super) events_drained: AtomicU64,
    pub(super) drain_batches: AtomicU64,
    pub(super) drain_pauses: AtomicU64,
    pub(super) drain_paused: AtomicBool,
    pub(super) drain_commit_errors: AtomicU64,
    /// Consumer lag per partition, from librdkafka's statistics.
    pub(super) drain_lag: Mutex<BTreeMap<i32, i64>>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn within_window(at_ms: i64) -> bool {
    at_ms > 0 && now_ms() - at_ms < SPILLING_WINDOW.as_millis() as i64
}

impl OverflowStats {
    /// Counts a request answered 202 with `events` of its events acknowledged by the
    /// broker (`hot_key_events` of them sent there by the hot-key limit), `elapsed` after
    /// its first event was produced.
    pub fn spilled(&self, events: usize, hot_key_events: usize, elapsed: Duration) {
        self.events_spilled.fetch_add(events as u64, Relaxed);
        self.events_hot_key
            .fetch_add(hot_key_events as u64, Relaxed);
        self.requests_spilled.fetch_add(1, Relaxed);
        self.produce_latency.observe(elapsed);
        self.last_spill_ms.store(now_ms(), Relaxed);
    }

    /// Counts a batch a writer spilled at shutdown (see `crate::writer::Fallback`).
    pub fn spilled_at_shutdown(&self, events: usize, elapsed: Duration) {
        self.events_spilled.fetch_add(events as u64, Relaxed);
        self.events_spilled_at_shutdown
            .fetch_add(events as u64, Relaxed);
        self.produce_latency.observe(elapsed);
        self.last_spill_ms.store(now_ms(), Relaxed);
    }

    pub fn failed(&self, why: SpillFailure) {
        self.failures[why as usize].fetch_add(1, Relaxed);
        self.last_failure_ms.store(now_ms(), Relaxed);
    }

    pub fn failures(&self, why: SpillFailure) -> u64 {
        self.failures[why as usize].load(Relaxed)
    }

    /// Whether any request spilled within the last [`SPILLING_WINDOW`].
    pub fn spilling(&self) -> bool {
        within_window(self.last_spill_ms.load(Relaxed))
    }

    /// Whether the overflow itself is refusing: a spill failed within the last
    /// [`SPILLING_WINDOW`], or the producer's queue is at least 90% full.
    pub fn saturated(&self) -> Option<&'static str> {
        if within_window(self.last_failure_ms.load(Relaxed)) {
            return Some("the overflow topic refused a spill within the last 2 s");
        }
        let max = self.queue_max_messages.load(Relaxed);
        if max > 0 && self.producer_queue.load(Relaxed) * 10 >= max * 9 {
            return Some("the Kafka producer's queue is at least 90% full");
        }
        None
    }
}

impl Collector for OverflowStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let counters = [
            (
                "tidegate_kafka_spilled_events",
                "Events spilled to the overflow topic and acknowledged in time.",
                &self.events_spilled,
            ),
            (
                "tidegate_kafka_hot_key_events",
                "Of the spilled events, those sent there by the per-user rate limit.",
                &self.events_hot_key,
            ),
            (
                "tidegate_kafka_spilled_requests",
                "Requests answered 202 with some or all events spilled.",
                &self.requests_spilled,
            ),
            (
                "tidegate_kafka_spilled_at_shutdown_events",
                "Of the spilled events, those spilled at shutdown because the sink was failing.",
                &self.events_spilled_at_shutdown,
            ),
            (
                "tidegate_kafka_orphaned_events",
                "Events the broker holds although their request was answered 503.",
                &self.events_orphaned,
            ),
            (
                "tidegate_kafka_drained_events",
                "Events the drain wrote to the sink and committed.",
                &self.events_drained,
            ),
            (
                "tidegate_kafka_drain_batches",
                "Batches the drain wrote to the sink.",
                &self.drain_batches,
            ),
            (
                "tidegate_kafka_drain_pauses",
                "Times the drain paused its partitions to leave the sink to live traffic.",
                &self.drain_pauses,
            ),
            (
                "tidegate_kafka_drain_commit_errors",
                "Offset commits that failed (the events are drained again: at least once).",
                &self.drain_commit_errors,
            ),
        ];
        observe::unlabelled_counters(&mut encoder, &counters)?;
        observe::counter(
            &mut encoder,
            "tidegate_kafka_produce_errors",
            "Spills refused (answered 503), by kind.",
            SpillFailure::ALL
                .iter()
                .map(|why| (vec![("kind", why.as_str().to_owned())], self.failures(*why))),
        )?;
        observe::gauge(
            &mut encoder,
            "tidegate_kafka_producer_queue_messages",
            "Messages queued or in flight in the producer, as of the last spill.",
            [(Vec::new(), self.producer_queue.load(Relaxed) as i64)],
        )?;
        observe::gauge(
            &mut encoder,
            "tidegate_kafka_drain_paused",
            "1 while the drain's partitions are paused.",
            [(Vec::new(), i64::from(self.drain_paused.load(Relaxed)))],
        )?;
        let lag: Vec<_> = self
            .drain_lag
            .lock()
            .unwrap()
            .iter()
            .map(|(partition, lag)| (vec![("partition", partition.to_string())], *lag))
            .collect();
        observe::gauge(
            &mut encoder,
            "tidegate_kafka_drain_lag_messages",
            "Messages not yet drained, per partition of the overflow topic.",
            lag,
        )?;
        observe::histogram(
            &mut encoder,
            "tidegate_kafka_produce_seconds",
            "From a spilled request's first produce to its last acknowledgement.",
            1e6,
            [(Vec::new(), &self.produce_latency)],
        )
    }
}
