//! Stage 3: the per-core ring of accepted events.
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

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use bytes::Bytes;
use event_listener::Event;

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

pub struct Ring {
    events: VecDeque<Bytes>,
    bytes: usize,
    capacity: RingCapacity,
}

impl Ring {
    pub fn new(capacity: RingCapacity) -> Self {
        Ring {
            events: VecDeque::with_capacity(capacity.events.min(1 << 16)),
            bytes: 0,
            capacity,
        }
    }

    pub fn capacity(&self) -> RingCapacity {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether `events` events of `bytes` bytes in total would fit now.
    pub fn fits(&self, events: usize, bytes: usize) -> Result<(), RingFull> {
        let free_events = self.capacity.events - self.events.len();
        let free_bytes = self.capacity.bytes - self.bytes;
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
        self.fits(ends.len(), chunk.len())?;
        let mut start = 0;
        for &end in ends {
            // A slice shares the request's one allocation: no copy, no allocation per event.
            self.events.push_back(chunk.slice(start..end));
            start = end;
        }
        self.bytes += chunk.len();
        Ok(())
    }

    /// Appends events that are already separate slices (the part of a request the hot-key
    /// limit left for the ring). All are added or, if they do not fit, none.
    pub fn push_events(&mut self, events: &[Bytes]) -> Result<(), RingFull> {
        let bytes = events.iter().map(Bytes::len).sum();
        self.fits(events.len(), bytes)?;
        self.events.extend(events.iter().cloned());
        self.bytes += bytes;
        Ok(())
    }

    /// Copies handles to the oldest events into `batch` — up to `max_events` of them and
    /// no more than `max_bytes` (at least one event, however large) — without removing
    /// them. Returns the bytes peeked.
    pub fn peek_batch(&self, max_events: usize, max_bytes: usize, batch: &mut Vec<Bytes>) -> usize {
        batch.clear();
        let mut bytes = 0;
        for event in self.events.iter().take(max_events) {
            if !batch.is_empty() && bytes + event.len() > max_bytes {
                break;
            }
            bytes += event.len();
            batch.push(event.clone());
        }
        bytes
    }

    /// Whether a full batch is waiting: `max_events` events or `max_bytes` bytes.
    pub fn has_full_batch(&self, max_events: usize, max_bytes: usize) -> bool {
        self.events.len() >= max_events || self.bytes >= max_bytes
    }

    /// Removes the `count` oldest events, which the sink has stored.
    pub fn consume(&mut self, count: usize) {
        for event in self.events.drain(..count) {
            self.bytes -= event.len();
        }
    }
}

/// A shard's ring as its tasks share it: the HTTP handlers push and wake the writer; the
/// writer waits, drains and finally learns from `closing` that no more pushes will come.
pub struct ShardRing {
    pub ring: RefCell<Ring>,
    pushed: Event,
    closing: Cell<bool>,
    /// A batch is full at this many events or bytes (the writer's policy).
    full_batch: (usize, usize),
}

impl ShardRing {
    pub fn new(capacity: RingCapacity, full_batch_events: usize, full_batch_bytes: usize) -> Self {
        ShardRing {
            ring: RefCell::new(Ring::new(capacity)),
            pushed: Event::new(),
            closing: Cell::new(false),
            full_batch: (full_batch_events, full_batch_bytes),
        }
    }

    /// Wakes the writer after a push, but only when it can act: the ring was empty (the
    /// writer is idle and a batch's clock starts) or a full batch is now waiting. Otherwise
    /// it is waiting out its batch deadline and a wake would only make it re-arm the timer.
    pub fn notify_pushed(&self, was_empty: bool) {
        let full = self
            .ring
            .borrow()
            .has_full_batch(self.full_batch.0, self.full_batch.1);
        if was_empty || full {
            self.pushed.notify(1);
        }
    }

    /// A future that completes at the next push (or close); create it *before* checking the
    /// condition it waits for, so a push in between is not missed.
    pub fn listen(&self) -> event_listener::EventListener {
        self.pushed.listen()
    }

    /// Tells the writer that nothing more will be pushed: drain what is left and stop.
    pub fn close(&self) {
        self.closing.set(true);
        self.pushed.notify(usize::MAX);
    }

    pub fn is_closing(&self) -> bool {
        self.closing.get()
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
        let mut batch = Vec::new();
        assert_eq!(r.peek_batch(3, 5, &mut batch), 4);
        assert_eq!(
            batch,
            vec![Bytes::from_static(b"aa"), Bytes::from_static(b"bb")]
        );
        assert_eq!(r.len(), 4, "peeking removes nothing");
        r.consume(batch.len());
        assert_eq!((r.len(), r.bytes()), (2, 4));
        assert_eq!(
            r.peek_batch(10, 1, &mut batch),
            2,
            "one oversized event still goes"
        );
        assert_eq!(batch, vec![Bytes::from_static(b"cc")]);
        assert!(r.has_full_batch(2, 1000));
        assert!(!r.has_full_batch(3, 1000));
    }
}
