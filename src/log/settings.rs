//! The `[durability]` settings: what a 202 promises, and how the log is kept.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::segment::{FsyncPolicy, SegmentSettings};

/// What a 202 promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// Every event of the request is on stable storage on this node (fdatasync completed).
    Durable,
    /// Every event is in this shard's memory: faster, and lost if the process dies.
    Memory,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DurabilitySettings {
    pub ack: AckMode,
    /// Per shard: records the sink has not stored yet may take this much disk. Beyond the
    /// ring's capacity requests are kept on disk only, up to this bound; then 503
    /// `log_full` (or the Kafka overflow). 4 GiB holds a 10,000 events/s shard's ~200-byte
    /// events for over half an hour of sink outage (2 MB/s).
    pub max_log_bytes: u64,
    /// Write the log with O_DIRECT where the filesystem allows it (glommio's DMA files):
    /// no page-cache copy and write-back. `false` writes through the page cache, as the
    /// callgrind count in scripts/instructions.sh must (valgrind cannot follow a direct
    /// write through io_uring).
    pub direct_io: bool,
}

impl Default for DurabilitySettings {
    fn default() -> Self {
        DurabilitySettings {
            ack: AckMode::Durable,
            max_log_bytes: 4 << 30,
            direct_io: true,
        }
    }
}

impl DurabilitySettings {
    pub fn is_durable(&self) -> bool {
        self.ack == AckMode::Durable
    }

    /// The first rule these settings break, as (key, message).
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.max_log_bytes == 0 {
            return Err(("durability.max_log_bytes", "must be greater than 0"));
        }
        Ok(())
    }

    /// Log segments of `segment_bytes` in `dir` (the size the spool's segments have:
    /// with the spool sink they are the same files). The log syncs each group itself,
    /// never on a timer, and writes them with direct I/O if asked and the filesystem
    /// allows it.
    pub fn segments(&self, dir: PathBuf, segment_bytes: u64) -> SegmentSettings {
        SegmentSettings {
            dir,
            segment_bytes,
            fsync: FsyncPolicy::Never,
            direct: self.direct_io,
        }
    }
}
