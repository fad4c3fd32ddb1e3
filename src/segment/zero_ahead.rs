//! Zeros written ahead of a direct segment's records, so that records overwrite blocks the
//! file already has.
//!
//! A direct write that extends a file changes its metadata. ext4 cannot issue such a write
//! from io_uring without blocking, so it goes to a kernel worker thread, and only a journal
//! commit makes it durable: an fdatasync per group, run by that worker too. A direct write
//! over blocks already written changes nothing but data: with O_DSYNC it is issued at once
//! and completes durable after one cache flush, with no worker thread, no fdatasync and no
//! journal. On this project's VM that took durable single-event requests from ~51k to ~66k
//! per second on one core, and its context switches from ~3,200 to ~600 per second
//! (bench/results/2026-11-27-durable-ack.md).
//!
//! So a task keeps the space just past the records written with zeros, one chunk at a
//! time, never more than [`ZeroAhead::ahead`] past them. The zeros cost device bandwidth
//! (the log is written twice), not CPU: a direct write is a DMA transfer. The records may
//! outrun the zeros (a group larger than what is ready, or a failed zero write): a record
//! write then claims the space past the zeros and extends the file itself, as every write
//! did before, and the zeros resume after it. Zeros after the records read back as a torn
//! tail, which recovery cuts, as it does the padding of a direct write.

use std::cell::Cell;
use std::rc::Rc;

use event_listener::Event;
use glommio::io::{DmaBuffer, DmaFile};
use glommio::Task;

/// The zeros of one open segment, and the task writing them.
pub(super) struct ZeroAhead {
    shared: Rc<Shared>,
    task: Task<()>,
}

struct Shared {
    file: Rc<DmaFile>,
    /// Every byte below this is written: records, or zeros that are durable.
    prepared: Cell<u64>,
    /// Where the zero write in flight starts (at `prepared`), if one is.
    zeroing_from: Cell<Option<u64>>,
    /// Where the records end.
    records_end: Cell<u64>,
    /// No zeros past this: the segment's size, rounded up to a block.
    limit: u64,
    chunk: u64,
    ahead: u64,
    stopping: Cell<bool>,
    /// The records moved, or the writer is stopping: the task may have work.
    records_moved: Event,
    /// A zero write finished.
    zeroed: Event,
}

impl ZeroAhead {
    /// Starts zeroing `file`, an empty segment of `segment_bytes`, opened with O_DSYNC.
    pub(super) fn start(file: Rc<DmaFile>, segment_bytes: u64) -> Self {
        let limit = file.align_up(segment_bytes.max(1));
        // A small segment (in tests) gets small chunks, so that it still has several.
        let chunk = file.align_up((limit / 8).clamp(1, 1 << 20));
        let shared = Rc::new(Shared {
            file,
            prepared: Cell::new(0),
            zeroing_from: Cell::new(None),
            records_end: Cell::new(0),
            limit,
            chunk,
            ahead: 4 * chunk,
            stopping: Cell::new(false),
            records_moved: Event::new(),
            zeroed: Event::new(),
        });
        let task = glommio::spawn_local(write_zeros(shared.clone()));
        ZeroAhead { shared, task }
    }

    /// Returns once a record write may cover everything below `end` without racing a zero
    /// write: when zeros are there already, or else after claiming the space (waiting first
    /// for a zero write in flight, which may be about to cover it).
    pub(super) async fn clear_up_to(&self, end: u64) {
        let shared = &self.shared;
        loop {
            if end <= shared.prepared.get() {
                return;
            }
            let zeroed = shared.zeroed.listen();
            if shared.zeroing_from.get().is_none() {
                // The zeros resume after this write.
                shared.prepared.set(end);
                return;
            }
            zeroed.await;
        }
    }

    /// The records now end at `end`: the zeros may move on.
    pub(super) fn records_end_at(&self, end: u64) {
        self.shared.records_end.set(end);
        self.shared.records_moved.notify(1);
    }

    /// Stops the task, after the zero write in flight if any.
    pub(super) async fn stop(self) {
        self.shared.stopping.set(true);
        self.shared.records_moved.notify(1);
        self.task.await;
    }
}

async fn write_zeros(shared: Rc<Shared>) {
    // One chunk of zeros serves every write: a fresh buffer per chunk cost a 1 MiB
    // allocation and memset for each MiB of log, as much memory traffic as the records.
    let mut full_chunk: Option<Rc<DmaBuffer>> = None;
    loop {
        loop {
            let moved = shared.records_moved.listen();
            if shared.stopping.get() {
                return;
            }
            let prepared = shared.prepared.get();
            if prepared < shared.limit && prepared < shared.records_end.get() + shared.ahead {
                break;
            }
            moved.await;
        }
        let start = shared.prepared.get();
        let len = shared.chunk.min(shared.limit - start) as usize;
        let zeros = if len as u64 == shared.chunk {
            full_chunk
                .get_or_insert_with(|| Rc::new(zeroed_buffer(&shared.file, len)))
                .clone()
        } else {
            // The segment's last, shorter chunk.
            Rc::new(zeroed_buffer(&shared.file, len))
        };
        shared.zeroing_from.set(Some(start));
        let written = shared.file.write_rc_at(zeros, start).await;
        shared.zeroing_from.set(None);
        let ok = matches!(written, Ok(n) if n == len);
        if ok {
            // Nothing claimed this space meanwhile: a claim waits while zeros are in flight.
            shared.prepared.set(start + len as u64);
        }
        shared.zeroed.notify(usize::MAX);
        if !ok {
            // The records extend the file themselves from here (and meet the same error,
            // if it was one, which fails their group).
            tracing::debug!(result = ?written, "zeroing ahead of the log's records stopped");
            return;
        }
    }
}

fn zeroed_buffer(file: &DmaFile, len: usize) -> DmaBuffer {
    let mut buffer = file.alloc_dma_buffer(len);
    buffer.as_bytes_mut().fill(0);
    buffer
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record write past the zeros waits for a zero write in flight, which could
    /// otherwise land after it and over it, and then claims the space so that the zeros
    /// resume beyond it.
    #[test]
    fn a_write_past_the_zeros_waits_for_the_zero_write_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let file = Rc::new(DmaFile::create(&path).await.unwrap());
                let zeros = ZeroAhead::start(file.clone(), 64 << 20);
                // Let the task issue its first zero write.
                futures_lite::future::yield_now().await;
                assert_eq!(zeros.shared.zeroing_from.get(), Some(0));
                let chunk = zeros.shared.chunk;
                // Within what the zeros reach before the records move: a wait, no claim.
                zeros.clear_up_to(3 * chunk).await;
                assert!(
                    zeros
                        .shared
                        .zeroing_from
                        .get()
                        .is_none_or(|from| from >= 3 * chunk),
                    "returned while zeros were in flight below the write's end"
                );
                assert!(zeros.shared.prepared.get() >= 3 * chunk);
                // Past them: a claim, once no zero write is in flight.
                let end = 10 * chunk;
                zeros.clear_up_to(end).await;
                assert!(zeros.shared.zeroing_from.get().is_none());
                assert_eq!(zeros.shared.prepared.get(), end);
                zeros.records_end_at(end);
                // The zeros resume after the claimed space, up to `ahead` past the records.
                glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
                assert_eq!(zeros.shared.prepared.get(), end + zeros.shared.ahead);
                assert_eq!(
                    std::fs::metadata(&path).unwrap().len(),
                    end + zeros.shared.ahead
                );
                zeros.stop().await;
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
