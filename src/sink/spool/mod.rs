//! The spool sink: per-shard, append-only, checksummed segment files on local disk.
//!
//! It is the embedded default, so tidegate runs with no external service. Each shard writes
//! its own directory (`DATA_DIR/shard-N/`), so shards never share a file or a lock.
//! Segments are numbered and rotate by size; a restart opens a fresh segment rather than
//! appending after a possibly torn tail. Writes go through glommio's io_uring file API so a
//! flush or fsync never blocks the shard's HTTP work.

pub mod reader;
pub mod record;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::io::BufferedFile;

use super::{Sink, SinkError};

/// When the spool calls fdatasync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every batch: a batch is on disk before the writer takes the next.
    EachFlush,
    /// At most once per interval, and always on rotation and shutdown.
    Interval(Duration),
    /// Never explicitly; the kernel writes back when it chooses (benchmarks, tests).
    Never,
}

#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
}

pub const SEGMENT_SUFFIX: &str = "seg";

/// The directory a shard's segments live in.
pub fn shard_dir(data_dir: &Path, shard: usize) -> PathBuf {
    data_dir.join(format!("shard-{shard}"))
}

pub struct SpoolSink {
    dir: PathBuf,
    config: SpoolConfig,
    file: Option<BufferedFile>,
    path: PathBuf,
    next_sequence: u64,
    position: u64,
    last_sync: Instant,
    dirty: bool,
}

impl SpoolSink {
    /// Opens a new segment for `shard` under the configured data directory.
    pub async fn open(config: SpoolConfig, shard: usize) -> Result<Self, SinkError> {
        let dir = shard_dir(&config.dir, shard);
        std::fs::create_dir_all(&dir).map_err(|source| SinkError::Io {
            path: dir.clone(),
            source,
        })?;
        let next_sequence = last_sequence(&dir)?.map_or(0, |s| s + 1);
        let mut sink = SpoolSink {
            dir,
            config,
            file: None,
            path: PathBuf::new(),
            next_sequence,
            position: 0,
            last_sync: Instant::now(),
            dirty: false,
        };
        sink.rotate().await?;
        Ok(sink)
    }

    fn io_error(&self, source: std::io::Error) -> SinkError {
        SinkError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Closes the current segment (synced unless the policy is `Never`) and starts the next.
    async fn rotate(&mut self) -> Result<(), SinkError> {
        self.finish_segment().await?;
        self.path = self
            .dir
            .join(format!("{:016}.{SEGMENT_SUFFIX}", self.next_sequence));
        self.next_sequence += 1;
        let file = BufferedFile::create(&self.path)
            .await
            .map_err(|e| self.io_error(e.into()))?;
        self.file = Some(file);
        self.position = 0;
        Ok(())
    }

    async fn finish_segment(&mut self) -> Result<(), SinkError> {
        if let Some(file) = self.file.take() {
            if self.config.fsync != FsyncPolicy::Never && self.dirty {
                file.fdatasync()
                    .await
                    .map_err(|e| self.io_error(e.into()))?;
            }
            file.close().await.map_err(|e| self.io_error(e.into()))?;
            self.dirty = false;
        }
        Ok(())
    }

    async fn sync(&mut self) -> Result<(), SinkError> {
        if let Some(file) = &self.file {
            file.fdatasync()
                .await
                .map_err(|e| self.io_error(e.into()))?;
        }
        self.last_sync = Instant::now();
        self.dirty = false;
        Ok(())
    }

    /// For [`FsyncPolicy::Interval`]: syncs if data is waiting and the interval has passed.
    pub async fn sync_if_due(&mut self) -> Result<(), SinkError> {
        if let FsyncPolicy::Interval(interval) = self.config.fsync {
            if self.dirty && self.last_sync.elapsed() >= interval {
                self.sync().await?;
            }
        }
        Ok(())
    }
}

impl Sink for SpoolSink {
    async fn write_batch(&mut self, batch: &[Bytes]) -> Result<(), SinkError> {
        let size: usize = batch.iter().map(|e| record::framed_len(e.len())).sum();
        if self.position > 0 && self.position + size as u64 > self.config.segment_bytes {
            self.rotate().await?;
        }
        let mut buf = Vec::with_capacity(size);
        for event in batch {
            record::append_record(&mut buf, event);
        }
        let file = self.file.as_ref().expect("a segment is open while writing");
        let written = file
            .write_at(buf, self.position)
            .await
            .map_err(|e| SinkError::Io {
                path: self.path.clone(),
                source: e.into(),
            })?;
        if written != size {
            // The position is not advanced, so the writer's retry overwrites the partial bytes.
            return Err(self.io_error(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("short write to segment ({written} of {size} bytes)"),
            )));
        }
        self.position += size as u64;
        self.dirty = true;
        match self.config.fsync {
            FsyncPolicy::EachFlush => self.sync().await?,
            FsyncPolicy::Interval(_) => self.sync_if_due().await?,
            FsyncPolicy::Never => {}
        }
        Ok(())
    }

    async fn tick(&mut self) -> Result<(), SinkError> {
        self.sync_if_due().await
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        self.finish_segment().await
    }
}

/// The highest segment sequence number already in `dir`.
fn last_sequence(dir: &Path) -> Result<Option<u64>, SinkError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SinkError::Io {
        path: dir.to_owned(),
        source,
    })?;
    Ok(entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name();
            let name = name.to_str()?;
            name.strip_suffix(&format!(".{SEGMENT_SUFFIX}"))?
                .parse::<u64>()
                .ok()
        })
        .max())
}
