//! The per-core ring of accepted events: the buffer between admission and the writer.
//!
//! Each shard owns one ring, touched only by its own thread: the HTTP handlers append,
//! the shard's writer reads from the front. Because nothing else touches it there are no
//! atomics or locks on this path; the admission decision and the append happen without an
//! await in between, so a request's events enter the ring together or not at all.
//!
//! The ring is bounded twice, in events and in bytes, so that neither many tiny events nor
//! a few huge ones can grow memory past the configured budget. The writer first *peeks* a
//! batch and only *consumes* it once the sink has stored it: an event being written still
//! counts against capacity, and "accepted = flushed + in ring" holds at every instant.

use std::cell::{Cell, RefCell, RefMut};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use event_listener::Event;

use crate::encoded::EventBatch;
use crate::observe::{self, Collector, DescriptorEncoder};
use crate::writer::{BatchPolicy, BatchSource};

/// Capacity of one ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingCapacity {
    pub events: usize,
    pub bytes: usize,
}

/// A batch that did not fit; nothing of it was added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingFull {
    pub free_events: usize,
    pub free_bytes: usize,
}

/// A ring's depth as other threads see it (readiness, the drain's pressure check,
/// `/metrics`): published by the ring on every change, with the marks it is judged by.
#[derive(Debug)]
pub struct RingLoad {
    events: AtomicU64,
    bytes: AtomicU64,
    capacity: RingCapacity,
    high_water: RingCapacity,
}

impl RingLoad {
    /// The load of a ring of `capacity`, counted high at `high_water_percent` of either bound.
    pub fn new(capacity: RingCapacity, high_water_percent: u8) -> Self {
        let mark = |cap: usize| cap * usize::from(high_water_percent) / 100;
        RingLoad {
            events: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            capacity,
            high_water: RingCapacity {
                events: mark(capacity.events),
                bytes: mark(capacity.bytes),
            },
        }
    }

    /// Events in the ring, including a batch being written.
    pub fn events(&self) -> u64 {
        self.events.load(Relaxed)
    }

    /// Whether the ring is at or above its high-water mark, in events or bytes.
    pub fn above_high_water(&self) -> bool {
        self.events.load(Relaxed) >= self.high_water.events as u64
            || self.bytes.load(Relaxed) >= self.high_water.bytes as u64
    }

    fn publish(&self, events: usize, bytes: usize) {
        self.events.store(events as u64, Relaxed);
        self.bytes.store(bytes as u64, Relaxed);
    }
}

pub struct Ring {
    /// Each request's encoded events, back to back in one buffer, oldest request first.
    /// The ring holds one handle per request, and so does a peeked batch
    /// ([`EventBatch`]). Every handle is an atomic reference count: with a handle per
    /// event in the ring, the ring's bookkeeping took 10% of a shard's time under 100-event
    /// requests (perf samples), 5% with one per event in peeked batches only.
    requests: VecDeque<Request>,
    /// Each event's length, oldest first; in order, they tile the requests' buffers.
    lengths: VecDeque<usize>,
    /// How much of the oldest request the writer has consumed: its first `events` events,
    /// `bytes` bytes.
    front_consumed: Consumed,
    bytes: usize,
    capacity: RingCapacity,
    /// Room held for requests waiting on the write-ahead log's sync.
    reserved: RingCapacity,
    load: Arc<RingLoad>,
    /// Set by admission when a request did not fit; admission decides when to clear it.
    shedding: bool,
}

impl Ring {
    pub fn new(capacity: RingCapacity) -> Self {
        Ring::with_high_water(capacity, 100)
    }

    /// A ring whose published load counts as high at `high_water_percent` of either bound.
    pub fn with_high_water(capacity: RingCapacity, high_water_percent: u8) -> Self {
        Ring::publishing_to(Arc::new(RingLoad::new(capacity, high_water_percent)))
    }

    /// A ring of `load`'s capacity that publishes its depth there.
    pub fn publishing_to(load: Arc<RingLoad>) -> Self {
        let capacity = load.capacity;
        Ring {
            requests: VecDeque::new(),
            lengths: VecDeque::with_capacity(capacity.events.min(1 << 16)),
            front_consumed: Consumed::default(),
            bytes: 0,
            capacity,
            reserved: RingCapacity {
                events: 0,
                bytes: 0,
            },
            load,
            shedding: false,
        }
    }

    /// The ring's published depth, for other threads.
    pub fn load(&self) -> Arc<RingLoad> {
        self.load.clone()
    }

    pub fn capacity(&self) -> RingCapacity {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether admission is refusing requests until the ring drains (see
    /// `admission::certain_refusal`).
    pub fn is_shedding(&self) -> bool {
        self.shedding
    }

    pub fn set_shedding(&mut self, shedding: bool) {
        self.shedding = shedding;
    }

    /// Whether `events` events of `bytes` bytes in total would fit now.
    pub fn fits(&self, events: usize, bytes: usize) -> Result<(), RingFull> {
        let free_events = self.capacity.events - self.lengths.len() - self.reserved.events;
        let free_bytes = self.capacity.bytes - self.bytes - self.reserved.bytes;
        if events <= free_events && bytes <= free_bytes {
            Ok(())
        } else {
            Err(RingFull {
                free_events,
                free_bytes,
            })
        }
    }

    /// Appends every event of a request: `chunk` holds them back to back, `ends[i]` is
    /// where event `i` ends. All are added or, if they do not fit, none.
    pub fn push_all(&mut self, chunk: &Bytes, ends: &[usize]) -> Result<(), RingFull> {
        let Some(&bytes) = ends.last() else {
            return Ok(());
        };
        self.fits(ends.len(), bytes)?;
        let mut start = 0;
        for &end in ends {
            self.lengths.push_back(end - start);
            start = end;
        }
        self.requests.push_back(Request {
            chunk: chunk.clone(),
            events: ends.len(),
        });
        self.bytes += bytes;
        self.load.publish(self.lengths.len(), self.bytes);
        Ok(())
    }

    /// Holds room for `events` events of `bytes` bytes, for a request whose events will be
    /// pushed once the write-ahead log has them ([`Ring::push_reserved`]) or given back
    /// ([`Ring::unreserve`]). All of it or, if it does not fit, none.
    pub fn reserve(&mut self, events: usize, bytes: usize) -> Result<(), RingFull> {
        self.fits(events, bytes)?;
        self.reserved.events += events;
        self.reserved.bytes += bytes;
        Ok(())
    }

    /// Gives back room held by [`Ring::reserve`].
    pub fn unreserve(&mut self, events: usize, bytes: usize) {
        self.reserved.events -= events;
        self.reserved.bytes -= bytes;
    }

    /// Appends a request whose room was reserved (see [`Ring::push_all`] for the layout).
    pub fn push_reserved(&mut self, chunk: &Bytes, ends: &[usize]) {
        self.unreserve(ends.len(), chunk.len());
        self.push_all(chunk, ends)
            .expect("reserved room is kept for the request");
    }

    /// Appends events that are already separate slices (the part of a request the hot-key
    /// limit left for the ring). All are added or, if they do not fit, none.
    pub fn push_events(&mut self, events: &[Bytes]) -> Result<(), RingFull> {
        let bytes = events.iter().map(Bytes::len).sum();
        self.fits(events.len(), bytes)?;
        for event in events {
            self.lengths.push_back(event.len());
            self.requests.push_back(Request {
                chunk: event.clone(),
                events: 1,
            });
        }
        self.bytes += bytes;
        self.load.publish(self.lengths.len(), self.bytes);
        Ok(())
    }

    /// Puts the oldest events into `batch`, emptied first — up to `max_events` of them and
    /// no more than `max_bytes` (at least one event, however large) — without removing
    /// them: one handle per request's buffer, the events as ranges of it. Returns the
    /// bytes peeked.
    pub fn peek_batch(&self, max_events: usize, max_bytes: usize, batch: &mut EventBatch) -> usize {
        batch.clear();
        let mut lengths = self.lengths.iter();
        let mut skipped = &self.front_consumed;
        let none_skipped = Consumed::default();
        'requests: for request in &self.requests {
            let mut at = skipped.bytes;
            let mut in_batch = false;
            for _ in skipped.events..request.events {
                let len = *lengths.next().expect("the lengths tile the requests");
                if batch.len() == max_events
                    || (!batch.is_empty() && batch.bytes() + len > max_bytes)
                {
                    break 'requests;
                }
                if !in_batch {
                    batch.push_buffer(request.chunk.clone());
                    in_batch = true;
                }
                batch.push_range(at..at + len);
                at += len;
            }
            skipped = &none_skipped;
        }
        batch.bytes()
    }

    /// Whether a full batch is waiting: `max_events` events or `max_bytes` bytes.
    pub fn has_full_batch(&self, max_events: usize, max_bytes: usize) -> bool {
        self.lengths.len() >= max_events || self.bytes >= max_bytes
    }

    /// Removes the `count` oldest events, which the sink has stored.
    pub fn consume(&mut self, count: usize) {
        for len in self.lengths.drain(..count) {
            self.bytes -= len;
            let front = &mut self.front_consumed;
            front.events += 1;
            front.bytes += len;
            if front.events == self.requests[0].events {
                self.requests.pop_front();
                self.front_consumed = Consumed::default();
            }
        }
        self.load.publish(self.lengths.len(), self.bytes);
    }
}

/// One request's events in the ring.
struct Request {
    chunk: Bytes,
    events: usize,
}

#[derive(Default)]
struct Consumed {
    events: usize,
    bytes: usize,
}

/// A shard's ring as its tasks share it: the HTTP handlers push and wake the writer; the
/// writer waits, drains and finally learns from `closing` that no more pushes will come.
pub struct ShardRing {
    ring: RefCell<Ring>,
    pushed: Event,
    closing: Cell<bool>,
    /// A batch is full at this many events or bytes (the writer's policy).
    full_batch: BatchPolicy,
}

impl ShardRing {
    /// A ring publishing its depth to `load`, waking the writer by its `full_batch` policy.
    pub fn new(load: Arc<RingLoad>, full_batch: BatchPolicy) -> Self {
        ShardRing {
            ring: RefCell::new(Ring::publishing_to(load)),
            pushed: Event::new(),
            closing: Cell::new(false),
            full_batch,
        }
    }

    /// The ring itself, for an admission decision and its push; never held across an await.
    pub fn borrow_mut(&self) -> RefMut<'_, Ring> {
        self.ring.borrow_mut()
    }

    pub fn load(&self) -> Arc<RingLoad> {
        self.ring.borrow().load()
    }

    /// Wakes the writer after a push, but only when it can act: the ring was empty (the
    /// writer is idle and a batch's clock starts) or a full batch is now waiting. Otherwise
    /// it is waiting out its batch deadline and a wake would only make it re-arm the timer.
    pub fn notify_pushed(&self, was_empty: bool) {
        if was_empty || self.has_full_batch(&self.full_batch) {
            self.pushed.notify(1);
        }
    }

    /// Tells the writer that nothing more will be pushed: drain what is left and stop.
    pub fn close(&self) {
        self.closing.set(true);
        self.pushed.notify(usize::MAX);
    }
}

impl BatchSource for ShardRing {
    fn is_empty(&self) -> bool {
        self.ring.borrow().is_empty()
    }

    fn has_full_batch(&self, policy: &BatchPolicy) -> bool {
        self.ring
            .borrow()
            .has_full_batch(policy.max_events, policy.max_bytes)
    }

    async fn peek_batch(&self, policy: &BatchPolicy, batch: &mut EventBatch) -> usize {
        self.ring
            .borrow()
            .peek_batch(policy.max_events, policy.max_bytes, batch)
    }

    fn consume(&self, count: usize) {
        self.ring.borrow_mut().consume(count);
    }

    fn listen(&self) -> event_listener::EventListener {
        self.pushed.listen()
    }

    fn is_closing(&self) -> bool {
        self.closing.get()
    }
}

/// Every shard's ring depth, as one `/metrics` collector.
#[derive(Debug)]
pub struct RingsCollector(pub Vec<Arc<RingLoad>>);

impl Collector for RingsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let each = |get: fn(&RingLoad) -> u64| {
            observe::per_shard(&self.0, get).map(|(labels, value)| (labels, value as i64))
        };
        observe::gauge(
            &mut encoder,
            "tidegate_ring_events",
            "Events in the shard's ring, including a batch being written.",
            each(|l| l.events.load(Relaxed)),
        )?;
        observe::gauge(
            &mut encoder,
            "tidegate_ring_bytes",
            "Encoded bytes in the shard's ring.",
            each(|l| l.bytes.load(Relaxed)),
        )?;
        observe::gauge(
            &mut encoder,
            "tidegate_ring_capacity_events",
            "The ring's capacity in events.",
            each(|l| l.capacity.events as u64),
        )?;
        observe::gauge(
            &mut encoder,
            "tidegate_ring_capacity_bytes",
            "The ring's capacity in bytes.",
            each(|l| l.capacity.bytes as u64),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(events: usize, bytes: usize) -> Ring {
        Ring::new(RingCapacity { events, bytes })
    }

    #[test]
    fn push_is_all_or_nothing_on_both_bounds() {
        let mut r = ring(3, 100);
        let chunk = Bytes::from_static(b"aaabbbbcc");
        r.push_all(&chunk, &[3, 7, 9]).unwrap();
        assert_eq!((r.len(), r.bytes()), (3, 9));
        assert_eq!(
            r.push_all(&Bytes::from_static(b"x"), &[1]),
            Err(RingFull {
                free_events: 0,
                free_bytes: 91
            })
        );
        let mut r = ring(10, 8);
        assert!(r.push_all(&chunk, &[3, 7, 9]).is_err());
        assert!(r.is_empty());
        assert_eq!(r.bytes(), 0);
    }

    #[test]
    fn separate_events_are_pushed_all_or_none() {
        let mut r = ring(3, 6);
        let events = [Bytes::from_static(b"aa"), Bytes::from_static(b"bbb")];
        r.push_events(&events).unwrap();
        assert_eq!((r.len(), r.bytes()), (2, 5));
        assert!(r.push_events(&events).is_err(), "3 more bytes do not fit");
        assert_eq!(
            (r.len(), r.bytes()),
            (2, 5),
            "nothing of a refused push is kept"
        );
    }

    #[test]
    fn peek_then_consume_keeps_order_and_accounting() {
        let mut r = ring(10, 100);
        r.push_all(&Bytes::from_static(b"aabbccdd"), &[2, 4, 6, 8])
            .unwrap();
        let mut batch = EventBatch::default();
        assert_eq!(r.peek_batch(3, 5, &mut batch), 4);
        assert_eq!(batch.iter().collect::<Vec<_>>(), [b"aa", b"bb"]);
        assert_eq!(r.len(), 4, "peeking removes nothing");
        r.consume(batch.len());
        assert_eq!((r.len(), r.bytes()), (2, 4));
        assert_eq!(
            r.peek_batch(10, 1, &mut batch),
            2,
            "one oversized event still goes"
        );
        assert_eq!(batch.iter().collect::<Vec<_>>(), [b"cc"]);
        assert!(r.has_full_batch(2, 1000));
        assert!(!r.has_full_batch(3, 1000));
    }

    #[test]
    fn batches_end_and_resume_inside_a_request() {
        let mut r = ring(10, 100);
        r.push_all(&Bytes::from_static(b"aabbb"), &[2, 5]).unwrap();
        r.push_events(&[Bytes::from_static(b"cc")]).unwrap();
        r.push_all(&Bytes::from_static(b"ddeee"), &[2, 5]).unwrap();
        let mut batch = EventBatch::default();
        let peek = |r: &Ring, max_events, batch: &mut EventBatch| {
            r.peek_batch(max_events, 100, batch);
            batch.iter().map(|e| e.to_vec()).collect::<Vec<_>>()
        };
        assert_eq!(peek(&r, 3, &mut batch), [&b"aa"[..], b"bbb", b"cc"]);
        r.consume(1);
        assert_eq!(peek(&r, 2, &mut batch), [&b"bbb"[..], b"cc"]);
        r.consume(2);
        assert_eq!(r.requests.len(), 1, "consumed requests are let go");
        assert_eq!(peek(&r, 10, &mut batch), [&b"dd"[..], b"eee"]);
        r.consume(1);
        assert_eq!(peek(&r, 10, &mut batch), [&b"eee"[..]]);
        r.consume(1);
        assert!(r.is_empty() && r.requests.is_empty());
        assert_eq!(r.bytes(), 0);
        r.push_all(&Bytes::from_static(b"ff"), &[2]).unwrap();
        assert_eq!(peek(&r, 10, &mut batch), [&b"ff"[..]], "a fresh front");
    }

    #[test]
    fn reserved_room_is_held_until_pushed_or_given_back() {
        let mut r = ring(3, 100);
        r.reserve(2, 10).unwrap();
        assert!(r.reserve(2, 10).is_err(), "only one event of room left");
        assert!(r.push_all(&Bytes::from_static(b"ab"), &[1, 2]).is_err());
        r.push_reserved(&Bytes::from_static(b"ab"), &[1, 2]);
        assert_eq!(r.len(), 2);
        r.reserve(1, 5).unwrap();
        r.unreserve(1, 5);
        r.push_all(&Bytes::from_static(b"c"), &[1]).unwrap();
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn the_published_load_follows_pushes_and_consumes() {
        let mut r = Ring::with_high_water(
            RingCapacity {
                events: 10,
                bytes: 100,
            },
            50,
        );
        let load = r.load();
        r.push_all(&Bytes::from_static(b"aabbcc"), &[2, 4, 6])
            .unwrap();
        assert_eq!(load.events(), 3);
        assert!(!load.above_high_water());
        r.push_events(&[Bytes::from_static(b"dd"), Bytes::from_static(b"ee")])
            .unwrap();
        assert!(load.above_high_water(), "5 of 10 events is the 50% mark");
        r.consume(4);
        assert_eq!(load.events(), 1);
        assert!(!load.above_high_water());
    }
}
