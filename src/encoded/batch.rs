//! A batch of encoded events as the writer hands it to a sink: slices of the buffers that
//! hold them, with one handle per buffer rather than one per event.
//!
//! The ring keeps each request's events back to back in one buffer. Handing a sink one
//! `Bytes` per event cost an atomic increment when the batch was taken and an atomic
//! decrement when it was dropped, for every event: with the ring's per-event bookkeeping,
//! about 5% of a shard's time under 100-event requests (perf). Every sink reads the events
//! and copies what it keeps, so a batch holds each request's buffer once and the events as
//! ranges of it; a sink that must own an event beyond the call takes [`EventBatch::owned`].

use std::ops::Range;

use bytes::Bytes;

/// Encoded events, in order, each a range of one of the batch's buffers.
#[derive(Debug, Default, Clone)]
pub struct EventBatch {
    buffers: Vec<Bytes>,
    /// Each event: the index of its buffer and where it is in it.
    events: Vec<(u32, Range<u32>)>,
    bytes: usize,
}

impl EventBatch {
    /// An empty batch with room for `events` events.
    pub fn with_capacity(events: usize) -> Self {
        EventBatch {
            buffers: Vec::new(),
            events: Vec::with_capacity(events),
            bytes: 0,
        }
    }

    /// Empties the batch, releasing its buffers and keeping its room.
    pub fn clear(&mut self) {
        self.buffers.clear();
        self.events.clear();
        self.bytes = 0;
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The bytes of all its events.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds a buffer that the events pushed next with [`EventBatch::push_range`] are in.
    pub fn push_buffer(&mut self, buffer: Bytes) {
        self.buffers.push(buffer);
    }

    /// Adds the event at `range` of the buffer last pushed.
    ///
    /// # Panics
    /// If no buffer was pushed, or the range is not inside the last one.
    pub fn push_range(&mut self, range: Range<usize>) {
        let buffer = self
            .buffers
            .len()
            .checked_sub(1)
            .expect("a buffer was pushed");
        assert!(
            range.start <= range.end && range.end <= self.buffers[buffer].len(),
            "the event is inside its buffer"
        );
        self.bytes += range.len();
        let index = u32::try_from(buffer).expect("fewer than 2^32 buffers");
        let range = u32::try_from(range.start).expect("buffers under 4 GiB")
            ..u32::try_from(range.end).expect("buffers under 4 GiB");
        self.events.push((index, range));
    }

    /// Adds one event held in a buffer of its own.
    pub fn push(&mut self, event: Bytes) {
        let len = event.len();
        self.push_buffer(event);
        self.push_range(0..len);
    }

    /// The event at `index`.
    ///
    /// # Panics
    /// If `index` is not below [`EventBatch::len`].
    pub fn get(&self, index: usize) -> &[u8] {
        self.slice(&self.events[index])
    }

    fn slice(&self, (buffer, range): &(u32, Range<u32>)) -> &[u8] {
        &self.buffers[*buffer as usize][range.start as usize..range.end as usize]
    }

    /// The event at `index` as a handle of its own, for a sink that keeps it after the
    /// call. Costs what a handle per event cost the whole batch before.
    pub fn owned(&self, index: usize) -> Bytes {
        let (buffer, range) = &self.events[index];
        self.buffers[*buffer as usize].slice(range.start as usize..range.end as usize)
    }

    /// The events, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + Clone + '_ {
        self.events.iter().map(|event| self.slice(event))
    }

    /// Every event as a handle of its own.
    pub fn to_owned_events(&self) -> Vec<Bytes> {
        (0..self.len()).map(|index| self.owned(index)).collect()
    }
}

impl FromIterator<Bytes> for EventBatch {
    fn from_iter<I: IntoIterator<Item = Bytes>>(events: I) -> Self {
        let mut batch = EventBatch::default();
        for event in events {
            batch.push(event);
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_the_ranges_of_their_buffers_in_order() {
        let mut batch = EventBatch::with_capacity(4);
        batch.push_buffer(Bytes::from_static(b"aaabbcccc"));
        batch.push_range(0..3);
        batch.push_range(3..5);
        batch.push(Bytes::from_static(b"d"));
        batch.push_buffer(Bytes::from_static(b"xxeee"));
        batch.push_range(2..5);
        let events: Vec<&[u8]> = batch.iter().collect();
        assert_eq!(events, [&b"aaa"[..], b"bb", b"d", b"eee"]);
        assert_eq!(batch.len(), 4);
        assert_eq!(batch.bytes(), 9);
        assert_eq!(batch.get(3), b"eee");
        assert_eq!(batch.owned(1), Bytes::from_static(b"bb"));
        assert_eq!(
            batch.to_owned_events(),
            [&b"aaa"[..], b"bb", b"d", b"eee"].map(Bytes::from_static)
        );
        batch.clear();
        assert!(batch.is_empty());
        assert_eq!(batch.bytes(), 0);
        assert_eq!(batch.iter().count(), 0);
    }

    #[test]
    fn a_batch_collected_from_handles_keeps_each_one() {
        let batch: EventBatch = [b"one".as_slice(), b"", b"three"]
            .map(Bytes::from_static)
            .into_iter()
            .collect();
        assert_eq!(
            batch.iter().collect::<Vec<_>>(),
            [&b"one"[..], b"", b"three"]
        );
        assert_eq!(batch.bytes(), 8);
    }

    #[test]
    #[should_panic(expected = "inside its buffer")]
    fn a_range_past_its_buffer_is_refused() {
        let mut batch = EventBatch::default();
        batch.push_buffer(Bytes::from_static(b"abc"));
        batch.push_range(1..4);
    }
}
