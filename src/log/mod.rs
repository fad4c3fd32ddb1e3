//! The write-ahead log: what makes a 202 mean "on this node's disk".
//!
//! Each shard appends the events of every admitted request to its own log before the
//! request is answered, in `DATA_DIR/wal/shard-N/` (or, with the spool sink, in the spool's
//! own directory: the log then *is* the spool, and no event is written twice). Records are
//! the segment format every tidegate file shares (`crate::segment`).
//!
//! **Group commit.** A request's records join the group being gathered and the request
//! waits for that group's fdatasync. One committer task per shard writes and syncs a group
//! at a time; whatever arrives meanwhile forms the next group. An idle shard syncs a lone
//! request at once: no fixed wait is ever added.
//!
//! **Failure.** A failed write or fdatasync fails every request of its group (503
//! `log_unavailable`: their events are never acknowledged, and never kept, since they reach
//! the ring only after their sync). The file is abandoned, never synced again and believed
//! (PostgreSQL's "fsyncgate"); the next group starts a new segment.
//!
//! **Checkpoint.** Once the sink has stored a request's events the log no longer needs
//! them. The checkpoint is the position before which every record is stored; it is saved
//! beside the segments, segments wholly before it are deleted (except where the log is the
//! spool), and at start everything after it is replayed into the sink.

mod recovery;
mod settings;
mod waiters;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use event_listener::Event;
use thiserror::Error;

use crate::encoded::EventBatch;
use crate::observe::{self, Collector, DescriptorEncoder, Histogram};
use crate::ring::ShardRing;
use crate::segment::{framed_len, Gathered, SegmentError, SegmentWriter};
use crate::writer::{BatchPolicy, BatchSource};
use waiters::SyncWaiters;

pub use recovery::{recover, Recovered};

/// Bytes `events` take as log records.
pub fn framed_bytes(payload_bytes: usize, events: usize) -> u64 {
    (payload_bytes + events * framed_len(0)) as u64
}
pub use settings::{AckMode, DurabilitySettings};

/// A position in a shard's log: segment sequence number and byte offset in that segment.
pub type Position = (u64, u64);

#[derive(Debug, Error)]
pub enum LogError {
    #[error("the write-ahead log could not write or sync: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Segment(#[from] SegmentError),
    #[error("write-ahead log at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Test-only: every sync fails while this file exists (`--test-fail-sync-file`), as an
/// fdatasync error would.
#[cfg(feature = "test-hooks")]
pub static FAIL_SYNC_FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Test-only: while this file exists (`--test-stale-backlog-file`), every backlog read
/// through the page cache returns zeros, as a block the cache kept from before a direct
/// write to it would.
#[cfg(feature = "test-hooks")]
pub static STALE_BACKLOG_FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Test-only: after every sync, the synced length of the log is written to
/// `synced-position` beside its segments (`--test-record-synced`), so that a test can cut
/// the files back to it, as a power loss would lose what was never synced.
#[cfg(feature = "test-hooks")]
pub static RECORD_SYNCED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// What a shard's log publishes for `/metrics`.
#[derive(Debug, Default)]
pub struct LogStats {
    syncs: AtomicU64,
    sync_failures: AtomicU64,
    events_synced: AtomicU64,
    bytes_written: AtomicU64,
    replayed: AtomicU64,
    skipped_corrupt: AtomicU64,
    sync_latency: Histogram,
    /// Events synced to the log that the sink has not stored yet: the checkpoint's lag.
    unstored_events: AtomicU64,
    /// Segments the log keeps, and their bytes, as of the last checkpoint.
    segments: AtomicU64,
    segment_bytes: AtomicU64,
    /// Bytes of records the sink has not stored yet, against `durability.max_log_bytes`.
    unstored_bytes: AtomicU64,
    max_bytes: AtomicU64,
    /// Events kept on disk only (the ring was full), waiting to be read back.
    backlog_events: AtomicU64,
    /// Events kept on disk only where the log is the store (the spool): stored by their sync.
    stored_in_log: AtomicU64,
}

impl LogStats {
    /// Stats of a log of `max` bytes holding `unstored` (readiness's unit tests).
    #[cfg(test)]
    pub(crate) fn filled(max: u64, unstored: u64) -> Self {
        let stats = LogStats::default();
        stats.max_bytes.store(max, Relaxed);
        stats.unstored_bytes.store(unstored, Relaxed);
        stats
    }

    /// Whether the log holds at least `percent` of its bound in unstored records.
    pub fn above(&self, percent: u8) -> bool {
        let max = self.max_bytes.load(Relaxed);
        max > 0 && self.unstored_bytes.load(Relaxed) * 100 >= max * u64::from(percent)
    }

    pub fn replayed(&self, events: usize, skipped: usize) {
        self.replayed.fetch_add(events as u64, Relaxed);
        self.skipped_corrupt.fetch_add(skipped as u64, Relaxed);
    }
}

/// One group of requests that share a write and a sync.
#[derive(Default)]
struct Group {
    framed: Gathered,
    events: u64,
}

/// A request the log has synced.
#[derive(Debug, Clone, Copy)]
pub struct Committed {
    pub generation: u64,
    /// Its records' bytes in the log.
    pub bytes: u64,
}

/// A request kept on disk only: where its records are, once its group is written.
#[derive(Debug, Clone, Copy)]
struct Backlogged {
    generation: u64,
    offset_in_group: u64,
    bytes: u64,
    events: usize,
}

/// Backlog requests that lie one after another in a segment: one read.
struct BacklogSpan {
    sequence: u64,
    at: u64,
    len: u64,
    requests: usize,
    /// Records the span holds: one per event of its requests.
    events: usize,
}

/// One shard's log, shared by its connections (which commit) and its committer task.
pub struct ShardLog {
    gathering: RefCell<Group>,
    /// The group being gathered is this one; the committer takes groups in order.
    open_generation: Cell<u64>,
    /// Every group up to this one has been written and synced, or has failed.
    done_generation: Cell<u64>,
    failed_generations: RefCell<BTreeSet<u64>>,
    /// Where each written group began, while requests of it may still be unstored.
    group_starts: RefCell<BTreeMap<u64, Position>>,
    /// Requests by generation whose events the sink has not stored yet.
    outstanding: RefCell<BTreeMap<u64, usize>>,
    /// In ring order: (events, generation, framed bytes) of each request pushed after its
    /// sync.
    in_ring: RefCell<VecDeque<(usize, u64, u64)>>,
    /// In log order: requests kept on disk only, synced, waiting to be read back.
    backlog: RefCell<VecDeque<Backlogged>>,
    /// Requests admitted to the disk only and not yet stored (waiting for their sync or in
    /// the backlog): while there are any, new requests go to the disk only too, so that
    /// the writer delivers in log order.
    disk_only_requests: Cell<usize>,
    /// Backlog entries the writer has peeked and not yet consumed.
    peeked: Cell<usize>,
    unstored_bytes: Cell<u64>,
    max_bytes: u64,
    /// Admission refuses requests from their head until the log drains (see
    /// `admission::certain_refusal`).
    shedding: Cell<bool>,
    /// The log is the store (the spool sink): what is synced is stored.
    is_store: bool,
    dir: PathBuf,
    /// Where the next group will be written.
    end: Cell<Position>,
    checkpoint: Cell<Position>,
    work: Event,
    synced: SyncWaiters,
    closing: Cell<bool>,
    stats: Arc<LogStats>,
}

impl ShardLog {
    fn new(
        end: Position,
        checkpoint: Position,
        stats: Arc<LogStats>,
        max_bytes: u64,
        is_store: bool,
        dir: PathBuf,
    ) -> Self {
        stats.max_bytes.store(max_bytes, Relaxed);
        ShardLog {
            backlog: RefCell::new(VecDeque::new()),
            disk_only_requests: Cell::new(0),
            peeked: Cell::new(0),
            unstored_bytes: Cell::new(0),
            max_bytes,
            shedding: Cell::new(false),
            is_store,
            dir,
            gathering: RefCell::new(Group::default()),
            open_generation: Cell::new(1),
            done_generation: Cell::new(0),
            failed_generations: RefCell::new(BTreeSet::new()),
            group_starts: RefCell::new(BTreeMap::new()),
            outstanding: RefCell::new(BTreeMap::new()),
            in_ring: RefCell::new(VecDeque::new()),
            end: Cell::new(end),
            checkpoint: Cell::new(checkpoint),
            work: Event::new(),
            synced: SyncWaiters::default(),
            closing: Cell::new(false),
            stats,
        }
    }

    /// Appends a request's events to the group being gathered and waits for its sync. `Ok` means every
    /// event is on stable storage; the caller then pushes them into the ring and calls
    /// [`ShardLog::pushed`]. On `Err` nothing of the request may be kept or acknowledged.
    ///
    /// With `disk_only` the events will not be pushed: the writer reads them back from the
    /// log when it gets to them (admission sends a request there when the ring is full, or
    /// while earlier ones wait there).
    pub async fn commit<'e>(
        &self,
        events: impl IntoIterator<Item = &'e [u8]>,
        disk_only: bool,
    ) -> Result<Committed, LogError> {
        let generation = self.open_generation.get();
        let mut events_in_request = 0;
        let (offset_in_group, bytes) = {
            let mut group = self.gathering.borrow_mut();
            let offset = group.framed.len() as u64;
            for event in events {
                group.framed.append_record(event);
                events_in_request += 1;
            }
            group.events += events_in_request;
            (offset, group.framed.len() as u64 - offset)
        };
        self.add_unstored(bytes as i64);
        if disk_only {
            self.disk_only_requests
                .set(self.disk_only_requests.get() + 1);
        }
        *self.outstanding.borrow_mut().entry(generation).or_default() += 1;
        self.work.notify(1);
        self.synced
            .wait_until(|| self.done_generation.get() >= generation)
            .await;
        if self.failed_generations.borrow().contains(&generation) {
            self.release([generation]);
            self.add_unstored(-(bytes as i64));
            if disk_only {
                self.disk_only_requests
                    .set(self.disk_only_requests.get() - 1);
            }
            return Err(LogError::Unavailable(
                "the group this request joined failed to reach the disk".into(),
            ));
        }
        if disk_only && self.is_store {
            // Synced is stored: nothing to read back.
            self.stats
                .stored_in_log
                .fetch_add(events_in_request, Relaxed);
            self.release([generation]);
            self.add_unstored(-(bytes as i64));
            self.disk_only_requests
                .set(self.disk_only_requests.get() - 1);
        } else {
            self.stats
                .unstored_events
                .fetch_add(events_in_request, Relaxed);
            if disk_only {
                self.backlog.borrow_mut().push_back(Backlogged {
                    generation,
                    offset_in_group,
                    bytes,
                    events: events_in_request as usize,
                });
                self.stats
                    .backlog_events
                    .fetch_add(events_in_request, Relaxed);
            }
        }
        Ok(Committed { generation, bytes })
    }

    fn add_unstored(&self, bytes: i64) {
        let now = (self.unstored_bytes.get() as i64 + bytes).max(0) as u64;
        self.unstored_bytes.set(now);
        self.stats.unstored_bytes.store(now, Relaxed);
    }

    /// Whether requests are kept on disk only now (so that a new one must be too).
    pub fn has_backlog(&self) -> bool {
        self.disk_only_requests.get() > 0
    }

    /// Whether records of `bytes` (framed) fit under `durability.max_log_bytes`.
    pub fn has_room(&self, bytes: u64) -> bool {
        self.unstored_bytes.get() + bytes <= self.max_bytes
    }

    /// Whether one part in `parts` of `durability.max_log_bytes` is free.
    pub fn has_free_part(&self, parts: u64) -> bool {
        self.has_room(self.max_bytes / parts)
    }

    /// Whether admission is refusing requests until the log drains.
    pub fn is_shedding(&self) -> bool {
        self.shedding.get()
    }

    pub fn set_shedding(&self, shedding: bool) {
        self.shedding.set(shedding);
    }

    /// Whether synced disk-only requests wait to be read back.
    pub fn backlog_is_empty(&self) -> bool {
        self.backlog.borrow().is_empty()
    }

    /// Reads the oldest requests kept on disk only back into `batch`, whole requests, up
    /// to the policy's bounds (at least one request); returns the bytes read. Requests
    /// that follow each other in a segment are read with one io_uring read: with direct
    /// writes nothing of them is in the page cache, and a blocking read per request held
    /// the shard for a device round trip each.
    pub async fn peek_backlog(&self, policy: &BatchPolicy, batch: &mut EventBatch) -> usize {
        batch.clear();
        // Plan the reads first: no RefCell borrow may live across an await.
        let mut spans: Vec<BacklogSpan> = Vec::new();
        {
            let backlog = self.backlog.borrow();
            let starts = self.group_starts.borrow();
            let (mut planned_events, mut planned_bytes) = (0, 0);
            for entry in backlog.iter() {
                if !spans.is_empty()
                    && (planned_events + entry.events > policy.max_events
                        || planned_bytes + entry.bytes as usize > policy.max_bytes)
                {
                    break;
                }
                let Some(&(sequence, start)) = starts.get(&entry.generation) else {
                    break;
                };
                let at = start + entry.offset_in_group;
                match spans.last_mut() {
                    Some(span) if span.sequence == sequence && span.at + span.len == at => {
                        span.len += entry.bytes;
                        span.requests += 1;
                        span.events += entry.events;
                    }
                    _ => spans.push(BacklogSpan {
                        sequence,
                        at,
                        len: entry.bytes,
                        requests: 1,
                        events: entry.events,
                    }),
                }
                planned_events += entry.events;
                planned_bytes += entry.bytes as usize;
            }
        }
        let mut bytes = 0;
        let mut taken = 0;
        for span in spans {
            let path = self.dir.join(format!(
                "{:016}.{}",
                span.sequence,
                crate::segment::SEGMENT_SUFFIX
            ));
            let Some(read) = self.read_back(&path, &span, batch).await else {
                break;
            };
            bytes += read;
            taken += span.requests;
        }
        self.peeked.set(taken);
        bytes
    }

    /// Reads a span of kept requests back into `batch`; returns the bytes added, or `None`
    /// (logged) if it cannot be read now.
    ///
    /// The first read goes through the page cache. With direct writes, a group's write
    /// rewrites the block where the group before it ends; if that block was being read
    /// back (for the group before) as the write landed, the kernel cannot drop its cached
    /// copy, and the cache keeps the block as it was before the write, zeros where the
    /// new records are. Those would scan as a torn tail and be skipped: acknowledged
    /// events lost. So a span that does not scan as exactly its records is read again
    /// with direct I/O, past the cache (or through it, on a file system without direct
    /// I/O); only what is still damaged then is skipped.
    async fn read_back(
        &self,
        path: &Path,
        span: &BacklogSpan,
        batch: &mut EventBatch,
    ) -> Option<usize> {
        let cached = read_span(path, span, false).await?;
        if let Some(payloads) = whole_records(&cached, span.events) {
            let mut bytes = 0;
            for payload in payloads {
                bytes += payload.len();
                batch.push(bytes::Bytes::copy_from_slice(payload));
            }
            return Some(bytes);
        }
        tracing::warn!(segment = %path.display(), at = span.at, len = span.len, "kept events read back damaged through the page cache; reading them again from the device");
        let data = read_span(path, span, true).await?;
        let mut bytes = 0;
        for found in crate::segment::Scanner::new(&data) {
            match found {
                crate::segment::Found::Record { payload, .. } => {
                    bytes += payload.len();
                    batch.push(bytes::Bytes::copy_from_slice(payload));
                }
                damage => {
                    self.stats.skipped_corrupt.fetch_add(1, Relaxed);
                    tracing::error!(segment = %path.display(), ?damage, "a kept record no longer reads back; skipped");
                }
            }
        }
        Some(bytes)
    }

    /// The peeked backlog requests are stored (or, `stored == false`, left in the log at
    /// shutdown).
    pub fn consume_backlog(&self, stored: bool) {
        let taken = self.peeked.replace(0);
        let mut settled = Vec::with_capacity(taken);
        for _ in 0..taken {
            let Some(entry) = self.backlog.borrow_mut().pop_front() else {
                break;
            };
            self.disk_only_requests
                .set(self.disk_only_requests.get() - 1);
            self.stats
                .backlog_events
                .fetch_sub(entry.events as u64, Relaxed);
            if stored {
                self.stats
                    .unstored_events
                    .fetch_sub(entry.events as u64, Relaxed);
                self.add_unstored(-(entry.bytes as i64));
                settled.push(entry.generation);
            }
        }
        self.release(settled);
    }

    /// Records that a committed request's `events` are now in the ring, after all before.
    pub fn pushed(&self, events: usize, generation: u64, bytes: u64) {
        self.in_ring
            .borrow_mut()
            .push_back((events, generation, bytes));
    }

    /// Records that a committed request was not pushed after all (shutdown began while it
    /// waited): its records stay in the log and are replayed at the next start.
    pub fn abandoned(&self, generation: u64) {
        // Its records are on disk but the sink will not see them in this run: the
        // checkpoint must not pass them, so the request stays outstanding.
        let _ = generation;
    }

    /// The writer stored the `count` oldest events of the ring.
    pub fn stored(&self, count: usize) {
        self.stats.unstored_events.fetch_sub(count as u64, Relaxed);
        let gone = self.leave_ring(count);
        let bytes: u64 = gone.iter().map(|&(_, bytes)| bytes).sum();
        self.add_unstored(-(bytes as i64));
        self.release(gone.into_iter().map(|(generation, _)| generation));
    }

    /// The `count` oldest events of the ring leave it unstored, at shutdown: their records
    /// stay outstanding, so the checkpoint stops before them.
    pub fn left_in_log(&self, count: usize) {
        self.leave_ring(count);
    }

    /// Takes the `count` oldest events off the ring's record; returns (generation, bytes)
    /// of each request wholly gone.
    fn leave_ring(&self, mut count: usize) -> Vec<(u64, u64)> {
        let mut gone = Vec::new();
        let mut in_ring = self.in_ring.borrow_mut();
        while count > 0 {
            let Some(front) = in_ring.front_mut() else {
                break;
            };
            if front.0 <= count {
                count -= front.0;
                let (_, generation, bytes) = in_ring.pop_front().unwrap();
                gone.push((generation, bytes));
            } else {
                front.0 -= count;
                count = 0;
            }
        }
        gone
    }

    /// Settles requests that no longer hold the checkpoint back (stored, or failed), then
    /// moves the checkpoint to the start of the oldest group still outstanding. Takes
    /// them together: the writer settles hundreds per flush, and the checkpoint and the
    /// pruning of group starts need doing once for all of them.
    fn release(&self, generations: impl IntoIterator<Item = u64>) {
        let mut outstanding = self.outstanding.borrow_mut();
        for generation in generations {
            if let Some(n) = outstanding.get_mut(&generation) {
                *n -= 1;
                if *n == 0 {
                    outstanding.remove(&generation);
                }
            }
        }
        let oldest = outstanding.keys().next().copied();
        drop(outstanding);
        let mut starts = self.group_starts.borrow_mut();
        let checkpoint = match oldest {
            Some(generation) => starts.get(&generation).copied(),
            None => Some(self.end.get()),
        };
        if let Some(checkpoint) = checkpoint {
            if checkpoint > self.checkpoint.get() {
                self.checkpoint.set(checkpoint);
            }
        }
        // Starts of groups older than every outstanding request are no longer needed;
        // they are the map's first entries.
        match oldest {
            Some(generation) => {
                while starts
                    .first_key_value()
                    .is_some_and(|(&g, _)| g < generation)
                {
                    starts.pop_first();
                }
            }
            None => starts.clear(),
        }
    }

    /// Everything before this position is stored by the sink.
    pub fn checkpoint(&self) -> Position {
        self.checkpoint.get()
    }

    /// A log with no files behind it, for admission's unit tests.
    #[cfg(test)]
    pub(crate) fn detached(max_bytes: u64) -> Self {
        ShardLog::new(
            (0, 0),
            (0, 0),
            Arc::default(),
            max_bytes,
            false,
            PathBuf::new(),
        )
    }

    /// Pretends `bytes` of records wait in the log (admission's unit tests).
    #[cfg(test)]
    pub(crate) fn hold(&self, bytes: u64, disk_only_requests: usize) {
        self.add_unstored(bytes as i64);
        self.disk_only_requests.set(disk_only_requests);
    }

    /// Pretends `bytes` of the records held have been stored (admission's unit tests).
    #[cfg(test)]
    pub(crate) fn pretend_stored(&self, bytes: u64) {
        self.add_unstored(-(bytes as i64));
    }

    /// Everything in the log so far is stored (replayed into the sink at start).
    pub fn all_stored(&self) {
        self.checkpoint.set(self.end.get());
    }

    /// Stops the committer once the groups already gathered are synced.
    pub fn close(&self) {
        self.closing.set(true);
        self.work.notify(usize::MAX);
    }
}

/// The payloads of `data`, if it holds exactly `records` records and nothing else.
fn whole_records(data: &[u8], records: usize) -> Option<Vec<&[u8]>> {
    let mut payloads = Vec::with_capacity(records);
    for found in crate::segment::Scanner::new(data) {
        match found {
            crate::segment::Found::Record { payload, .. } => payloads.push(payload),
            _ => return None,
        }
    }
    (payloads.len() == records).then_some(payloads)
}

/// The bytes of a span as read.
enum SpanData {
    Read(glommio::io::ReadResult),
    /// What the stale-cache test hook returns instead.
    #[cfg(feature = "test-hooks")]
    Zeros(Vec<u8>),
}

impl std::ops::Deref for SpanData {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            SpanData::Read(data) => data,
            #[cfg(feature = "test-hooks")]
            SpanData::Zeros(data) => data,
        }
    }
}

/// One read of a span: through the page cache, or (`uncached`) with direct I/O where the
/// file system allows it.
async fn read_span(path: &Path, span: &BacklogSpan, uncached: bool) -> Option<SpanData> {
    let len = span.len as usize;
    let read = async {
        if uncached {
            if let Ok(file) = glommio::io::DmaFile::open(path).await {
                let data = file.read_at(span.at, len).await;
                let _ = file.close().await;
                return data.map(SpanData::Read);
            }
        }
        let file = glommio::io::BufferedFile::open(path).await?;
        let data = file.read_at(span.at, len).await;
        let _ = file.close().await;
        #[cfg(feature = "test-hooks")]
        if !uncached && STALE_BACKLOG_FILE.get().is_some_and(|file| file.exists()) {
            return data.map(|data| SpanData::Zeros(vec![0; data.len()]));
        }
        data.map(SpanData::Read)
    }
    .await;
    match read {
        Ok(data) if data.len() == len => Some(data),
        Ok(data) => {
            tracing::error!(segment = %path.display(), read = data.len(), wanted = len, "kept events read back short; retrying");
            None
        }
        Err(err) => {
            tracing::error!(segment = %path.display(), error = %err, "cannot read back kept events; retrying");
            None
        }
    }
}

/// Writes and syncs the gathered groups, one at a time, until closed. (The checkpoint is
/// saved by the writer's side, about once a second: see [`LoggedRing`].)
pub async fn run_committer(log: Rc<ShardLog>, mut segments: SegmentWriter, dir: PathBuf) {
    loop {
        loop {
            let listener = log.work.listen();
            if log.gathering.borrow().events > 0 || log.closing.get() {
                break;
            }
            listener.await;
        }
        // Let every task already runnable (connections whose requests were read in the same
        // poll that woke us) join this group first: one sync for all of them rather than a
        // small group now and another right after. No wait when nothing else is runnable.
        futures_lite::future::yield_now().await;
        // The next group starts with room for about as much as this one: grown from nothing
        // by doubling, its buffer cost as much copying again as the records themselves. It
        // is gathered where its write will read it, after this group's write.
        let group = {
            let mut gathering = log.gathering.borrow_mut();
            let taken = gathering.framed.len();
            std::mem::replace(
                &mut *gathering,
                Group {
                    framed: segments.gather_next(taken, taken + taken / 4),
                    events: 0,
                },
            )
        };
        let generation = log.open_generation.get();
        if group.events == 0 {
            // Closing, and nothing more to sync.
            break;
        }
        log.open_generation.set(generation + 1);
        let started = Instant::now();
        let bytes = group.framed.len() as u64;
        let before = segments.position();
        let result = async {
            segments.append_gathered(group.framed).await?;
            let start = segments.position();
            segments.sync().await?;
            #[cfg(feature = "test-hooks")]
            if FAIL_SYNC_FILE.get().is_some_and(|file| file.exists()) {
                return Err(SegmentError::Io {
                    path: dir.clone(),
                    source: std::io::Error::other("injected fdatasync failure (test hook)"),
                });
            }
            Ok::<_, SegmentError>(start)
        }
        .await;
        match result {
            Ok(end) => {
                #[cfg(feature = "test-hooks")]
                if RECORD_SYNCED.get() == Some(&true) {
                    let temporary = dir.join("synced-position.new");
                    let _ = std::fs::write(&temporary, format!("{} {}\n", end.0, end.1))
                        .and_then(|()| std::fs::rename(&temporary, dir.join("synced-position")));
                }
                let start = (end.0, end.1 - bytes);
                log.group_starts.borrow_mut().insert(generation, start);
                log.end.set(end);
                log.stats.syncs.fetch_add(1, Relaxed);
                log.stats.events_synced.fetch_add(group.events, Relaxed);
                log.stats.bytes_written.fetch_add(bytes, Relaxed);
                log.stats.sync_latency.observe(started.elapsed());
            }
            Err(err) => {
                tracing::error!(log = %dir.display(), error = %err, events = group.events, "write-ahead log write or sync failed; its requests get 503");
                log.stats.sync_failures.fetch_add(1, Relaxed);
                log.failed_generations.borrow_mut().insert(generation);
                // A rotation inside append_gathered may have moved to a new segment first.
                let now = segments.position();
                let keep = if now.0 == before.0 { before.1 } else { 0 };
                if let Err(err) = segments.abandon_segment(keep).await {
                    tracing::error!(error = %err, "cannot start a new log segment");
                }
            }
        }
        log.done_generation.set(generation);
        log.synced.wake_all();
    }
    if let Err(err) = segments.close().await {
        tracing::warn!(error = %err, "closing the write-ahead log");
    }
}

/// Saves the checkpoint and deletes segments wholly before it; nothing when the log is the
/// store. Called by the shard's writer side after stores, and at shutdown.
pub fn settle(log: &ShardLog, dir: &Path, keep_segments: bool) {
    if keep_segments {
        return;
    }
    let checkpoint = log.checkpoint();
    if let Err(err) = recovery::save_checkpoint(dir, checkpoint) {
        tracing::warn!(error = %err, "cannot save the log checkpoint");
        return;
    }
    recovery::delete_before(dir, checkpoint.0);
    let (segments, bytes) = recovery::footprint(dir);
    log.stats.segments.store(segments, Relaxed);
    log.stats.segment_bytes.store(bytes, Relaxed);
}

/// Opens a shard's log in `dir`: cuts a torn tail, reads the checkpoint, and returns the
/// log, its writer (for [`run_committer`]) and the records to replay (none when
/// `log_is_store`: the log's records are then the stored events themselves).
pub async fn open(
    dir: &Path,
    settings: &DurabilitySettings,
    segment_bytes: u64,
    log_is_store: bool,
    stats: Arc<LogStats>,
) -> Result<(Rc<ShardLog>, SegmentWriter, Recovered), LogError> {
    let recovered = recover(dir, !log_is_store)?;
    stats.replayed(0, recovered.skipped);
    let segments = SegmentWriter::open(settings.segments(dir.to_owned(), segment_bytes)).await?;
    let end = segments.position();
    let checkpoint = recovered.checkpoint.min(end);
    let log = Rc::new(ShardLog::new(
        end,
        checkpoint,
        stats,
        settings.max_log_bytes,
        log_is_store,
        dir.to_owned(),
    ));
    Ok((log, segments, recovered))
}

/// Every shard's log statistics, as one `/metrics` collector.
#[derive(Debug)]
pub struct LogsCollector(pub Vec<Arc<LogStats>>);

impl Collector for LogsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let each = |get: fn(&LogStats) -> u64| observe::per_shard(&self.0, get);
        observe::counter(
            &mut encoder,
            "tidegate_log_syncs",
            "Write-ahead log groups written and synced.",
            each(|s| s.syncs.load(Relaxed)),
        )?;
        observe::counter(
            &mut encoder,
            "tidegate_log_sync_failures",
            "Log writes or syncs that failed (their requests got 503).",
            each(|s| s.sync_failures.load(Relaxed)),
        )?;
        observe::counter(
            &mut encoder,
            "tidegate_log_events",
            "Events synced to the log (events per sync = this / syncs).",
            each(|s| s.events_synced.load(Relaxed)),
        )?;
        observe::counter(
            &mut encoder,
            "tidegate_log_bytes",
            "Bytes written to the log.",
            each(|s| s.bytes_written.load(Relaxed)),
        )?;
        observe::counter(
            &mut encoder,
            "tidegate_log_stored_events",
            "Events kept on disk only where the log is the store (the spool): stored by their sync.",
            each(|s| s.stored_in_log.load(Relaxed)),
        )?;
        observe::counter(
            &mut encoder,
            "tidegate_log_replayed_events",
            "Events replayed from the log into the sink at start.",
            each(|s| s.replayed.load(Relaxed)),
        )?;
        observe::counter(
            &mut encoder,
            "tidegate_log_corrupt_records",
            "Damaged log records skipped at start (each reported in the log).",
            each(|s| s.skipped_corrupt.load(Relaxed)),
        )?;
        observe::gauge(
            &mut encoder,
            "tidegate_log_unstored_events",
            "Events in the log the sink has not stored yet (the checkpoint's lag).",
            each(|s| s.unstored_events.load(Relaxed)).map(|(l, v)| (l, v as i64)),
        )?;
        observe::gauge(
            &mut encoder,
            "tidegate_log_unstored_bytes",
            "Bytes of log records the sink has not stored yet (bounded by durability.max_log_bytes).",
            each(|s| s.unstored_bytes.load(Relaxed)).map(|(l, v)| (l, v as i64)),
        )?;
        observe::gauge(
            &mut encoder,
            "tidegate_log_max_bytes",
            "durability.max_log_bytes: what tidegate_log_unstored_bytes may reach before log_full.",
            each(|s| s.max_bytes.load(Relaxed)).map(|(l, v)| (l, v as i64)),
        )?;
        observe::gauge(
            &mut encoder,
            "tidegate_log_backlog_events",
            "Events kept on disk only (the ring was full), waiting for the writer.",
            each(|s| s.backlog_events.load(Relaxed)).map(|(l, v)| (l, v as i64)),
        )?;
        observe::gauge(
            &mut encoder,
            "tidegate_log_segments",
            "Log segments kept, as of the last checkpoint (the spool's own, with the spool sink: not counted).",
            each(|s| s.segments.load(Relaxed)).map(|(l, v)| (l, v as i64)),
        )?;
        observe::gauge(
            &mut encoder,
            "tidegate_log_segment_bytes",
            "Bytes of the log segments kept, as of the last checkpoint.",
            each(|s| s.segment_bytes.load(Relaxed)).map(|(l, v)| (l, v as i64)),
        )?;
        observe::histogram(
            &mut encoder,
            "tidegate_log_sync_seconds",
            "Time to write and sync one group.",
            1e6,
            self.0
                .iter()
                .enumerate()
                .map(|(id, s)| (observe::shard_labels(id), &s.sync_latency)),
        )
    }
}

/// The ring as the writer drains it when the log is on: what the writer stores moves the
/// log's checkpoint, which is saved (and stored segments deleted) about once a second.
pub struct LoggedRing {
    ring: Rc<ShardRing>,
    log: Rc<ShardLog>,
    dir: PathBuf,
    /// The log is the spool itself: its segments are the store, never deleted.
    keep_segments: bool,
    settled: Cell<Instant>,
    /// Stored segments are being deleted in the background.
    deleting: Rc<Cell<bool>>,
    /// Whether the last peek came from the ring (or else from the backlog).
    from_ring: Cell<bool>,
}

/// At shutdown, a batch the sink refuses stays in the log for the next start: a stop
/// never waits on a dead sink, and loses nothing.
pub struct LeaveInLog;

impl crate::writer::Fallback for LeaveInLog {
    async fn take(&self, shard: usize, batch: &EventBatch) -> bool {
        tracing::warn!(
            shard,
            events = batch.len(),
            "shutting down with the sink failing: the batch stays in the log for the next start"
        );
        true
    }
}

/// How often the checkpoint is saved while the writer stores.
const SETTLE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl LoggedRing {
    pub fn new(ring: Rc<ShardRing>, log: Rc<ShardLog>, dir: PathBuf, keep_segments: bool) -> Self {
        LoggedRing {
            ring,
            log,
            dir,
            keep_segments,
            settled: Cell::new(Instant::now()),
            deleting: Rc::default(),
            from_ring: Cell::new(true),
        }
    }

    /// Saves the checkpoint now (at shutdown, once the writer has stopped).
    pub fn settle(&self) {
        settle(&self.log, &self.dir, self.keep_segments);
        self.settled.set(Instant::now());
    }

    /// Saves the checkpoint, and deletes the segments wholly before it through glommio's
    /// async remove: unlinking a 64 MiB segment on the shard's thread held every request
    /// on it for milliseconds (durable blackhole 100-event p99 28 ms, against 10 ms with
    /// the spool sink, whose log segments are never deleted).
    fn settle_while_serving(&self) {
        self.settled.set(Instant::now());
        if self.keep_segments {
            return;
        }
        let checkpoint = self.log.checkpoint();
        if let Err(err) = recovery::save_checkpoint(&self.dir, checkpoint) {
            tracing::warn!(error = %err, "cannot save the log checkpoint");
            return;
        }
        if self.deleting.get() {
            return;
        }
        let stored = recovery::segments_before(&self.dir, checkpoint.0);
        let deleting = self.deleting.clone();
        let dir = self.dir.clone();
        let stats = self.log.stats.clone();
        deleting.set(true);
        glommio::spawn_local(async move {
            for file in stored {
                if let Err(err) = glommio::io::remove(&file).await {
                    recovery::cannot_delete(&file, &err);
                }
            }
            let (segments, bytes) = recovery::footprint(&dir);
            stats.segments.store(segments, Relaxed);
            stats.segment_bytes.store(bytes, Relaxed);
            deleting.set(false);
        })
        .detach();
    }
}

/// The ring holds what was admitted before any request went to the disk only, so it is
/// drained first; then the backlog is read back from the log, in log order.
impl BatchSource for LoggedRing {
    fn is_empty(&self) -> bool {
        self.ring.is_empty() && self.log.backlog_is_empty()
    }

    fn has_full_batch(&self, policy: &BatchPolicy) -> bool {
        self.ring.has_full_batch(policy) || !self.log.backlog_is_empty()
    }

    async fn peek_batch(&self, policy: &BatchPolicy, batch: &mut EventBatch) -> usize {
        let from_ring = !self.ring.is_empty();
        self.from_ring.set(from_ring);
        if from_ring {
            self.ring.peek_batch(policy, batch).await
        } else {
            self.log.peek_backlog(policy, batch).await
        }
    }

    fn consume(&self, count: usize) {
        if self.from_ring.get() {
            self.ring.consume(count);
            self.log.stored(count);
        } else {
            self.log.consume_backlog(true);
        }
        if self.settled.get().elapsed() >= SETTLE_EVERY {
            self.settle_while_serving();
        }
    }

    fn consume_unstored(&self, count: usize) {
        // Left in the log: the checkpoint does not pass them, the next start replays them.
        if self.from_ring.get() {
            self.ring.consume(count);
            self.log.left_in_log(count);
        } else {
            self.log.consume_backlog(false);
        }
    }

    fn listen(&self) -> event_listener::EventListener {
        self.ring.listen()
    }

    fn is_closing(&self) -> bool {
        self.ring.is_closing()
    }
}
