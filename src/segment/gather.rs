//! Records gathered for one write, framed where the write will read them.
//!
//! The write-ahead log frames each request's records into the group being gathered, and
//! writes the group once it is taken. For a direct segment the write needs an aligned
//! buffer that starts with the segment's partial last block; framing into a `Vec` first
//! meant a second pass over every logged byte, through a buffer the size of the group
//! (about 640 KiB with 64 connections of 100-event requests) and cold each time. A
//! [`Gathered`] for a direct segment is that aligned buffer from the start, with room at
//! its head for the partial block the segment will have when the group is written, so each
//! record is framed once. When the guess turns out wrong (the segment rotated, or a failed
//! write abandoned it) the writer copies, as it always did.

use glommio::io::DmaBuffer;

use super::record::{append_record, frame_into, framed_len};

/// Records framed for one write (see the module's notes).
pub struct Gathered {
    storage: Storage,
    /// Framed bytes gathered, after the head.
    len: usize,
}

pub(super) enum Storage {
    /// For a buffered segment, or before the log knows which kind it writes.
    Heap(Vec<u8>),
    /// For a direct segment: the records start at `head`, the length the segment's
    /// partial last block is expected to have when this is written.
    Aligned { buffer: DmaBuffer, head: usize },
}

/// Direct writes need memory aligned to the device's logical block, which is at most a
/// page; glommio's buffers are page-aligned, and their sizes are kept whole pages so that a
/// write's padding always fits.
const PAGE: usize = 4096;

impl Default for Gathered {
    fn default() -> Self {
        Gathered::heap(0)
    }
}

impl Gathered {
    pub(super) fn heap(capacity: usize) -> Self {
        Gathered {
            storage: Storage::Heap(Vec::with_capacity(capacity)),
            len: 0,
        }
    }

    /// Records framed already, into a `Vec`.
    pub(super) fn from_records(records: Vec<u8>) -> Self {
        Gathered {
            len: records.len(),
            storage: Storage::Heap(records),
        }
    }

    pub(super) fn aligned(head: usize, capacity: usize) -> Self {
        Gathered {
            storage: Storage::Aligned {
                buffer: allocate(head + capacity),
                head,
            },
            len: 0,
        }
    }

    /// Frames one record after those gathered.
    pub fn append_record(&mut self, payload: &[u8]) {
        let framed = framed_len(payload.len());
        match &mut self.storage {
            Storage::Heap(records) => append_record(records, payload),
            Storage::Aligned { buffer, head } => {
                let start = *head + self.len;
                let needed = start + framed;
                if needed > buffer.len() {
                    let mut larger = allocate(needed.max(2 * buffer.len()));
                    larger.as_bytes_mut()[..start].copy_from_slice(&buffer.as_bytes()[..start]);
                    *buffer = larger;
                }
                frame_into(&mut buffer.as_bytes_mut()[start..needed], payload);
            }
        }
        self.len += framed;
    }

    /// The framed bytes gathered.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The records gathered, framed.
    pub fn records(&self) -> &[u8] {
        match &self.storage {
            Storage::Heap(records) => records,
            Storage::Aligned { buffer, head } => &buffer.as_bytes()[*head..*head + self.len],
        }
    }

    pub(super) fn into_storage(self) -> Storage {
        self.storage
    }
}

fn allocate(len: usize) -> DmaBuffer {
    glommio::allocate_dma_buffer(len.max(1).next_multiple_of(PAGE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::{Found, Scanner};

    /// Records framed in place read back as the same records, including across the
    /// buffer growing, and the head is left for the writer.
    #[test]
    fn aligned_records_read_back_and_survive_growth() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let payloads: Vec<Vec<u8>> = (0..200).map(|i| vec![i as u8; 10 + i * 7]).collect();
                let mut heap = Gathered::heap(0);
                let mut aligned = Gathered::aligned(100, 16);
                for payload in &payloads {
                    heap.append_record(payload);
                    aligned.append_record(payload);
                }
                assert_eq!(heap.records(), aligned.records());
                assert_eq!(aligned.len(), heap.records().len());
                let found: Vec<_> = Scanner::new(aligned.records())
                    .map(|found| match found {
                        Found::Record { payload, .. } => payload.to_vec(),
                        other => panic!("{other:?}"),
                    })
                    .collect();
                assert_eq!(found, payloads);
                match aligned.into_storage() {
                    Storage::Aligned { buffer, head } => {
                        assert_eq!(head, 100);
                        assert_eq!(buffer.len() % PAGE, 0);
                    }
                    Storage::Heap(_) => panic!("aligned storage became a Vec"),
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
