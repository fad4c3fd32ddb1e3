//! The spool sink: per-shard, append-only, checksummed segment files on local disk.
//!
//! It is the embedded default, so tidegate runs with no external service. Each shard writes
//! its own directory (`DATA_DIR/shard-N/`), so shards never share a file or a lock. The
//! files are [`crate::segment`]s; this module only decides where they live and when
//! they are synced, and reads them back for `tidegate spool cat`.

mod reader;
mod settings;

use std::path::{Path, PathBuf};

use super::{Sink, SinkError};
use crate::encoded::EventBatch;
use crate::segment::{SegmentError, SegmentWriter};

pub use reader::{cat, CatSummary};
pub use settings::{FsyncMode, SpoolSettings};

/// The directory a shard's segments live in.
pub fn shard_dir(data_dir: &Path, shard: usize) -> PathBuf {
    data_dir.join(format!("shard-{shard}"))
}

impl From<SegmentError> for SinkError {
    fn from(err: SegmentError) -> Self {
        match err {
            SegmentError::Io { path, source } => SinkError::Io { path, source },
        }
    }
}

pub struct SpoolSink {
    segments: SegmentWriter,
}

impl SpoolSink {
    /// Opens a new segment for `shard` under `data_dir`.
    pub async fn open(
        settings: &SpoolSettings,
        data_dir: &Path,
        shard: usize,
    ) -> Result<Self, SinkError> {
        let segments = settings.segments(shard_dir(data_dir, shard));
        Ok(SpoolSink {
            segments: SegmentWriter::open(segments).await?,
        })
    }
}

impl Sink for SpoolSink {
    async fn write_batch(&mut self, batch: &EventBatch) -> Result<(), SinkError> {
        Ok(self.segments.append(batch.iter()).await?)
    }

    async fn tick(&mut self) -> Result<(), SinkError> {
        Ok(self.segments.sync_if_due().await?)
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        Ok(self.segments.close().await?)
    }
}
