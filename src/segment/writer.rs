//! Appending batches of records to a directory's segments.
//!
//! Segments are numbered and rotate by size; opening a directory starts a fresh segment
//! after the highest number there rather than appending after a possibly torn tail. Writes
//! go through glommio's io_uring file API so a write or an fdatasync never blocks the
//! shard's other work. A batch is written with one `write_at`; a short or failed write
//! leaves the position where it was, so a retry overwrites the partial bytes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::io::BufferedFile;
use thiserror::Error;

use super::record::{append_record, framed_len};
use super::SEGMENT_SUFFIX;

/// When a writer calls fdatasync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every batch: a batch is on disk before the next is taken.
    EachFlush,
    /// At most once per interval, and always on rotation and close.
    Interval(Duration),
    /// Never explicitly; the kernel writes back when it chooses (benchmarks, tests).
    Never,
}

/// Where and how a writer keeps its segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSettings {
    pub dir: PathBuf,
    /// A segment is closed and the next begun before it would grow past this.
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
}

#[derive(Debug, Error)]
pub enum SegmentError {
    #[error("segment I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub struct SegmentWriter {
    settings: SegmentSettings,
    file: Option<BufferedFile>,
    path: PathBuf,
    next_sequence: u64,
    position: u64,
    last_sync: Instant,
    dirty: bool,
}

impl SegmentWriter {
    /// Opens a new segment in `settings.dir`, creating the directory if needed.
    pub async fn open(settings: SegmentSettings) -> Result<Self, SegmentError> {
        let dir = settings.dir.clone();
        let io = |source| SegmentError::Io {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let next_sequence = last_sequence(&dir).map_err(io)?.map_or(0, |s| s + 1);
        let mut writer = SegmentWriter {
            settings,
            file: None,
            path: PathBuf::new(),
            next_sequence,
            position: 0,
            last_sync: Instant::now(),
            dirty: false,
        };
        writer.rotate().await?;
        Ok(writer)
    }

    fn io_error(&self, source: std::io::Error) -> SegmentError {
        SegmentError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends every event of `batch` as one record each, then syncs as the policy says.
    pub async fn append(&mut self, batch: &[Bytes]) -> Result<(), SegmentError> {
        let size: usize = batch.iter().map(|e| framed_len(e.len())).sum();
        let mut buf = Vec::with_capacity(size);
        for event in batch {
            append_record(&mut buf, event);
        }
        self.append_framed(buf).await?;
        match self.settings.fsync {
            FsyncPolicy::EachFlush => self.sync().await,
            FsyncPolicy::Interval(_) => self.sync_if_due().await,
            FsyncPolicy::Never => Ok(()),
        }
    }

    /// Writes records already framed by [`append_record`], all in one segment (a new one
    /// if they would overflow this one), without syncing.
    pub async fn append_framed(&mut self, framed: Vec<u8>) -> Result<(), SegmentError> {
        let size = framed.len();
        if self.position > 0 && self.position + size as u64 > self.settings.segment_bytes {
            self.rotate().await?;
        }
        if self.file.is_none() {
            // A failed rotation left no segment open: try again now.
            self.rotate().await?;
        }
        let file = self.file.as_ref().expect("a segment is open while writing");
        let written = file
            .write_at(framed, self.position)
            .await
            .map_err(|e| self.io_error(e.into()))?;
        if written != size {
            return Err(self.io_error(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("short write to segment ({written} of {size} bytes)"),
            )));
        }
        self.position += size as u64;
        self.dirty = true;
        Ok(())
    }

    /// Where the next record will go: (segment sequence, byte offset in it).
    pub fn position(&self) -> (u64, u64) {
        (self.next_sequence.saturating_sub(1), self.position)
    }

    /// Abandons the current segment for a new one after a failed write or sync: the file
    /// is cut back to `keep` bytes (best effort: what a failed write left must not be read
    /// back as stored) and never written or synced again.
    pub async fn abandon_segment(&mut self, keep: u64) -> Result<(), SegmentError> {
        if let Some(file) = self.file.take() {
            let _ = file.close().await;
            if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&self.path) {
                if f.set_len(keep).and_then(|()| f.sync_all()).is_err() {
                    tracing::error!(segment = %self.path.display(), "cannot cut back a failed segment");
                }
            }
        }
        self.dirty = false;
        self.rotate().await
    }

    /// For [`FsyncPolicy::Interval`]: syncs if data is waiting and the interval has passed.
    pub async fn sync_if_due(&mut self) -> Result<(), SegmentError> {
        if let FsyncPolicy::Interval(interval) = self.settings.fsync {
            if self.dirty && self.last_sync.elapsed() >= interval {
                self.sync().await?;
            }
        }
        Ok(())
    }

    /// Closes the current segment, synced unless the policy is `Never`.
    pub async fn close(&mut self) -> Result<(), SegmentError> {
        if let Some(file) = self.file.take() {
            if self.settings.fsync != FsyncPolicy::Never && self.dirty {
                file.fdatasync()
                    .await
                    .map_err(|e| self.io_error(e.into()))?;
            }
            file.close().await.map_err(|e| self.io_error(e.into()))?;
            self.dirty = false;
        }
        Ok(())
    }

    async fn rotate(&mut self) -> Result<(), SegmentError> {
        self.close().await?;
        self.path = self
            .settings
            .dir
            .join(format!("{:016}.{SEGMENT_SUFFIX}", self.next_sequence));
        self.next_sequence += 1;
        let file = BufferedFile::create(&self.path)
            .await
            .map_err(|e| self.io_error(e.into()))?;
        // A synced record is only as durable as the directory entry of its file: without
        // this, a power loss could take a whole new segment with it. Once per segment, so
        // whatever the policy (the write-ahead log syncs its records itself).
        std::fs::File::open(&self.settings.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| self.io_error(e))?;
        self.file = Some(file);
        self.position = 0;
        Ok(())
    }

    /// fdatasync of the current segment.
    pub async fn sync(&mut self) -> Result<(), SegmentError> {
        if let Some(file) = &self.file {
            file.fdatasync()
                .await
                .map_err(|e| self.io_error(e.into()))?;
        }
        self.last_sync = Instant::now();
        self.dirty = false;
        Ok(())
    }
}

/// The highest segment sequence number already in `dir`.
fn last_sequence(dir: &Path) -> std::io::Result<Option<u64>> {
    Ok(std::fs::read_dir(dir)?
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
