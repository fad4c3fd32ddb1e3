//! Where batches of encoded events end up.
//!
//! A sink stores a batch as a whole or reports an error; the writer keeps the batch and
//! retries, so a failing sink backs up into the ring and then into 503s, never into loss.
//! Sinks run on their shard's thread (no `Send` bound); [`SinkFactory`] opens them from
//! settings, for the shards, the drain and replay alike.

mod blackhole;
mod factory;
#[cfg(feature = "test-hooks")]
mod gate;
pub mod scylla;
pub mod spool;

pub use factory::{
    dead_letter_dir, AnySink, SinkFactory, SinkKind, SinkRole, SinkSettings, SinkStartError,
};
#[cfg(feature = "test-hooks")]
pub use gate::GateFiles;

use thiserror::Error;

use crate::encoded::EventBatch;

#[derive(Debug, Error)]
pub enum SinkError {
    #[error("ScyllaDB: {0}")]
    Scylla(String),
    #[cfg(feature = "test-hooks")]
    #[error("injected test fault (--test-fail-file exists)")]
    InjectedFault,
    #[error("spool I/O on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How often an idle writer calls [`Sink::tick`].
pub const TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// A destination for batches of encoded events.
#[allow(async_fn_in_trait)] // shard-local: futures never cross threads
pub trait Sink {
    /// Stores every event of `batch`, or fails having promised nothing.
    async fn write_batch(&mut self, batch: &EventBatch) -> Result<(), SinkError>;

    /// Called about every [`TICK`] while the writer is idle: time-based upkeep such as an
    /// interval fsync.
    async fn tick(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Makes everything written so far durable and releases resources.
    async fn close(&mut self) -> Result<(), SinkError>;
}
