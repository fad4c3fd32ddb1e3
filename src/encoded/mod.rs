//! The one binary form a validated event takes after parsing.
//!
//! Validation encodes each event exactly once, into this compact layout, and every later
//! stage — the per-core ring, the writer, the spool on disk, future CQL and Kafka sinks —
//! carries these bytes untouched. Fixed-width fields come first so a reader can find every
//! field without scanning; strings follow as UTF-8 that was already checked on the way in.
//!
//! ```text
//! 0      u8    format version (1, or 2 when the event has a source)
//! 1..9   i64   event_time, epoch milliseconds, little endian
//! 9..17  i64   received_at, epoch milliseconds
//! 17..33 [u8]  event_id (UUID bytes)
//! 33..35 u16   user_id length
//! 35     u8    event_type length
//! 36..40 u32   payload length (0 = no payload)
//! 40..   user_id, event_type, payload (JSON object text)
//! version 2 only, at the end:
//!        [u8]  source: the name of the API key that posted the event
//!        u8    source length (1..=255)
//! ```
//!
//! The source trails the record so that every offset above stays where version 1 put it
//! (routing reads `user_id` at a fixed place), and an event posted without a key is
//! written as version 1, a byte shorter. Records of both versions are read: logs, spools
//! and overflow topics written before sources existed stay readable.

mod batch;

use std::fmt::Write as _;

use bytes::BufMut;
use thiserror::Error;
use uuid::Uuid;

pub use batch::EventBatch;

/// An event without a source.
pub const FORMAT_VERSION: u8 = 1;
/// An event with a source (the trailer above).
pub const FORMAT_VERSION_WITH_SOURCE: u8 = 2;
pub const HEADER_LEN: usize = 40;
/// Longest source kept: its length is one byte.
pub const MAX_SOURCE_BYTES: usize = u8::MAX as usize;

/// Why stored bytes could not be read back as an event.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than the {HEADER_LEN}-byte event header")]
    Short(usize),
    #[error("unknown event format version {0}")]
    Version(u8),
    #[error("field lengths add up to {expected} bytes but the record holds {actual}")]
    Length { expected: usize, actual: usize },
    #[error("{0} is not valid UTF-8")]
    Utf8(&'static str),
    #[error("a version 2 record must carry a source")]
    EmptySource,
}

/// A growable byte buffer events can be encoded into: `Vec<u8>` in tests and tools,
/// the per-core `BytesMut` on the hot path.
pub trait EncodeBuf: BufMut + std::ops::DerefMut<Target = [u8]> {
    /// Drops everything after the first `len` bytes (undoing a rejected event).
    fn truncate_to(&mut self, len: usize);
}

impl EncodeBuf for Vec<u8> {
    fn truncate_to(&mut self, len: usize) {
        self.truncate(len)
    }
}

impl EncodeBuf for bytes::BytesMut {
    fn truncate_to(&mut self, len: usize) {
        self.truncate(len)
    }
}

/// The fields of one event, as they go into [`encode_into`].
pub struct EventFields<'a> {
    pub user_id: &'a str,
    pub event_type: &'a str,
    pub event_time_ms: i64,
    pub event_id: Uuid,
    pub received_at_ms: i64,
    /// Who posted it (an API key's name); empty when unknown. At most [`MAX_SOURCE_BYTES`].
    pub source: &'a str,
}

/// Appends the fixed header and the strings of an event to `out`, then lets `write_payload`
/// append the payload text directly behind them (no intermediate buffer), and patches its
/// length in. Returns the number of bytes the event occupies.
#[inline]
pub fn encode_into<B: EncodeBuf>(
    out: &mut B,
    fields: &EventFields<'_>,
    write_payload: impl FnOnce(&mut B),
) -> usize {
    let start = out.len();
    debug_assert!(fields.user_id.len() <= u16::MAX as usize);
    debug_assert!(fields.event_type.len() <= u8::MAX as usize);
    debug_assert!(fields.source.len() <= MAX_SOURCE_BYTES);
    // The header is laid out on the stack and appended in one piece: a put per field,
    // each checking the buffer's room, was about 40 instructions more per event.
    let mut header = [0u8; HEADER_LEN];
    header[0] = if fields.source.is_empty() {
        FORMAT_VERSION
    } else {
        FORMAT_VERSION_WITH_SOURCE
    };
    header[1..9].copy_from_slice(&fields.event_time_ms.to_le_bytes());
    header[9..17].copy_from_slice(&fields.received_at_ms.to_le_bytes());
    header[17..33].copy_from_slice(fields.event_id.as_bytes());
    header[33..35].copy_from_slice(&(fields.user_id.len() as u16).to_le_bytes());
    header[35] = fields.event_type.len() as u8;
    // 36..40, the payload's length, is patched in once the payload is written.
    let payload_len_at = start + 36;
    out.put_slice(&header);
    out.put_slice(fields.user_id.as_bytes());
    out.put_slice(fields.event_type.as_bytes());
    let payload_start = out.len();
    write_payload(out);
    let payload_len = (out.len() - payload_start) as u32;
    out[payload_len_at..payload_len_at + 4].copy_from_slice(&payload_len.to_le_bytes());
    if !fields.source.is_empty() {
        out.put_slice(fields.source.as_bytes());
        out.put_u8(fields.source.len() as u8);
    }
    out.len() - start
}

/// The raw `user_id` bytes of an encoded event without decoding the rest: the partition
/// key, which routing needs for every event. `None` if the bytes are not an event.
pub fn user_id_bytes(event: &[u8]) -> Option<&[u8]> {
    let len = u16::from_le_bytes([*event.get(33)?, *event.get(34)?]) as usize;
    event.get(HEADER_LEN..HEADER_LEN + len)
}

/// A borrowed view of an encoded event; decoding checks lengths and UTF-8, copies nothing.
#[derive(Debug, Clone, Copy)]
pub struct EventView<'a> {
    pub event_time_ms: i64,
    pub received_at_ms: i64,
    pub event_id: Uuid,
    pub user_id: &'a str,
    pub event_type: &'a str,
    /// The payload object's JSON text, if the event had one.
    pub payload: Option<&'a str>,
    /// The name of the API key that posted it; empty when none was required.
    pub source: &'a str,
}

impl<'a> EventView<'a> {
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::Short(bytes.len()));
        }
        // The source trailer: its length in the last byte, itself before that.
        let trailer = match bytes[0] {
            FORMAT_VERSION => 0,
            FORMAT_VERSION_WITH_SOURCE => match bytes[bytes.len() - 1] {
                0 => return Err(DecodeError::EmptySource),
                len => usize::from(len) + 1,
            },
            other => return Err(DecodeError::Version(other)),
        };
        let i64_at = |at: usize| i64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        let user_len = u16::from_le_bytes([bytes[33], bytes[34]]) as usize;
        let type_len = bytes[35] as usize;
        let payload_len = u32::from_le_bytes(bytes[36..40].try_into().unwrap()) as usize;
        let expected = HEADER_LEN + user_len + type_len + payload_len + trailer;
        if expected != bytes.len() {
            return Err(DecodeError::Length {
                expected,
                actual: bytes.len(),
            });
        }
        let user_end = HEADER_LEN + user_len;
        let type_end = user_end + type_len;
        let payload_end = type_end + payload_len;
        let text = |range: std::ops::Range<usize>, name| {
            std::str::from_utf8(&bytes[range]).map_err(|_| DecodeError::Utf8(name))
        };
        Ok(EventView {
            event_time_ms: i64_at(1),
            received_at_ms: i64_at(9),
            event_id: Uuid::from_bytes(bytes[17..33].try_into().unwrap()),
            user_id: text(HEADER_LEN..user_end, "user_id")?,
            event_type: text(user_end..type_end, "event_type")?,
            payload: if payload_len == 0 {
                None
            } else {
                Some(text(type_end..payload_end, "payload")?)
            },
            source: if trailer == 0 {
                ""
            } else {
                text(payload_end..bytes.len() - 1, "source")?
            },
        })
    }

    /// Writes the event as one JSON object, times as RFC 3339 UTC with milliseconds.
    pub fn write_json(&self, out: &mut String) {
        out.push_str("{\"event_id\":\"");
        let _ = write!(out, "{}", self.event_id.hyphenated());
        out.push_str("\",\"user_id\":");
        write_json_string(out, self.user_id);
        out.push_str(",\"event_type\":");
        write_json_string(out, self.event_type);
        out.push_str(",\"event_time\":\"");
        write_rfc3339_millis(out, self.event_time_ms);
        out.push_str("\",\"received_at\":\"");
        write_rfc3339_millis(out, self.received_at_ms);
        out.push('"');
        if !self.source.is_empty() {
            out.push_str(",\"source\":");
            write_json_string(out, self.source);
        }
        if let Some(payload) = self.payload {
            out.push_str(",\"payload\":");
            out.push_str(payload);
        }
        out.push('}');
    }
}

/// Appends `s` as a quoted JSON string.
pub fn write_json_string(out: &mut String, s: &str) {
    let mut bytes = Vec::new();
    write_string(&mut bytes, s);
    // write_string emits only ASCII escapes around valid UTF-8 input, so this cannot fail.
    out.push_str(std::str::from_utf8(&bytes).expect("escaped JSON is UTF-8"));
}

pub fn write_rfc3339_millis(out: &mut String, epoch_ms: i64) {
    let nanos = i128::from(epoch_ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => {
            let _ = write!(
                out,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.millisecond()
            );
        }
        Err(_) => {
            let _ = write!(out, "{epoch_ms}");
        }
    }
}

/// Writes `s` as a quoted JSON string, escaping quotes, backslashes and control characters.
pub fn write_string<B: BufMut>(out: &mut B, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.put_u8(b'"');
    let bytes = s.as_bytes();
    let mut clean_from = 0;
    while let Some(offset) = first_to_escape(&bytes[clean_from..]) {
        let i = clean_from + offset;
        out.put_slice(&bytes[clean_from..i]);
        match bytes[i] {
            b'"' => out.put_slice(b"\\\""),
            b'\\' => out.put_slice(b"\\\\"),
            b'\n' => out.put_slice(b"\\n"),
            b'\r' => out.put_slice(b"\\r"),
            b'\t' => out.put_slice(b"\\t"),
            c => out.put_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(c >> 4) as usize],
                HEX[(c & 0xf) as usize],
            ]),
        }
        clean_from = i + 1;
    }
    out.put_slice(&bytes[clean_from..]);
    out.put_u8(b'"');
}

/// The index of the first byte that JSON requires escaping: `"`, `\\` or below 0x20.
/// Most strings need none, so eight bytes are tested at a time (SWAR).
fn first_to_escape(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let x = u64::from_le_bytes(chunk.try_into().unwrap());
        // A byte below 0x20 (x - 0x20 borrows into its high bit), or equal to '"' or '\\'.
        let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGHS;
        let found = below_space
            | has_zero(x ^ (ONES * u64::from(b'"')))
            | has_zero(x ^ (ONES * u64::from(b'\\')));
        if found != 0 {
            // The lowest flagged byte is exact (borrows only travel upwards), so the scalar
            // check below starts there.
            let first = (found.trailing_zeros() / 8) as usize;
            return chunk[first..]
                .iter()
                .position(|&b| needs_escape(b))
                .map(|p| base + first + p)
                .or_else(|| first_to_escape(&bytes[base + 8..]).map(|p| base + 8 + p));
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| needs_escape(b))
        .map(|p| base + p)
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(payload: Option<&str>) -> Vec<u8> {
        sample_from(payload, "")
    }

    fn sample_from(payload: Option<&str>, source: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let fields = EventFields {
            user_id: "u-1",
            event_type: "click",
            event_time_ms: 1_700_000_000_123,
            event_id: Uuid::from_u128(42),
            received_at_ms: 1_700_000_000_999,
            source,
        };
        encode_into(&mut out, &fields, |o: &mut Vec<u8>| {
            if let Some(p) = payload {
                o.extend_from_slice(p.as_bytes())
            }
        });
        out
    }

    /// The bytes are where the module's table says, so that logs, spools and overflow
    /// topics already written stay readable: a change to encoding and decoding alike
    /// would still round-trip, and only this test would see it.
    #[test]
    fn the_layout_is_the_documented_one() {
        let mut out = vec![0xEE]; // whatever the buffer held before stays
        let fields = EventFields {
            user_id: "u1",
            event_type: "t",
            event_time_ms: 0x0102_0304_0506_0708,
            event_id: Uuid::from_u128(0x2122_2324_2526_2728_292A_2B2C_2D2E_2F30),
            received_at_ms: 0x1112_1314_1516_1718,
            source: "key",
        };
        let written = encode_into(&mut out, &fields, |o: &mut Vec<u8>| {
            o.extend_from_slice(b"{}")
        });
        let mut expected = vec![0xEE, FORMAT_VERSION_WITH_SOURCE];
        expected.extend([8, 7, 6, 5, 4, 3, 2, 1]);
        expected.extend([0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11]);
        expected.extend(0x21..=0x30);
        expected.extend([2, 0, 1, 2, 0, 0, 0]);
        expected.extend(b"u1t{}key\x03");
        assert_eq!(out, expected);
        assert_eq!(written, expected.len() - 1);
    }

    #[test]
    fn round_trips_every_field() {
        let bytes = sample(Some(r#"{"a":1}"#));
        let view = EventView::decode(&bytes).unwrap();
        assert_eq!(view.user_id, "u-1");
        assert_eq!(view.event_type, "click");
        assert_eq!(view.event_time_ms, 1_700_000_000_123);
        assert_eq!(view.received_at_ms, 1_700_000_000_999);
        assert_eq!(view.event_id, Uuid::from_u128(42));
        assert_eq!(view.payload, Some(r#"{"a":1}"#));
        let mut json = String::new();
        view.write_json(&mut json);
        assert!(
            json.contains(r#""event_time":"2023-11-14T22:13:20.123Z""#),
            "{json}"
        );
        assert!(json.ends_with(r#","payload":{"a":1}}"#), "{json}");
    }

    #[test]
    fn a_source_makes_version_2_and_leaves_every_other_offset_alone() {
        for payload in [Some(r#"{"a":1}"#), None] {
            let without = sample_from(payload, "");
            let with = sample_from(payload, "ios-app");
            assert_eq!(without[0], FORMAT_VERSION);
            assert_eq!(with[0], FORMAT_VERSION_WITH_SOURCE);
            assert_eq!(with.len(), without.len() + "ios-app".len() + 1);
            assert_eq!(
                with[1..without.len()],
                without[1..],
                "the same bytes before it"
            );
            assert_eq!(user_id_bytes(&with), Some(&b"u-1"[..]));
            let view = EventView::decode(&with).unwrap();
            assert_eq!(view.source, "ios-app");
            assert_eq!(view.payload, payload);
            assert_eq!(view.user_id, "u-1");
            assert_eq!(EventView::decode(&without).unwrap().source, "");
            let mut json = String::new();
            view.write_json(&mut json);
            assert!(json.contains(r#","source":"ios-app""#), "{json}");
        }
        let longest = "k".repeat(MAX_SOURCE_BYTES);
        let view_bytes = sample_from(None, &longest);
        assert_eq!(EventView::decode(&view_bytes).unwrap().source, longest);
    }

    #[test]
    fn a_damaged_source_trailer_is_refused_not_misread() {
        let with = sample_from(Some("{}"), "web");
        let mut zero_len = with.clone();
        *zero_len.last_mut().unwrap() = 0;
        assert_eq!(
            EventView::decode(&zero_len).unwrap_err(),
            DecodeError::EmptySource
        );
        let mut too_long = with.clone();
        *too_long.last_mut().unwrap() = 200;
        assert!(matches!(
            EventView::decode(&too_long),
            Err(DecodeError::Length { .. })
        ));
        // A version 1 record relabelled 2 reads its last byte as a length and fails.
        let mut relabelled = sample(Some("{}"));
        relabelled[0] = FORMAT_VERSION_WITH_SOURCE;
        assert!(EventView::decode(&relabelled).is_err());
    }

    #[test]
    fn absent_payload_is_none() {
        let bytes = sample(None);
        assert_eq!(EventView::decode(&bytes).unwrap().payload, None);
    }

    #[test]
    fn rejects_truncated_and_padded_records() {
        let bytes = sample(Some("{}"));
        assert!(matches!(
            EventView::decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Length { .. })
        ));
        assert!(matches!(
            EventView::decode(&bytes[..10]),
            Err(DecodeError::Short(10))
        ));
        let mut wrong_version = bytes.clone();
        wrong_version[0] = 9;
        assert_eq!(
            EventView::decode(&wrong_version).unwrap_err(),
            DecodeError::Version(9)
        );
    }
}
