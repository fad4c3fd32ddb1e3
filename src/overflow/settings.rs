//! The `[kafka]` settings: the overflow topic, its producer, the drain and the hot-key limit.

use serde::{Deserialize, Serialize};

/// How spilled events are compressed on the wire and in the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// librdkafka's name for it (`compression.type`).
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// The Kafka overflow: where a full ring spills, and the drain that brings spilled events
/// back. With no brokers configured there is no overflow and a full ring means 503.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// Bootstrap brokers, `host:port`; empty turns the overflow off. From the environment:
    /// comma-separated.
    pub brokers: Vec<String>,
    pub topic: String,
    /// Create the topic at start-up if it is missing (brokers such as tansu do not
    /// auto-create topics), with this many partitions and this replication factor.
    pub create_topic: bool,
    pub partitions: i32,
    pub replication_factor: i32,
    /// A spilled request is answered 202 only once the broker acknowledged every event
    /// (acks=all) within this deadline; otherwise 503.
    pub ack_deadline_ms: u64,
    /// The producer's local queue: beyond either bound a spill is refused at once (503).
    pub queue_max_messages: u32,
    pub queue_max_kbytes: u32,
    pub linger_ms: u32,
    /// An idempotent producer: librdkafka's retries cannot duplicate or reorder an event
    /// within a partition. Off only for brokers that mishandle it (see the README).
    pub idempotence: bool,
    pub compression: Compression,
    /// Consumer group of the drain.
    pub consumer_group: String,
    /// Run the drain inside the server (otherwise run `tidegate drain` as its own process).
    pub drain: bool,
    /// Events the drain writes to the sink per batch (and commits per offset commit).
    pub drain_batch_events: usize,
    /// Per user_id and shard, events per second beyond which that user's events go
    /// straight to the overflow topic; 0 turns the hot-key limit off.
    pub hot_key_events_per_second: u32,
    /// Events a user may send at once before the per-second limit applies.
    pub hot_key_burst: u32,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            brokers: Vec::new(),
            topic: "tidegate-overflow".into(),
            create_topic: true,
            partitions: 12,
            replication_factor: 1,
            ack_deadline_ms: 2_000,
            queue_max_messages: 100_000,
            queue_max_kbytes: 64 * 1024,
            linger_ms: 5,
            idempotence: true,
            compression: Compression::Zstd,
            consumer_group: "tidegate-drain".into(),
            drain: false,
            drain_batch_events: 5_000,
            hot_key_events_per_second: 0,
            hot_key_burst: 1_000,
        }
    }
}

impl KafkaSettings {
    /// Whether a full ring spills to Kafka (rather than answering 503 at once).
    pub fn enabled(&self) -> bool {
        !self.brokers.is_empty()
    }

    /// The first rule these settings break, as (key, message).
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.topic.is_empty() {
            return Err(("kafka.topic", "must not be empty"));
        }
        if self.partitions < 1 || self.replication_factor < 1 {
            return Err((
                "kafka.partitions",
                "kafka.partitions and kafka.replication_factor must be at least 1",
            ));
        }
        if self.ack_deadline_ms == 0 || self.queue_max_messages == 0 {
            return Err((
                "kafka.ack_deadline_ms",
                "kafka.ack_deadline_ms and kafka.queue_max_messages must be greater than 0",
            ));
        }
        if self.drain_batch_events == 0 {
            return Err(("kafka.drain_batch_events", "must be greater than 0"));
        }
        if !self.enabled() && (self.drain || self.hot_key_events_per_second > 0) {
            return Err((
                "kafka.brokers",
                "the drain and the hot-key limit need the overflow topic: name its brokers",
            ));
        }
        if self.hot_key_events_per_second > 0 && self.hot_key_burst == 0 {
            return Err(("kafka.hot_key_burst", "must be greater than 0"));
        }
        Ok(())
    }
}
