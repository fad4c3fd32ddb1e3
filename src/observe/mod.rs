//! Observability: metrics shared by every shard.

pub mod metrics;
