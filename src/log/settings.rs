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
    /// Log segments rotate before they would grow past this.
    pub segment_bytes: u64,
}

impl Default for DurabilitySettings {
    fn default() -> Self {
        DurabilitySettings {
            ack: AckMode::Durable,
            segment_bytes: 64 << 20,
        }
    }
}

impl DurabilitySettings {
    pub fn is_durable(&self) -> bool {
        self.ack == AckMode::Durable
    }

    /// The first rule these settings break, as (key, message).
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.segment_bytes == 0 {
            return Err(("durability.segment_bytes", "must be greater than 0"));
        }
        Ok(())
    }

    /// Log segments in `dir`. The log syncs each group itself, never on a timer.
    pub fn segments(&self, dir: PathBuf) -> SegmentSettings {
        SegmentSettings {
            dir,
            segment_bytes: self.segment_bytes,
            fsync: FsyncPolicy::Never,
        }
    }
}
