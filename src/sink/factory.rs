//! The one place that turns settings into a sink: for each shard's writer, for the overflow
//! drain and for `spool replay`. Adding a sink means a folder beside this file and an arm
//! here.
//!
//! The factory is made once per process (it starts the ScyllaDB driver, which all sinks of
//! the process share) and is `Send`, so each thread that needs a sink opens its own on its
//! own executor: sinks are shard-local and never cross threads.

use std::path::PathBuf;

use thiserror::Error;

use super::blackhole::Blackhole;
use super::scylla::{DispatchError, Dispatcher, SchemaConfig, ScyllaSettings, ScyllaSink};
use super::spool::{shard_dir, SpoolSettings, SpoolSink};
use super::{Sink, SinkError};
use crate::encoded::EventBatch;

/// Which sink a shard writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkKind {
    /// Append-only, checksummed segment files per shard (the embedded default).
    Spool,
    /// Discards everything; for benchmarks of the ingest path alone.
    Blackhole,
    /// ScyllaDB, in token- and shard-aware batches.
    Scylla,
}

impl std::str::FromStr for SinkKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "spool" => Ok(SinkKind::Spool),
            "blackhole" => Ok(SinkKind::Blackhole),
            "scylla" => Ok(SinkKind::Scylla),
            other => Err(format!(
                "unknown sink {other:?} (expected spool, blackhole or scylla)"
            )),
        }
    }
}

impl std::fmt::Display for SinkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SinkKind::Spool => "spool",
            SinkKind::Blackhole => "blackhole",
            SinkKind::Scylla => "scylla",
        })
    }
}

/// Everything any sink may need, as the configuration gives it.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    pub kind: SinkKind,
    pub spool: SpoolSettings,
    pub scylla: ScyllaSettings,
    pub schema: SchemaConfig,
    /// With durable acknowledgement and the spool sink, the write-ahead log is the spool:
    /// a shard's sink then has nothing left to store.
    pub spool_is_log: bool,
    /// Test-only: stall or fail shard sinks while these files exist.
    #[cfg(feature = "test-hooks")]
    pub gate: super::gate::GateFiles,
}

/// Who a sink is for; each keeps its files apart from the others'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkRole {
    /// Shard `N`'s writer.
    Shard(usize),
    /// The overflow drain (spool: `DATA_DIR/drained`; dead letters: `…/dead-letter/drain`).
    Drain,
    /// `tidegate spool replay`, writing into ScyllaDB whatever the configured kind.
    Replay,
}

#[derive(Debug, Error)]
pub enum SinkStartError {
    #[error("cannot start the ScyllaDB sink: {0}")]
    Scylla(#[from] DispatchError),
}

#[derive(Clone)]
pub struct SinkFactory {
    settings: SinkSettings,
    /// The driver, started once, when a ScyllaDB sink may be opened.
    dispatcher: Option<Dispatcher>,
}

impl SinkFactory {
    /// Starts what the sinks of `settings.kind` share. The driver connects here, before any
    /// shard serves: a cluster that cannot be reached fails the start, with the reason,
    /// instead of answering 503 forever.
    pub fn start(settings: SinkSettings) -> Result<Self, SinkStartError> {
        let dispatcher = match settings.kind {
            SinkKind::Scylla => Some(Dispatcher::start(&settings.scylla, &settings.schema)?),
            SinkKind::Spool | SinkKind::Blackhole => None,
        };
        Ok(SinkFactory {
            settings,
            dispatcher,
        })
    }

    /// A factory for `spool replay`: ScyllaDB, whatever kind is configured.
    pub fn start_replay(mut settings: SinkSettings) -> Result<Self, SinkStartError> {
        settings.kind = SinkKind::Scylla;
        SinkFactory::start(settings)
    }

    pub fn kind(&self) -> SinkKind {
        self.settings.kind
    }

    /// The driver's statistics, for `/metrics`, when the sink is ScyllaDB.
    pub fn dispatcher(&self) -> Option<&Dispatcher> {
        self.dispatcher.as_ref()
    }

    /// Opens a sink for `role` on the calling thread's executor.
    pub async fn open(&self, role: SinkRole) -> Result<AnySink, SinkError> {
        let data_dir = &self.settings.spool.data_dir;
        let sink = match self.settings.kind {
            SinkKind::Blackhole => AnySink::Blackhole(Blackhole),
            SinkKind::Spool if self.settings.spool_is_log && matches!(role, SinkRole::Shard(_)) => {
                AnySink::InLog(Blackhole)
            }
            SinkKind::Spool => {
                let (dir, shard) = match role {
                    SinkRole::Shard(id) => (data_dir.clone(), id),
                    SinkRole::Drain | SinkRole::Replay => (data_dir.join("drained"), 0),
                };
                AnySink::Spool(Box::new(
                    SpoolSink::open(&self.settings.spool, &dir, shard).await?,
                ))
            }
            SinkKind::Scylla => {
                let dispatcher = self
                    .dispatcher
                    .clone()
                    .expect("a factory for the scylla sink started the driver");
                let (dir, shard) = match role {
                    SinkRole::Shard(id) => (dead_letter_dir(data_dir), id),
                    SinkRole::Drain => (dead_letter_dir(data_dir).join("drain"), 0),
                    SinkRole::Replay => (dead_letter_dir(data_dir), 0),
                };
                let segments = self.settings.spool.segments(shard_dir(&dir, shard));
                AnySink::Scylla(Box::new(
                    ScyllaSink::open(shard, dispatcher, segments).await?,
                ))
            }
        };
        #[cfg(feature = "test-hooks")]
        if let (SinkRole::Shard(_), false) = (role, self.settings.gate.is_empty()) {
            return Ok(AnySink::Gated(Box::new(super::gate::Gate::new(
                sink,
                self.settings.gate.clone(),
            ))));
        }
        Ok(sink)
    }
}

/// Where ScyllaDB's refused events of `data_dir`'s shards are kept.
pub fn dead_letter_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("dead-letter")
}

/// Any sink the factory opens. One `match` per batch, never per event.
pub enum AnySink {
    Blackhole(Blackhole),
    /// Events the write-ahead log already stored for good (it is the spool).
    InLog(Blackhole),
    Spool(Box<SpoolSink>),
    Scylla(Box<ScyllaSink>),
    #[cfg(feature = "test-hooks")]
    Gated(Box<super::gate::Gate<AnySink>>),
}

impl Sink for AnySink {
    async fn write_batch(&mut self, batch: &EventBatch) -> Result<(), SinkError> {
        match self {
            AnySink::Blackhole(sink) | AnySink::InLog(sink) => sink.write_batch(batch).await,
            AnySink::Spool(sink) => sink.write_batch(batch).await,
            AnySink::Scylla(sink) => sink.write_batch(batch).await,
            #[cfg(feature = "test-hooks")]
            AnySink::Gated(sink) => Box::pin(sink.write_batch(batch)).await,
        }
    }

    async fn tick(&mut self) -> Result<(), SinkError> {
        match self {
            AnySink::Blackhole(sink) | AnySink::InLog(sink) => sink.tick().await,
            AnySink::Spool(sink) => sink.tick().await,
            AnySink::Scylla(sink) => sink.tick().await,
            #[cfg(feature = "test-hooks")]
            AnySink::Gated(sink) => Box::pin(sink.tick()).await,
        }
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        match self {
            AnySink::Blackhole(sink) | AnySink::InLog(sink) => sink.close().await,
            AnySink::Spool(sink) => sink.close().await,
            AnySink::Scylla(sink) => sink.close().await,
            #[cfg(feature = "test-hooks")]
            AnySink::Gated(sink) => Box::pin(sink.close()).await,
        }
    }
}
