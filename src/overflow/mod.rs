//! The Kafka overflow, for when a shard's ring cannot take a request.
//!
//! - `spill`: produce a request's events to the overflow topic and wait for the broker's
//!   acknowledgements before the request is answered 202;
//! - `hot_keys`: the per-user token buckets that send one hot user's excess there too;
//! - `drain`: read the topic back into the sink once the sink has room;
//! - `stats`: what all three count, for `/metrics`, readiness and the drain's pauses;
//! - `settings`: the `[kafka]` section.
//!
//! The decision to spill (and to answer 503 when spilling fails) is made in
//! `crate::admission`; this module only carries it out.

mod drain;
mod hot_keys;
mod producer;
mod settings;
mod stats;

pub use drain::{spawn_drain, DrainError, DrainSummary, Pressure};
pub use hot_keys::HotKeys;
pub use producer::{ensure_topic, OverflowError, OverflowProducer};
pub use settings::{Compression, KafkaSettings};
pub use stats::{OverflowStats, SpillFailure};

/// One shard's part of the overflow: the shared producer and its own hot-key buckets.
pub struct ShardOverflow {
    pub producer: std::sync::Arc<OverflowProducer>,
    pub hot_keys: Option<HotKeys>,
}

/// At shutdown, a batch the sink refuses is spilled instead, acknowledged by the broker
/// before it leaves the ring, so that a stop does not wait forever on a dead sink.
impl crate::writer::Fallback for std::sync::Arc<OverflowProducer> {
    async fn take(&self, shard: usize, batch: &crate::encoded::EventBatch) -> bool {
        // Only at shutdown with the sink failing: a handle per event costs nothing here.
        match self.send(shard, &batch.to_owned_events()).await {
            Ok(elapsed) => {
                self.stats.spilled_at_shutdown(batch.len(), elapsed);
                true
            }
            Err(_) => false,
        }
    }
}
