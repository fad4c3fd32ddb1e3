//! Reading a request body within limits, and undoing its Content-Encoding within limits.
//!
//! Two size limits apply: the body as sent (checked against Content-Length before reading,
//! and again while reading, since chunked bodies announce no length) and the body after
//! decompression. The second is what stops a decompression bomb: the decoder is never
//! asked for more than one byte past the limit.
//!
//! Two more keep hostile clients from holding a shard's memory and connection slots:
//! - the shard's body budget (`crate::admission::BodyBudget`, which decides the 503
//!   `body_memory`) bounds the memory of all bodies being received at once; a body that
//!   does not fit is refused before a byte of it is read, so a client can never make the
//!   shard wait for memory it does not have;
//! - the [`BodyTimeout`] ends a body that does not keep arriving at a minimum rate (408).
//!
//! Decompression and parsing run without an await, one request at a time per shard, so
//! their buffers are bounded by the per-request limits alone.

use std::io::Read;
use std::pin::pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::timer::Timer;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::admission::{BodyCharge, UnavailableCause};

/// How long a body may take: `initial`, plus one second for every `min_bytes_per_second`
/// bytes received, so a slow but steady upload completes while a trickle does not.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout {
    pub initial: Duration,
    pub min_bytes_per_second: u64,
}

impl BodyTimeout {
    /// The deadline of a body that began at `started` and has delivered `received` bytes.
    pub fn deadline(&self, started: Instant, received: u64) -> Instant {
        let earned = Duration::from_secs_f64(received as f64 / self.min_bytes_per_second as f64);
        started + self.initial + earned
    }
}

/// Charges a body's buffers to its shard's budget (`crate::admission::BodyBudget`).
trait ChargeBuffer {
    /// Charges a buffer's `capacity`: what the body really holds, whatever its length.
    fn cover(&mut self, capacity: usize) -> Result<(), BodyError>;
    /// Makes room for `extra` more bytes in `buf` (growing by doubling, never past
    /// `limit`), charging what that costs before allocating it.
    fn grow(&mut self, buf: &mut Vec<u8>, extra: usize, limit: usize) -> Result<(), BodyError>;
}

impl ChargeBuffer for BodyCharge {
    fn cover(&mut self, capacity: usize) -> Result<(), BodyError> {
        Ok(self.raise_to(capacity)?)
    }

    fn grow(&mut self, buf: &mut Vec<u8>, extra: usize, limit: usize) -> Result<(), BodyError> {
        let needed = buf.len() + extra;
        if needed > buf.capacity() {
            let target = needed.max((buf.capacity() * 2).min(limit));
            // Charge before allocating, so that a refused body never allocates.
            self.raise_to(target)?;
            buf.reserve_exact(target - buf.len());
        }
        self.cover(buf.capacity())
    }
}

/// How the body is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentEncoding {
    Identity,
    Gzip,
    Zstd,
}

impl ContentEncoding {
    /// Parses a Content-Encoding header value; `None` for encodings tidegate does not accept.
    pub fn parse(value: Option<&str>) -> Option<Self> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("identity") => Some(ContentEncoding::Identity),
            Some("gzip") | Some("x-gzip") => Some(ContentEncoding::Gzip),
            Some("zstd") => Some(ContentEncoding::Zstd),
            Some(_) => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("decompressed body exceeds the limit of {limit} bytes")]
    DecompressedTooLarge { limit: usize },
    #[error("body is not valid {encoding}: {detail}")]
    BadEncoding {
        encoding: &'static str,
        detail: String,
    },
    #[error("reading the request body failed: {0}")]
    Read(#[from] hyper::Error),
    /// Admission refused the body's memory (`body_memory`).
    #[error("{}", .0.message())]
    Unavailable(UnavailableCause),
    #[error("the request body did not arrive in time")]
    TimedOut,
}

impl From<UnavailableCause> for BodyError {
    fn from(cause: UnavailableCause) -> Self {
        BodyError::Unavailable(cause)
    }
}

/// Reads the whole body, charging its memory to `charge`. Fails as soon as the body passes
/// `limit` bytes, does not fit the budget, or misses its deadline. `declared` is the
/// Content-Length, when there is one (already checked against `limit`).
///
/// A body that comes in one frame, as one that arrives with its head or in one read does,
/// is returned as that frame: a slice of the connection's read buffer, parsed where it
/// lies. Copying it out cost a memcpy of the whole body per request, a third of all the
/// copies of a 100-event body. Only a body in several frames is gathered into `into`
/// (`Ok(None)`). The charge covers the body either way: the frame holds the read buffer
/// until the caller drops it.
pub async fn read_limited(
    mut body: Incoming,
    limit: usize,
    declared: Option<usize>,
    timeout: BodyTimeout,
    charge: &mut BodyCharge,
    into: &mut Vec<u8>,
) -> Result<Option<Bytes>, BodyError> {
    match declared {
        // Charged before a byte is read, so that a body that does not fit is refused first.
        Some(len) => charge.raise_to(len)?,
        None => charge.cover(into.capacity())?,
    }
    let mut first: Option<Bytes> = None;
    each_frame(&mut body, timeout, |data| {
        let held = first.as_ref().map_or(into.len(), Bytes::len);
        if held + data.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        if into.is_empty() && first.is_none() {
            // A chunked body announced no length: its first frame is charged as it comes.
            charge.raise_to(data.len())?;
            first = Some(data);
            return Ok(());
        }
        let earlier = first.take();
        let earlier = earlier.as_deref().unwrap_or_default();
        // Gathering starts once, at the second frame: room for the whole declared body then.
        let room = earlier.len() + data.len();
        let room = match declared {
            Some(len) if into.is_empty() => room.max(len),
            _ => room,
        };
        charge.grow(into, room, limit)?;
        into.extend_from_slice(earlier);
        into.extend_from_slice(&data);
        Ok(())
    })
    .await?;
    Ok(first)
}

/// Reads the body to its end and drops it, within the same limit and deadline as
/// [`read_limited`]: for a request already answered, so that its connection can carry the
/// next one. Nothing is kept, so nothing is charged. `seen` is what an earlier
/// [`drop_arrived`] already dropped of it.
pub async fn discard(
    mut body: Incoming,
    limit: usize,
    timeout: BodyTimeout,
    mut seen: usize,
) -> Result<(), BodyError> {
    each_frame(&mut body, timeout, |data| {
        drop_within(&mut seen, &data, limit)
    })
    .await
}

/// What [`drop_arrived`] did with a body.
pub enum Dropped {
    /// All of it: the connection can carry the next request.
    Whole,
    /// It broke its limit or its framing: the connection cannot go on.
    Failed,
    /// Part of it is still on its way: `seen` bytes were dropped, the rest is for
    /// [`discard`].
    Partly { body: Incoming, seen: usize },
}

/// Drops what of the body arrives within `wait`, in the caller's task.
///
/// A refused request is answered before its body is read, and what was left of the body
/// used to be dropped by a task of its own. Each piece of the body then passed from the
/// connection's task to that task and back, and under overload every such hand-off waited
/// a round of the shard's queue. With 256 clients sending 100-event bodies, one refusal in
/// a hundred took 11–37 ms against a median of 2.7. Here, what has arrived with the head
/// is dropped at once. Only a body that is still on its way goes to a task of its own, and
/// its answer waits `wait` at most.
pub async fn drop_arrived(mut body: Incoming, limit: usize, wait: Duration) -> Dropped {
    let quick = BodyTimeout {
        initial: wait,
        min_bytes_per_second: u64::MAX,
    };
    let mut seen = 0;
    match each_frame(&mut body, quick, |data| {
        drop_within(&mut seen, &data, limit)
    })
    .await
    {
        Ok(()) => Dropped::Whole,
        Err(BodyError::TimedOut) => Dropped::Partly { body, seen },
        Err(_) => Dropped::Failed,
    }
}

fn drop_within(seen: &mut usize, data: &[u8], limit: usize) -> Result<(), BodyError> {
    *seen += data.len();
    if *seen > limit {
        return Err(BodyError::TooLarge { limit });
    }
    Ok(())
}

/// Hands each data frame of the body to `take` until the body ends, under its deadline.
async fn each_frame(
    body: &mut Incoming,
    timeout: BodyTimeout,
    mut take: impl FnMut(Bytes) -> Result<(), BodyError>,
) -> Result<(), BodyError> {
    // The body's clock starts when it is first waited for. A body that is all there when
    // its head is parsed, the usual case, then reads no clock (a clock read was one in
    // eleven per request); the microseconds spent on frames that were already there are
    // not charged to the client.
    let mut started: Option<Instant> = None;
    let mut received = 0u64;
    // One timer per body, armed only when a frame is not already there: a timer costs an
    // allocation, a registration and a reactor insert and removal (about 1,000
    // instructions each time under callgrind).
    let mut timer: Option<Timer> = None;
    loop {
        let mut frame = pin!(body.frame());
        let next = match futures_lite::future::poll_once(frame.as_mut()).await {
            Some(ready) => Some(ready),
            None => {
                let now = Instant::now();
                let deadline = timeout.deadline(*started.get_or_insert(now), received);
                let wait = deadline.saturating_duration_since(now);
                let timer = match &mut timer {
                    Some(timer) => {
                        timer.reset(wait);
                        timer
                    }
                    None => timer.insert(Timer::new(wait)),
                };
                futures_lite::future::or(async { Some(frame.await) }, async {
                    timer.await;
                    None
                })
                .await
            }
        };
        let Some(frame) = next.ok_or(BodyError::TimedOut)? else {
            return Ok(());
        };
        if let Ok(data) = frame?.into_data() {
            received += data.len() as u64;
            take(data)?;
        }
    }
}

/// Decodes `input` into `out`, producing at most `limit` bytes.
pub fn decompress(
    encoding: ContentEncoding,
    input: &[u8],
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<(), BodyError> {
    let bound = limit as u64 + 1;
    let (name, result) = match encoding {
        ContentEncoding::Identity => {
            unreachable!("identity bodies are parsed where they were read")
        }
        ContentEncoding::Gzip => (
            "gzip",
            flate2::read::MultiGzDecoder::new(input)
                .take(bound)
                .read_to_end(out),
        ),
        ContentEncoding::Zstd => (
            "zstd",
            zstd::stream::read::Decoder::with_buffer(input)
                .and_then(|decoder| decoder.take(bound).read_to_end(out)),
        ),
    };
    result.map_err(|e| BodyError::BadEncoding {
        encoding: name,
        detail: e.to_string(),
    })?;
    if out.len() > limit {
        return Err(BodyError::DecompressedTooLarge { limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::BodyBudget;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn decodes_within_the_limit_and_stops_bombs() {
        let data = vec![b'a'; 10_000];
        let mut out = Vec::new();
        decompress(ContentEncoding::Gzip, &gzip(&data), 10_000, &mut out).unwrap();
        assert_eq!(out, data);
        let zst = zstd::encode_all(&data[..], 3).unwrap();
        out.clear();
        decompress(ContentEncoding::Zstd, &zst, 10_000, &mut out).unwrap();
        assert_eq!(out, data);
        out.clear();
        assert!(matches!(
            decompress(ContentEncoding::Gzip, &gzip(&data), 9_999, &mut out),
            Err(BodyError::DecompressedTooLarge { limit: 9_999 })
        ));
        assert!(out.len() <= 10_000, "never decodes far past the limit");
        out.clear();
        assert!(matches!(
            decompress(ContentEncoding::Zstd, b"not zstd", 100, &mut out),
            Err(BodyError::BadEncoding { .. })
        ));
    }

    #[test]
    fn body_deadline_grows_with_progress_only() {
        let timeout = BodyTimeout {
            initial: Duration::from_secs(10),
            min_bytes_per_second: 1000,
        };
        let t0 = Instant::now();
        assert_eq!(timeout.deadline(t0, 0), t0 + Duration::from_secs(10));
        assert_eq!(timeout.deadline(t0, 5_000), t0 + Duration::from_secs(15));
        // A trickle of one byte a second earns a millisecond a second: it expires at ~10 s.
        assert!(timeout.deadline(t0, 10) < t0 + Duration::from_millis(10_011));
    }

    #[test]
    fn budget_is_charged_by_capacity_and_given_back() {
        let budget = BodyBudget::new(1000);
        let mut a = BodyCharge::new(budget.clone());
        let mut buf_a = Vec::new();
        a.grow(&mut buf_a, 600, 1000).unwrap();
        assert!(budget.in_use() >= 600);
        let mut b = BodyCharge::new(budget.clone());
        let mut buf_b = Vec::new();
        assert!(matches!(
            b.grow(&mut buf_b, 600, 1000),
            Err(BodyError::Unavailable(UnavailableCause::BodyMemory))
        ));
        assert_eq!(buf_b.capacity(), 0, "a refused body allocates nothing");
        drop(a);
        b.grow(&mut buf_b, 600, 1000).unwrap();
        drop(b);
        assert_eq!(budget.in_use(), 0);
        // A buffer that already has room (from the pool) is charged for that room.
        let mut c = BodyCharge::new(budget.clone());
        let pooled: Vec<u8> = Vec::with_capacity(900);
        c.cover(pooled.capacity()).unwrap();
        assert!(budget.in_use() >= 900);
    }

    #[test]
    fn parses_encoding_headers() {
        assert_eq!(
            ContentEncoding::parse(None),
            Some(ContentEncoding::Identity)
        );
        assert_eq!(
            ContentEncoding::parse(Some(" GZIP ")),
            Some(ContentEncoding::Gzip)
        );
        assert_eq!(
            ContentEncoding::parse(Some("zstd")),
            Some(ContentEncoding::Zstd)
        );
        assert_eq!(ContentEncoding::parse(Some("br")), None);
    }
}
