//! The `[spool]` settings: where segment files live and when they are synced.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::segment::{FsyncPolicy, SegmentSettings};

/// When spool segments are synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FsyncMode {
    /// After every batch the writer flushes.
    EachFlush,
    /// At most once per `fsync_interval_ms`, and on rotation and shutdown.
    Interval,
    /// Never explicitly (benchmarks, tests).
    Never,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolSettings {
    pub data_dir: PathBuf,
    pub segment_bytes: u64,
    pub fsync: FsyncMode,
    pub fsync_interval_ms: u64,
}

impl Default for SpoolSettings {
    fn default() -> Self {
        SpoolSettings {
            data_dir: PathBuf::from("tidegate-data"),
            segment_bytes: 64 << 20,
            fsync: FsyncMode::Interval,
            fsync_interval_ms: 1_000,
        }
    }
}

impl SpoolSettings {
    /// The first rule these settings break, as (key, message).
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.segment_bytes == 0 {
            return Err(("spool.segment_bytes", "must be greater than 0"));
        }
        if self.fsync == FsyncMode::Interval && self.fsync_interval_ms == 0 {
            return Err(("spool.fsync_interval_ms", "must be greater than 0"));
        }
        Ok(())
    }

    pub fn fsync_policy(&self) -> FsyncPolicy {
        match self.fsync {
            FsyncMode::EachFlush => FsyncPolicy::EachFlush,
            FsyncMode::Interval => {
                FsyncPolicy::Interval(Duration::from_millis(self.fsync_interval_ms))
            }
            FsyncMode::Never => FsyncPolicy::Never,
        }
    }

    /// Segments in `dir`, rotated and synced as these settings say.
    pub fn segments(&self, dir: PathBuf) -> SegmentSettings {
        SegmentSettings {
            dir,
            segment_bytes: self.segment_bytes,
            fsync: self.fsync_policy(),
            // Page-cache writes: with memory acknowledgement nothing waits on the disk, and
            // the kernel's write-back batches better than a device write per flush.
            direct: false,
        }
    }
}
