//! CQL native protocol v4 framing and the primitive notations of its spec, server side.
//!
//! A frame is a 9-byte header (version, flags, stream, opcode, body length) and a body
//! built from a few notations: `[int]`, `[short]`, `[string]`, `[long string]`, `[bytes]`,
//! `[short bytes]`, `[string list]`, `[string map]`, `[string multimap]`. This module reads
//! request bodies and writes response bodies in those terms; everything above it works in
//! Rust values.

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const HEADER_LEN: usize = 9;
pub const VERSION_RESPONSE: u8 = 0x84;
/// Largest body accepted; the protocol's own limit is 256 MB.
pub const MAX_BODY: usize = 256 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Opcode {
    Error = 0x00,
    Startup = 0x01,
    Ready = 0x02,
    Options = 0x05,
    Supported = 0x06,
    Query = 0x07,
    Result = 0x08,
    Prepare = 0x09,
    Execute = 0x0A,
    Register = 0x0B,
    /// Server-pushed (stream -1) to connections that registered for events.
    Event = 0x0C,
    Batch = 0x0D,
}

impl Opcode {
    pub fn from_byte(b: u8) -> Option<Opcode> {
        Some(match b {
            0x00 => Opcode::Error,
            0x01 => Opcode::Startup,
            0x02 => Opcode::Ready,
            0x05 => Opcode::Options,
            0x06 => Opcode::Supported,
            0x07 => Opcode::Query,
            0x08 => Opcode::Result,
            0x09 => Opcode::Prepare,
            0x0A => Opcode::Execute,
            0x0B => Opcode::Register,
            0x0C => Opcode::Event,
            0x0D => Opcode::Batch,
            _ => return None,
        })
    }
}

/// A request frame as read from a client.
#[derive(Debug)]
pub struct Request {
    pub version: u8,
    pub stream: i16,
    pub opcode: u8,
    pub body: Bytes,
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("body ended early while reading {0}")]
    Short(&'static str),
    #[error("{0} is not valid UTF-8")]
    Utf8(&'static str),
    #[error("frame body of {0} bytes exceeds the limit")]
    TooLarge(usize),
}

/// Splits one complete frame off the front of `buf`, if a whole one is there.
pub fn take_frame(buf: &mut BytesMut) -> Result<Option<Request>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let length = i32::from_be_bytes(buf[5..9].try_into().unwrap());
    let length = usize::try_from(length).map_err(|_| FrameError::TooLarge(usize::MAX))?;
    if length > MAX_BODY {
        return Err(FrameError::TooLarge(length));
    }
    if buf.len() < HEADER_LEN + length {
        return Ok(None);
    }
    let mut frame = buf.split_to(HEADER_LEN + length);
    let version = frame[0];
    let stream = i16::from_be_bytes([frame[2], frame[3]]);
    let opcode = frame[4];
    frame.advance(HEADER_LEN);
    Ok(Some(Request {
        version,
        stream,
        opcode,
        body: frame.freeze(),
    }))
}

/// Appends a response frame with `body` to `out`.
pub fn write_frame(out: &mut BytesMut, stream: i16, opcode: Opcode, body: &[u8]) {
    out.put_u8(VERSION_RESPONSE);
    out.put_u8(0);
    out.put_i16(stream);
    out.put_u8(opcode as u8);
    out.put_i32(body.len() as i32);
    out.put_slice(body);
}

/// Reads the notations of a request body.
pub struct Reader {
    body: Bytes,
}

impl Reader {
    pub fn new(body: Bytes) -> Self {
        Reader { body }
    }

    fn need(&self, n: usize, what: &'static str) -> Result<(), FrameError> {
        if self.body.len() < n {
            Err(FrameError::Short(what))
        } else {
            Ok(())
        }
    }

    pub fn byte(&mut self) -> Result<u8, FrameError> {
        self.need(1, "[byte]")?;
        Ok(self.body.get_u8())
    }

    pub fn short(&mut self) -> Result<u16, FrameError> {
        self.need(2, "[short]")?;
        Ok(self.body.get_u16())
    }

    pub fn int(&mut self) -> Result<i32, FrameError> {
        self.need(4, "[int]")?;
        Ok(self.body.get_i32())
    }

    fn utf8(&mut self, len: usize, what: &'static str) -> Result<String, FrameError> {
        self.need(len, what)?;
        let raw = self.body.split_to(len);
        String::from_utf8(raw.to_vec()).map_err(|_| FrameError::Utf8(what))
    }

    pub fn string(&mut self) -> Result<String, FrameError> {
        let len = self.short()? as usize;
        self.utf8(len, "[string]")
    }

    pub fn long_string(&mut self) -> Result<String, FrameError> {
        let len = self.int()?;
        let len = usize::try_from(len).map_err(|_| FrameError::Short("[long string]"))?;
        self.utf8(len, "[long string]")
    }

    /// `[value]`: `[bytes]`, `None` for a negative length, also saying whether an absent
    /// value was bound as null (-1, which ScyllaDB stores as a tombstone) rather than
    /// unset (-2, nothing written).
    pub fn value(&mut self) -> Result<(Option<Bytes>, bool), FrameError> {
        let len = self.int()?;
        if len < 0 {
            return Ok((None, len == -1));
        }
        self.need(len as usize, "[value]")?;
        Ok((Some(self.body.split_to(len as usize)), false))
    }

    pub fn short_bytes(&mut self) -> Result<Bytes, FrameError> {
        let len = self.short()? as usize;
        self.need(len, "[short bytes]")?;
        Ok(self.body.split_to(len))
    }
}

/// Writes the notations of a response body.
#[derive(Default)]
pub struct Writer {
    pub buf: BytesMut,
}

impl Writer {
    pub fn short(&mut self, v: u16) -> &mut Self {
        self.buf.put_u16(v);
        self
    }

    pub fn int(&mut self, v: i32) -> &mut Self {
        self.buf.put_i32(v);
        self
    }

    pub fn string(&mut self, s: &str) -> &mut Self {
        self.buf.put_u16(s.len() as u16);
        self.buf.put_slice(s.as_bytes());
        self
    }

    pub fn bytes(&mut self, v: Option<&[u8]>) -> &mut Self {
        match v {
            Some(v) => {
                self.buf.put_i32(v.len() as i32);
                self.buf.put_slice(v);
            }
            None => self.buf.put_i32(-1),
        }
        self
    }

    /// `[inet]`: address length, address bytes, port.
    pub fn inet(&mut self, addr: std::net::SocketAddr) -> &mut Self {
        match addr.ip() {
            std::net::IpAddr::V4(ip) => {
                self.buf.put_u8(4);
                self.buf.put_slice(&ip.octets());
            }
            std::net::IpAddr::V6(ip) => {
                self.buf.put_u8(16);
                self.buf.put_slice(&ip.octets());
            }
        }
        self.buf.put_i32(i32::from(addr.port()));
        self
    }

    pub fn short_bytes(&mut self, v: &[u8]) -> &mut Self {
        self.buf.put_u16(v.len() as u16);
        self.buf.put_slice(v);
        self
    }

    pub fn string_multimap(&mut self, entries: &[(&str, Vec<String>)]) -> &mut Self {
        self.buf.put_u16(entries.len() as u16);
        for (key, values) in entries {
            self.string(key);
            self.buf.put_u16(values.len() as u16);
            for v in values {
                self.string(v);
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_only_when_complete() {
        let mut out = BytesMut::new();
        write_frame(&mut out, 7, Opcode::Ready, b"abc");
        write_frame(&mut out, -1, Opcode::Supported, b"");
        let mut buf = BytesMut::from(&out[..5]);
        assert!(take_frame(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&out[5..HEADER_LEN + 2]);
        assert!(take_frame(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&out[HEADER_LEN + 2..]);
        let first = take_frame(&mut buf).unwrap().unwrap();
        assert_eq!((first.version, first.stream, first.opcode), (0x84, 7, 0x02));
        assert_eq!(&first.body[..], b"abc");
        let second = take_frame(&mut buf).unwrap().unwrap();
        assert_eq!((second.stream, second.opcode), (-1, 0x06));
        assert!(buf.is_empty());
    }

    #[test]
    fn notations_round_trip() {
        let mut w = Writer::default();
        w.short(3)
            .int(-5)
            .string("héllo")
            .bytes(Some(b"xy"))
            .bytes(None)
            .int(-2)
            .short_bytes(b"id");
        let mut r = Reader::new(w.buf.freeze());
        assert_eq!(r.short().unwrap(), 3);
        assert_eq!(r.int().unwrap(), -5);
        assert_eq!(r.string().unwrap(), "héllo");
        let (set, _) = r.value().unwrap();
        assert_eq!(set.as_deref(), Some(&b"xy"[..]));
        assert_eq!(r.value().unwrap(), (None, true), "null");
        assert_eq!(r.value().unwrap(), (None, false), "unset");
        assert_eq!(&r.short_bytes().unwrap()[..], b"id");
        assert_eq!(r.short(), Err(FrameError::Short("[short]")));
    }

    #[test]
    fn refuses_oversized_frames() {
        let mut buf = BytesMut::from(&[4u8, 0, 0, 1, 7, 0x7f, 0xff, 0xff, 0xff][..]);
        assert!(matches!(take_frame(&mut buf), Err(FrameError::TooLarge(_))));
    }
}
