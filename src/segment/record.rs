//! How records are framed inside a segment, and how a damaged segment is read.
//!
//! ```text
//! magic "TGR1" | u32 LE payload length | u32 LE CRC-32 of the payload | payload
//! ```
//!
//! The magic marks where records begin, so a reader that meets damage — a torn write at the
//! end after a crash, or flipped bits in the middle — reports it, searches forward for the
//! next magic whose record checks out, and carries on. A bad record costs that record,
//! never the rest of the segment (the failure users of other disk buffers complain of).

pub const MAGIC: [u8; 4] = *b"TGR1";
pub const HEADER_LEN: usize = 12;
/// Longest payload a reader believes; a larger length field is treated as damage.
pub const MAX_PAYLOAD: usize = 64 << 20;

/// Appends one framed record to `out`.
pub fn append_record(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&header(payload));
    out.extend_from_slice(payload);
}

/// Frames one record into `out`, which is exactly [`framed_len`] of the payload long.
pub fn frame_into(out: &mut [u8], payload: &[u8]) {
    let (head, body) = out.split_at_mut(HEADER_LEN);
    head.copy_from_slice(&header(payload));
    body.copy_from_slice(payload);
}

fn header(payload: &[u8]) -> [u8; HEADER_LEN] {
    let mut header = [0; HEADER_LEN];
    header[..4].copy_from_slice(&MAGIC);
    header[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[8..].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    header
}

/// The number of bytes [`append_record`] writes for a payload of `len` bytes.
pub fn framed_len(len: usize) -> usize {
    HEADER_LEN + len
}

/// What a scan finds at a position in a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Found<'a> {
    Record {
        offset: usize,
        payload: &'a [u8],
    },
    /// Bytes that are not a valid record; the scan resumes `skipped` bytes later.
    Damaged {
        offset: usize,
        skipped: usize,
        reason: &'static str,
    },
    /// An incomplete record at the end: a write the process did not finish.
    Torn {
        offset: usize,
        len: usize,
    },
}

/// Walks a segment's bytes record by record, reporting and skipping damage.
pub struct Scanner<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Scanner { data, pos: 0 }
    }

    fn next_magic_after(&self, pos: usize) -> Option<usize> {
        let from = pos + 1;
        self.data
            .get(from..)?
            .windows(MAGIC.len())
            .position(|w| w == MAGIC)
            .map(|i| from + i)
    }

    /// Reports `reason` at the current position and moves to the next candidate record,
    /// or, when none follows, treats the rest as a torn tail.
    fn skip_damage(&mut self, reason: &'static str, could_be_torn: bool) -> Found<'a> {
        let offset = self.pos;
        match self.next_magic_after(offset) {
            Some(next) => {
                self.pos = next;
                Found::Damaged {
                    offset,
                    skipped: next - offset,
                    reason,
                }
            }
            None => {
                self.pos = self.data.len();
                if could_be_torn {
                    Found::Torn {
                        offset,
                        len: self.data.len() - offset,
                    }
                } else {
                    Found::Damaged {
                        offset,
                        skipped: self.data.len() - offset,
                        reason,
                    }
                }
            }
        }
    }
}

impl<'a> Iterator for Scanner<'a> {
    type Item = Found<'a>;

    fn next(&mut self) -> Option<Found<'a>> {
        let rest = &self.data[self.pos..];
        if rest.is_empty() {
            return None;
        }
        if rest.iter().all(|&byte| byte == 0) {
            // Zeros to the end: the padding of a direct write to the block boundary, which
            // the next write replaces with records (see the writer); the log was cut off
            // before that write.
            self.pos = self.data.len();
            return Some(Found::Torn {
                offset: self.data.len() - rest.len(),
                len: rest.len(),
            });
        }
        if rest.len() < HEADER_LEN {
            if MAGIC.starts_with(&rest[..rest.len().min(4)]) {
                self.pos = self.data.len();
                return Some(Found::Torn {
                    offset: self.data.len() - rest.len(),
                    len: rest.len(),
                });
            }
            return Some(self.skip_damage("bad record header", false));
        }
        if rest[..4] != MAGIC {
            return Some(self.skip_damage("bad record magic", false));
        }
        let len = u32::from_le_bytes(rest[4..8].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(rest[8..12].try_into().unwrap());
        if len > MAX_PAYLOAD {
            return Some(self.skip_damage("impossible record length", false));
        }
        if HEADER_LEN + len > rest.len() {
            return Some(self.skip_damage("record runs past the end of the segment", true));
        }
        let payload = &rest[HEADER_LEN..HEADER_LEN + len];
        if crc32fast::hash(payload) != crc {
            return Some(self.skip_damage("checksum mismatch", false));
        }
        let offset = self.pos;
        self.pos += HEADER_LEN + len;
        Some(Found::Record { offset, payload })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            append_record(&mut out, p);
        }
        out
    }

    fn records(data: &[u8]) -> (Vec<Vec<u8>>, Vec<String>) {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for found in Scanner::new(data) {
            match found {
                Found::Record { payload, .. } => good.push(payload.to_vec()),
                other => bad.push(format!("{other:?}")),
            }
        }
        (good, bad)
    }

    #[test]
    fn reads_clean_segments() {
        let data = segment(&[b"one", b"", b"three"]);
        let (good, bad) = records(&data);
        assert_eq!(good, vec![b"one".to_vec(), vec![], b"three".to_vec()]);
        assert!(bad.is_empty());
    }

    #[test]
    fn torn_tail_is_reported_not_fatal() {
        let data = segment(&[b"one", b"two"]);
        for cut in 1..framed_len(3) {
            let (good, bad) = records(&data[..data.len() - cut]);
            assert_eq!(good, vec![b"one".to_vec()], "cut {cut}");
            assert_eq!(bad.len(), 1, "cut {cut}: {bad:?}");
            assert!(bad[0].starts_with("Torn"), "cut {cut}: {bad:?}");
        }
    }

    #[test]
    fn zero_padding_after_the_records_is_a_torn_tail() {
        let mut data = segment(&[b"one", b"two"]);
        let records_end = data.len();
        data.resize(512, 0);
        let (good, bad) = records(&data);
        assert_eq!(good, vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(
            bad,
            vec![format!(
                "{:?}",
                Found::Torn {
                    offset: records_end,
                    len: 512 - records_end
                }
            )]
        );
    }

    #[test]
    fn corruption_in_the_middle_skips_one_record() {
        let mut data = segment(&[b"first", b"second", b"third"]);
        let second = framed_len(5);
        // A flipped payload bit, a flipped length and a flipped magic byte.
        for at in [second + HEADER_LEN + 2, second + 5, second + 1] {
            let mut damaged = data.clone();
            damaged[at] ^= 0x40;
            let (good, bad) = records(&damaged);
            assert_eq!(good, vec![b"first".to_vec(), b"third".to_vec()], "at {at}");
            assert_eq!(bad.len(), 1, "at {at}: {bad:?}");
        }
        // Garbage between records.
        data.splice(second..second, b"garbage".iter().copied());
        let (good, bad) = records(&data);
        assert_eq!(good.len(), 3);
        assert_eq!(bad.len(), 1);
    }
}
