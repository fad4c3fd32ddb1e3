//! Appending batches of records to a directory's segments.
//!
//! Segments are numbered and rotate by size; opening a directory starts a fresh segment
//! after the highest number there rather than appending after a possibly torn tail. Writes
//! go through glommio's io_uring file API so a write or an fdatasync never blocks the
//! shard's other work. A batch is written with one `write_at`; a short or failed write
//! leaves the position where it was, so a retry overwrites the partial bytes.
//!
//! With `direct` (the write-ahead log) a segment is written with O_DIRECT through glommio's
//! `DmaFile`: the data goes from our buffer to the device, without the page-cache copy and
//! writeback that cost the kernel ~10 times the CPU of the write itself for a 640 KiB group
//! on this project's VM (~550 µs against ~50 µs per write plus fdatasync). Direct writes
//! must start and end on the device's block boundary, so each write rewrites the partial
//! last block with the new records after it and zero padding to the boundary. The bytes
//! rewritten are the same as before, so a torn rewrite cannot damage a synced record; the
//! padding reads as a torn tail, which recovery cuts, and a closed segment is truncated to
//! its records. Where the filesystem refuses O_DIRECT, the segment is buffered instead.
//!
//! A direct segment is opened with O_DSYNC, so a write completes durable and needs no
//! fdatasync, and zeros are kept written ahead of its records ([`super::zero_ahead`]) so
//! that the writes of records overwrite blocks the file has and change no metadata.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::io::{BufferedFile, DmaFile};
use thiserror::Error;

use super::gather::{Gathered, Storage};
use super::record::{append_record, framed_len};
use super::zero_ahead::ZeroAhead;
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
    /// Write with O_DIRECT where the filesystem allows it (see the module's notes).
    pub direct: bool,
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

/// An open segment: buffered, or direct with the partial last block kept in memory.
enum SegmentFile {
    Buffered(BufferedFile),
    /// Opened with O_DSYNC: a completed write is durable.
    Direct {
        file: Rc<DmaFile>,
        /// The bytes of the last, partial block: each write starts by rewriting them.
        tail: Vec<u8>,
        zeros: ZeroAhead,
    },
}

impl SegmentFile {
    async fn fdatasync(&self) -> glommio::Result<(), ()> {
        match self {
            SegmentFile::Buffered(file) => file.fdatasync().await,
            // O_DSYNC: every completed write is already durable.
            SegmentFile::Direct { .. } => Ok(()),
        }
    }

    /// Closes the file; a direct one is first cut to `len`, dropping its padding and the
    /// zeros ahead of it.
    async fn close(self, len: u64) -> glommio::Result<(), ()> {
        match self {
            SegmentFile::Buffered(file) => file.close().await,
            SegmentFile::Direct { file, zeros, .. } => {
                zeros.stop().await;
                file.truncate(len).await?;
                match Rc::try_unwrap(file) {
                    Ok(file) => file.close().await,
                    // Unreachable once the zeros stopped; dropping the last clone closes it.
                    Err(_) => Ok(()),
                }
            }
        }
    }
}

pub struct SegmentWriter {
    settings: SegmentSettings,
    file: Option<SegmentFile>,
    /// Set once the filesystem refused O_DIRECT, so later segments go buffered at once.
    direct_refused: bool,
    path: PathBuf,
    next_sequence: u64,
    position: u64,
    last_sync: Instant,
    dirty: bool,
    /// Direct writes of gathered records in place, and those copied first.
    #[cfg(test)]
    written_in_place: (usize, usize),
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
            direct_refused: false,
            path: PathBuf::new(),
            next_sequence,
            position: 0,
            last_sync: Instant::now(),
            dirty: false,
            #[cfg(test)]
            written_in_place: (0, 0),
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

    /// Appends every event of `events` as one record each, then syncs as the policy says.
    pub async fn append<'e>(
        &mut self,
        events: impl Iterator<Item = &'e [u8]> + Clone,
    ) -> Result<(), SegmentError> {
        let size: usize = events.clone().map(|e| framed_len(e.len())).sum();
        let mut buf = Vec::with_capacity(size);
        for event in events {
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
        self.append_gathered(Gathered::from_records(framed)).await
    }

    /// A buffer for the records of the write after one of `after` bytes, which the
    /// writer can then write without copying them (see [`Gathered`]).
    pub fn gather_next(&self, after: usize, capacity: usize) -> Gathered {
        match &self.file {
            Some(SegmentFile::Direct { file, .. }) => {
                let alignment = file.alignment();
                let end = if self.rotates_for(after) {
                    after as u64
                } else {
                    self.position + after as u64
                };
                Gathered::aligned((end % alignment) as usize, capacity)
            }
            _ => Gathered::heap(capacity),
        }
    }

    fn rotates_for(&self, size: usize) -> bool {
        self.position > 0 && self.position + size as u64 > self.settings.segment_bytes
    }

    /// Writes gathered records, all in one segment (a new one if they would overflow this
    /// one), without syncing.
    pub async fn append_gathered(&mut self, gathered: Gathered) -> Result<(), SegmentError> {
        let size = gathered.len();
        if self.rotates_for(size) {
            self.rotate().await?;
        }
        if self.file.is_none() {
            // A failed rotation left no segment open: try again now.
            self.rotate().await?;
        }
        let position = self.position;
        let path = self.path.clone();
        let io = |source: std::io::Error| SegmentError::Io { path, source };
        #[cfg(test)]
        let written_in_place = &mut self.written_in_place;
        let file = self.file.as_mut().expect("a segment is open while writing");
        let (written, expected) = match (file, gathered.into_storage()) {
            (SegmentFile::Buffered(file), storage) => {
                let records = match storage {
                    Storage::Heap(records) => records,
                    Storage::Aligned { buffer, head } => {
                        buffer.as_bytes()[head..head + size].to_vec()
                    }
                };
                let written = file
                    .write_at(records, position)
                    .await
                    .map_err(|e| io(e.into()))?;
                (written, size)
            }
            (SegmentFile::Direct { file, tail, zeros }, storage) => {
                let block = match storage {
                    Storage::Aligned { mut buffer, head }
                        if head == tail.len()
                            && file.align_up((head + size) as u64) as usize <= buffer.len() =>
                    {
                        // The expected case: the records are in place after room for the tail.
                        buffer.as_bytes_mut()[..head].copy_from_slice(tail);
                        #[cfg(test)]
                        {
                            written_in_place.0 += 1;
                        }
                        buffer
                    }
                    storage => {
                        let records = match &storage {
                            Storage::Heap(records) => &records[..],
                            Storage::Aligned { buffer, head } => {
                                &buffer.as_bytes()[*head..*head + size]
                            }
                        };
                        let mut buffer = file
                            .alloc_dma_buffer(file.align_up((tail.len() + size) as u64) as usize);
                        let bytes = buffer.as_bytes_mut();
                        bytes[..tail.len()].copy_from_slice(tail);
                        bytes[tail.len()..tail.len() + size].copy_from_slice(records);
                        #[cfg(test)]
                        {
                            written_in_place.1 += 1;
                        }
                        buffer
                    }
                };
                let start = position - tail.len() as u64;
                let end = tail.len() + size;
                let padded = file.align_up(end as u64) as usize;
                let mut block = block;
                block.as_bytes_mut()[end..padded].fill(0);
                block.trim_to_size(padded);
                // The new partial block: what follows the last whole block written.
                let next_tail =
                    block.as_bytes()[file.align_down(end as u64) as usize..end].to_vec();
                zeros.clear_up_to(start + padded as u64).await;
                let written = file
                    .write_at(block, start)
                    .await
                    .map_err(|e| io(e.into()))?;
                if written == padded {
                    *tail = next_tail;
                    zeros.records_end_at(position + size as u64);
                }
                (written, padded)
            }
        };
        if written != expected {
            return Err(self.io_error(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("short write to segment ({written} of {expected} bytes)"),
            )));
        }
        self.position += size as u64;
        self.dirty = true;
        Ok(())
    }

    /// Whether the current segment is written with direct I/O.
    pub fn is_direct(&self) -> bool {
        matches!(self.file, Some(SegmentFile::Direct { .. }))
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
            let _ = file.close(keep).await;
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
            file.close(self.position)
                .await
                .map_err(|e| self.io_error(e.into()))?;
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
        let file = self.create_segment().await?;
        // A synced record is only as durable as the directory entry of its file: without
        // this, a power loss could take a whole new segment with it. Once per segment, so
        // whatever the policy (the write-ahead log syncs its records itself). It blocks the
        // shard for a journal commit once per segment: glommio has no io_uring fsync of a
        // directory, and its blocking pool never answers under valgrind, which
        // scripts/instructions.sh needs.
        std::fs::File::open(&self.settings.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| self.io_error(e))?;
        self.file = Some(file);
        self.position = 0;
        Ok(())
    }

    async fn create_segment(&mut self) -> Result<SegmentFile, SegmentError> {
        if self.settings.direct && !self.direct_refused {
            // Write-only, on purpose. glommio probes each device for polled I/O with a read
            // on the first DMA file it opens there; on a readable, empty file that read
            // "succeeds" without reaching the device, glommio then sends every write to its
            // polled ring, and a sync took ~8 ms (8,000 req/s). On a write-only file the
            // probe fails (logged by glommio::reactor, silenced in app::cli) and writes go
            // through the normal ring.
            let opened = glommio::io::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(libc::O_DSYNC)
                .dma_open(&self.path)
                .await;
            match opened {
                Ok(file) => {
                    let file = Rc::new(file);
                    let zeros = ZeroAhead::start(file.clone(), self.settings.segment_bytes);
                    return Ok(SegmentFile::Direct {
                        file,
                        tail: Vec::new(),
                        zeros,
                    });
                }
                Err(err) => {
                    tracing::warn!(segment = %self.path.display(), error = %err, "the filesystem refused direct I/O; segments are buffered");
                    self.direct_refused = true;
                }
            }
        }
        let file = BufferedFile::create(&self.path)
            .await
            .map_err(|e| self.io_error(e.into()))?;
        Ok(SegmentFile::Buffered(file))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::{Found, Scanner};

    fn scan(path: &Path) -> (Vec<Vec<u8>>, Vec<String>) {
        let data = std::fs::read(path).unwrap();
        let mut records = Vec::new();
        let mut other = Vec::new();
        for found in Scanner::new(&data) {
            match found {
                Found::Record { payload, .. } => records.push(payload.to_vec()),
                Found::Torn { .. } => other.push("torn".to_owned()),
                damaged => other.push(format!("{damaged:?}")),
            }
        }
        (records, other)
    }

    /// Runs `test` on a direct writer of `segment_bytes` segments in a fresh directory.
    fn with_a_direct_writer<F, Fut>(segment_bytes: u64, test: F)
    where
        F: FnOnce(SegmentWriter) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let dir = tempfile::tempdir().unwrap();
        let settings = SegmentSettings {
            dir: dir.path().to_owned(),
            segment_bytes,
            fsync: FsyncPolicy::Never,
            direct: true,
        };
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let writer = SegmentWriter::open(settings).await.unwrap();
                assert!(writer.is_direct(), "ext4 or tmpfs allow direct I/O");
                test(writer).await;
            })
            .unwrap()
            .join()
            .unwrap();
    }

    /// What a crash now would find in `path`: every record written, then at most a torn
    /// tail (padding, or zeros ahead).
    fn assert_a_crash_finds(path: &Path, expected: &[Vec<u8>], group: usize) {
        let (records, other) = scan(path);
        assert_eq!(records, expected, "after group {group}");
        assert!(
            other.len() <= 1 && other.iter().all(|o| o == "torn"),
            "{other:?}"
        );
    }

    /// Closing cuts the segment to its last record.
    async fn close_cuts_to_the_records(mut writer: SegmentWriter, expected: Vec<Vec<u8>>) {
        let path = writer.path.clone();
        let end = writer.position().1;
        writer.close().await.unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), end);
        assert_eq!(scan(&path), (expected, Vec::new()));
    }

    /// Groups of every size land whole, whatever block boundary they start or end on: a
    /// crash after any write finds every record written so far, then at most a torn tail
    /// of padding; a closed segment ends with its last record.
    #[test]
    fn direct_segments_keep_every_record_across_block_boundaries() {
        with_a_direct_writer(1 << 20, |mut writer| async move {
            let path = writer.path.clone();
            let mut expected: Vec<Vec<u8>> = Vec::new();
            let mut size = 1;
            for group in 0..60 {
                let mut framed = Vec::new();
                for _ in 0..(group % 4 + 1) {
                    size = (size * 7 + 13) % 900;
                    let payload = vec![b'a' + (size % 26) as u8; size];
                    append_record(&mut framed, &payload);
                    expected.push(payload);
                }
                writer.append_framed(framed).await.unwrap();
                writer.sync().await.unwrap();
                assert_a_crash_finds(&path, &expected, group);
            }
            close_cuts_to_the_records(writer, expected).await;
        });
    }

    /// Records gathered for the next write before the previous one is written (as the
    /// log's committer gathers them) are written where they were framed, and read back
    /// whole across block boundaries; after a rotation, which the guess did not foresee,
    /// they are copied instead.
    #[test]
    fn gathered_records_are_written_in_place_across_blocks_and_rotations() {
        with_a_direct_writer(64 << 10, |mut writer| async move {
            let mut expected: Vec<Vec<u8>> = Vec::new();
            let mut next = writer.gather_next(0, 0);
            let mut size = 1;
            let mut rotations = 0;
            for group in 0..300 {
                let mut gathered = std::mem::take(&mut next);
                for _ in 0..(group % 4 + 1) {
                    size = (size * 7 + 13) % 900;
                    let payload = vec![b'a' + (size % 26) as u8; size];
                    gathered.append_record(&payload);
                    expected.push(payload);
                }
                next = writer.gather_next(gathered.len(), 0);
                let (sequence_before, path_before) = (writer.position().0, writer.path.clone());
                writer.append_gathered(gathered).await.unwrap();
                if writer.position().0 != sequence_before {
                    rotations += 1;
                    let (records, other) = scan(&path_before);
                    assert!(other.is_empty(), "{other:?}");
                    expected.drain(..records.len());
                }
                let path = writer.path.clone();
                assert_a_crash_finds(&path, &expected, group);
            }
            let (in_place, copied) = writer.written_in_place;
            assert!(rotations >= 3, "{rotations} rotations");
            assert!(
                copied <= rotations,
                "{copied} copied, {rotations} rotations"
            );
            assert_eq!(in_place + copied, 300);
            close_cuts_to_the_records(writer, expected).await;
        });
    }

    /// Zeros run ahead of the records (so that records overwrite blocks the file has), and
    /// never over them: not while a record write is in flight, not when a group outruns
    /// them and extends the file itself, not across a rotation.
    #[test]
    fn zeros_run_ahead_of_direct_records_and_never_over_them() {
        with_a_direct_writer(1 << 20, |mut writer| async move {
            let mut expected: Vec<Vec<u8>> = Vec::new();
            let mut size = 1;
            let mut most_ahead = 0;
            // Groups of a few small records, with one of 600 KiB (more than the zeros
            // run ahead) in the middle; about 1.5 segments in all.
            for group in 0..400 {
                let path = writer.path.clone();
                let mut framed = Vec::new();
                let records = if group == 150 { 600 } else { group % 5 + 1 };
                for _ in 0..records {
                    size = (size * 7 + 13) % 2000;
                    let len = if group == 150 { 1000 } else { size };
                    let payload = vec![b'a' + (len % 26) as u8; len];
                    append_record(&mut framed, &payload);
                    expected.push(payload);
                }
                let sequence_before = writer.position().0;
                writer.append_framed(framed).await.unwrap();
                writer.sync().await.unwrap();
                if writer.position().0 != sequence_before {
                    // Rotated: the closed segment holds exactly what was expected so far.
                    let (records, other) = scan(&path);
                    assert!(other.is_empty(), "{other:?}");
                    expected.drain(..records.len());
                    assert!(!expected.is_empty());
                }
                let path = writer.path.clone();
                assert_a_crash_finds(&path, &expected, group);
                let ahead = std::fs::metadata(&path).unwrap().len() - writer.position().1;
                most_ahead = most_ahead.max(ahead);
                if group % 50 == 0 {
                    // Give the zeros time to catch up now and then.
                    glommio::timer::sleep(Duration::from_millis(20)).await;
                }
            }
            assert!(
                most_ahead >= 256 << 10,
                "zeros should run well ahead of the records: at most {most_ahead} bytes"
            );
            close_cuts_to_the_records(writer, expected).await;
        });
    }
}
