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
}

impl Default for DurabilitySettings {
    fn default() -> Self {
        DurabilitySettings {
            ack: AckMode::Durable,
        }
    }
}

impl DurabilitySettings {
    pub fn is_durable(&self) -> bool {
        self.ack == AckMode::Durable
    }

    /// Log segments of `segment_bytes` in `dir` (the size the spool's segments have:
    /// with the spool sink they are the same files). The log syncs each group itself,
    /// never on a timer.
    pub fn segments(&self, dir: PathBuf, segment_bytes: u64) -> SegmentSettings {
        SegmentSettings {
            dir,
            segment_bytes,
            fsync: FsyncPolicy::Never,
        }
    }
}
