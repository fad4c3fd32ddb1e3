//! The ScyllaDB sink's routing core (work in progress; not yet selectable as a sink).
//!
//! Routing is kept apart from transport, as in the scylla driver: `token` computes a
//! row's Murmur3 token, `sharding` maps a token to a shard of a node, `topology` maps it
//! to the owning node, and `grouping` cuts a drained batch into CQL batches that each
//! belong to exactly one shard of one node. The CQL transport, schema management, adaptive
//! concurrency and the CQL test node are still to come.

pub mod grouping;
pub mod schema;
pub mod session;
pub mod sharding;
pub mod token;
pub mod topology;
