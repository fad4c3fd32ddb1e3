//! The ScyllaDB sink (`--sink scylla`).
//!
//! Routing is kept apart from transport, as in the scylla driver: `grouping` cuts a drained
//! batch into CQL batches that each belong to exactly one shard of one node, with tokens
//! from the `murmur3-token` crate and owners from the driver's replica locator (`sink`);
//! `sink` is the shard side of the sink, `dispatch` the driver's side on tokio, `session`
//! connects, `concurrency` adapts in-flight requests per target, `schema` holds the CQL and
//! `settings` the `[scylla]` section.

mod concurrency;
mod dispatch;
mod grouping;
mod schema;
mod session;
mod settings;
mod sink;

pub use dispatch::{DispatchError, DispatchStats, Dispatcher};
pub use grouping::{CqlBatchLimits, Grouper, NodeIndex, ShardBatch, Unroutable};
pub use schema::{ReplicationStrategy, SchemaConfig};
pub use session::{connect, ConnectError};
pub use settings::{ScyllaSettings, WriteConsistency};
pub use sink::{locate_and_group, LocalTable, ScyllaSink};
