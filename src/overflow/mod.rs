//! Stage 3b: the Kafka overflow, for when a shard's ring cannot take a request.
//!
//! - [`spill`]: produce a request's events to the overflow topic and wait for the broker's
//!   acknowledgements before the request is answered 202;
//! - [`hot_keys`]: the per-user token buckets that send one hot user's excess there too;
//! - [`drain`]: read the topic back into the sink once the sink has room;
//! - [`stats`]: what all three count, for `/metrics`, `/ready` and the drain's pauses.
//!
//! The decision to spill (and to answer 503 when spilling fails) is made in
//! `crate::admission`; this module only carries it out.

pub mod drain;
pub mod hot_keys;
pub mod spill;
pub mod stats;

/// One shard's part of the overflow: the shared producer and its own hot-key buckets.
pub struct ShardOverflow {
    pub spill: std::sync::Arc<spill::Spill>,
    pub hot_keys: Option<hot_keys::HotKeys>,
}
