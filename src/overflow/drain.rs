//! The drain: reads the overflow topic back and writes its events into the sink, at a
//! pace that leaves the sink to live traffic first.
//!
//! It runs on a thread of its own (in the server when `kafka.drain` is on, or alone as
//! `tidegate drain`), with its own glommio executor so that it can drive the same sinks
//! the shards use: for ScyllaDB, the same token- and shard-aware grouping and the same
//! driver. Delivery is at least once: offsets are committed only after the sink stored
//! the events, so a crash between the two writes some events twice, which is harmless
//! because rows are keyed by (user_id, event_time, event_id).
//!
//! While the server is under pressure (a ring above its high-water mark, a failing sink,
//! or a spill within the last two seconds) the drain pauses its partitions: draining into
//! a sink that cannot keep up with live traffic would only make the edge spill more.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use thiserror::Error;

use super::producer::client_config;
use super::settings::KafkaSettings;
use super::stats::OverflowStats;
use crate::encoded::EventBatch;
use crate::sink::{Sink, SinkError, SinkFactory, SinkRole};
use crate::writer::{store_with_retries, Backoff, Retry};

#[derive(Debug, Error)]
pub enum DrainError {
    #[error("Kafka consumer: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("cannot start the drain's executor: {0}")]
    Executor(String),
}

/// Why the drain should hold off right now, if it should.
pub type Pressure = Box<dyn Fn() -> Option<String> + Send>;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DrainSummary {
    pub events: u64,
    pub batches: u64,
}

/// Publishes the consumer lag librdkafka reports in its statistics.
struct LagReporter {
    stats: Arc<OverflowStats>,
    topic: String,
}

impl ClientContext for LagReporter {
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        let mut lag = self.stats.drain_lag.lock().unwrap();
        for (&partition, p) in &topic.partitions {
            // Partition -1 is librdkafka's internal "unassigned"; -1 lag means unknown.
            if partition >= 0 && p.consumer_lag >= 0 {
                lag.insert(partition, p.consumer_lag);
            }
        }
    }
}

impl ConsumerContext for LagReporter {}

const POLL_WAIT: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Drains until `stop` is set; returns what it wrote. Must run on a glommio executor.
/// Events it read but could not write when stopped are not committed: the next drain
/// reads them again.
async fn run<S: Sink>(
    config: &KafkaSettings,
    sink: &mut S,
    stats: Arc<OverflowStats>,
    pressure: Pressure,
    stop: Arc<AtomicBool>,
) -> Result<DrainSummary, DrainError> {
    let consumer: BaseConsumer<LagReporter> = client_config(config)
        .set("group.id", &config.consumer_group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "1000")
        .create_with_context(LagReporter {
            stats: stats.clone(),
            topic: config.topic.clone(),
        })?;
    consumer.subscribe(&[&config.topic])?;
    tracing::info!(topic = %config.topic, group = %config.consumer_group, "drain started");

    let mut summary = DrainSummary::default();
    let mut batch = EventBatch::with_capacity(config.drain_batch_events);
    let mut next_offsets: BTreeMap<i32, i64> = BTreeMap::new();
    let mut paused = false;
    while !stop.load(Relaxed) {
        match pressure() {
            Some(reason) => {
                // Re-applied every round: partitions assigned by a rebalance start unpaused.
                if let Ok(assigned) = consumer.assignment() {
                    consumer.pause(&assigned)?;
                }
                if !paused {
                    paused = true;
                    stats.drain_pauses.fetch_add(1, Relaxed);
                    stats.drain_paused.store(true, Relaxed);
                    tracing::info!(%reason, "drain paused");
                }
            }
            None if paused => {
                if let Ok(assigned) = consumer.assignment() {
                    consumer.resume(&assigned)?;
                }
                paused = false;
                stats.drain_paused.store(false, Relaxed);
                tracing::info!("drain resumed");
            }
            None => {}
        }

        // The first poll may wait (this thread has nothing else to do); the rest only
        // take what has already arrived, up to a batch.
        let mut wait = POLL_WAIT;
        while batch.len() < config.drain_batch_events {
            match consumer.poll(wait) {
                None => break,
                Some(Ok(message)) => {
                    if let Some(payload) = message.payload() {
                        batch.push(Bytes::copy_from_slice(payload));
                    }
                    next_offsets.insert(message.partition(), message.offset() + 1);
                }
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "drain: consumer error");
                    break;
                }
            }
            wait = Duration::ZERO;
        }
        if next_offsets.is_empty() {
            // Let the executor run anything else it has (the sink's upkeep).
            glommio::executor().yield_task_queue_now().await;
            continue;
        }

        let stored = store_with_retries(
            sink,
            &batch,
            Backoff::new(Duration::from_millis(50), MAX_BACKOFF),
            async |err: &SinkError| {
                if stop.load(Relaxed) {
                    return Retry::Stop;
                }
                tracing::warn!(error = %err, "drain: sink write failed; retrying");
                Retry::After
            },
        )
        .await;
        if let Err(err) = stored {
            tracing::warn!(error = %err, "drain stopped before a batch was written; it will be read again");
            return finish(sink, summary).await;
        }
        let mut offsets = TopicPartitionList::new();
        for (&partition, &offset) in &next_offsets {
            offsets.add_partition_offset(&config.topic, partition, Offset::Offset(offset))?;
        }
        if let Err(err) = consumer.commit(&offsets, CommitMode::Sync) {
            // The events are stored; they will be drained once more after a restart.
            stats.drain_commit_errors.fetch_add(1, Relaxed);
            tracing::warn!(error = %err, "drain: offset commit failed");
        }
        stats.events_drained.fetch_add(batch.len() as u64, Relaxed);
        stats.drain_batches.fetch_add(1, Relaxed);
        summary.events += batch.len() as u64;
        summary.batches += 1;
        batch.clear();
        next_offsets.clear();
    }
    finish(sink, summary).await
}

async fn finish<S: Sink>(sink: &mut S, summary: DrainSummary) -> Result<DrainSummary, DrainError> {
    sink.close().await?;
    tracing::info!(
        events = summary.events,
        batches = summary.batches,
        "drain stopped"
    );
    Ok(summary)
}

/// Starts the drain on a thread of its own, writing into a sink `sinks` opens for it (for
/// ScyllaDB, through the driver the shards use too). Refused events go to
/// `DATA_DIR/dead-letter/drain`; with the spool sink, drained events go to
/// `DATA_DIR/drained`.
pub fn spawn_drain(
    settings: KafkaSettings,
    sinks: SinkFactory,
    stats: Arc<OverflowStats>,
    pressure: Pressure,
    stop: Arc<AtomicBool>,
) -> Result<glommio::ExecutorJoinHandle<Result<DrainSummary, DrainError>>, DrainError> {
    glommio::LocalExecutorBuilder::default()
        .name("tidegate-drain")
        .spawn(move || async move {
            let mut sink = sinks.open(SinkRole::Drain).await?;
            run(&settings, &mut sink, stats, pressure, stop).await
        })
        .map_err(|e| DrainError::Executor(e.to_string()))
}
