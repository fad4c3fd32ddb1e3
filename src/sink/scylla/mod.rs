//! The ScyllaDB sink (`--sink scylla`).
//!
//! Routing is kept apart from transport, as in the scylla driver: `token` computes a
//! row's Murmur3 token, `sharding` maps a token to a shard of a node, `topology` maps it
//! to the owning node, and `grouping` cuts a drained batch into CQL batches that each
//! belong to exactly one shard of one node. `sink` is the shard side of the sink, `dispatch`
//! the driver's side on tokio, `session` connects, and `schema` holds the CQL.

pub mod concurrency;
pub mod dispatch;
pub mod grouping;
pub mod replay;
pub mod schema;
pub mod session;
pub mod sink;
