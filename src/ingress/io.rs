//! hyper's I/O traits over a glommio TCP stream, plain or TLS, recording activity for the
//! timeouts.
//!
//! hyper 1.x reads and writes through its own `rt::Read`/`rt::Write`; glommio streams speak
//! `futures-io`. The adapter forwards calls and notes, per connection, when bytes last
//! moved and when the head of a new request began arriving, which is what the connection's
//! watchdog enforces the idle and header-read timeouts against.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use futures_rustls::server::TlsStream;
use glommio::net::TcpStream;
use hyper::rt::ReadBufCursor;

/// What the watchdog knows about a connection.
pub struct Activity {
    /// When bytes last moved in either direction.
    pub(super) last_io: Cell<Instant>,
    /// When the first bytes of a request head arrived, until the request is dispatched.
    pub(super) head_started: Cell<Option<Instant>>,
    /// Whether a request is being handled (set by the service).
    pub(super) in_request: Cell<bool>,
    /// Whether hyper holds response bytes the socket has not taken yet (its last write was
    /// refused or partial). Nothing may be written beside hyper while this is set.
    pub(super) write_blocked: Cell<bool>,
    /// Whether the connection must close with lingering: an answer ended it while the
    /// client may still be sending.
    pub(super) linger_needed: Cell<bool>,
    /// The last bytes of the request line of the head that began with the latest read
    /// (where the HTTP version stands), to tell an unsupported version (505) from a
    /// malformed line (400) when hyper reports only "invalid version".
    request_line_end: Cell<[u8; 16]>,
    request_line_end_len: Cell<u8>,
}

impl Activity {
    pub fn new() -> Rc<Self> {
        Rc::new(Activity {
            last_io: Cell::new(Instant::now()),
            head_started: Cell::new(None),
            in_request: Cell::new(false),
            write_blocked: Cell::new(false),
            linger_needed: Cell::new(false),
            request_line_end: Cell::new([0; 16]),
            request_line_end_len: Cell::new(0),
        })
    }

    fn note_request_line_end(&self, read: &[u8]) {
        let line_end = memchr::memchr(b'\n', read).unwrap_or(read.len());
        let line = read[..line_end]
            .strip_suffix(b"\r")
            .unwrap_or(&read[..line_end]);
        let tail = &line[line.len().saturating_sub(16)..];
        let mut kept = [0; 16];
        kept[..tail.len()].copy_from_slice(tail);
        self.request_line_end.set(kept);
        self.request_line_end_len.set(tail.len() as u8);
    }

    /// Whether the request line last seen ends in a well-formed HTTP version other than
    /// 1.0 and 1.1 (`HTTP/2.0`, `HTTP/1.2`): a version the server does not support, as
    /// opposed to a line that is not HTTP at all.
    pub fn saw_unsupported_version(&self) -> bool {
        let kept = self.request_line_end.get();
        let line = &kept[..usize::from(self.request_line_end_len.get())];
        let version = line.rsplit(|&b| b == b' ').next().unwrap_or(&[]);
        matches!(version, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit())
            && version != b"HTTP/1.1"
            && version != b"HTTP/1.0"
    }

    pub fn request_started(&self) {
        self.in_request.set(true);
        self.head_started.set(None);
    }

    pub fn request_finished(&self) {
        self.in_request.set(false);
    }
}

thread_local! {
    /// hyper hands out uninitialised memory to read into, and glommio reads only into
    /// initialised slices. Zeroing hyper's buffer before every read cost more than half of
    /// all instructions under load (callgrind); reading into this per-thread buffer, zeroed
    /// once, and copying just the bytes received costs a few hundred bytes of memcpy.
    /// Sharing it is sound because glommio's unbuffered `poll_read` is a synchronous
    /// non-blocking recv into the slice, and rustls' a synchronous copy of plaintext it
    /// already holds; when either returns Pending it holds no pointer to the buffer.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 64 * 1024]);
}

/// A connection's byte stream: the socket itself, or a TLS session over it.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Transport {
    /// Ends the TLS session, if any, with a close_notify (sent within `timeout`: a client
    /// that does not read must not hold the connection), and gives back the socket, for
    /// the connection to close or linger on. Lingering discards ciphertext unread.
    pub async fn into_socket(self, timeout: std::time::Duration) -> TcpStream {
        match self {
            Transport::Plain(stream) => stream,
            Transport::Tls(mut tls) => {
                tls.get_mut().1.send_close_notify();
                let flushed = async {
                    let _ = tls.flush().await;
                };
                futures_lite::future::or(flushed, glommio::timer::sleep(timeout)).await;
                tls.into_inner().0
            }
        }
    }
}

impl AsyncRead for Transport {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_close(cx),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_close(cx),
        }
    }
}

/// Where a [`HyperStream`] leaves its transport when hyper drops it, so that the
/// connection can still answer a timeout and close with lingering after hyper is done.
pub type StreamReturn = Rc<Cell<Option<Transport>>>;

pub struct HyperStream {
    stream: Option<Transport>,
    activity: Rc<Activity>,
    on_drop: StreamReturn,
}

impl HyperStream {
    pub fn new(stream: Transport, activity: Rc<Activity>, on_drop: StreamReturn) -> Self {
        HyperStream {
            stream: Some(stream),
            activity,
            on_drop,
        }
    }

    fn stream(&mut self) -> Pin<&mut Transport> {
        Pin::new(
            self.stream
                .as_mut()
                .expect("the stream leaves only on drop"),
        )
    }
}

impl Drop for HyperStream {
    fn drop(&mut self) {
        self.on_drop.set(self.stream.take());
    }
}

/// Where, in bytes hyper is writing, its own answer to an unparseable request begins.
///
/// On a parse error hyper writes a bare error status line and `content-length: 0` as the
/// last thing on the connection; every error answer tidegate's service gives carries a
/// Content-Type (its only bodiless answers are 204s). So the bytes end with an empty line,
/// and the last response head in them is a 4xx or 5xx without Content-Type. Our bodies never hold a raw CR LF CR LF (JSON escapes control
/// characters), so only a head can end that way; the check costs nothing for the usual
/// response, which ends with its body.
fn automatic_answer_at(buf: &[u8]) -> Option<usize> {
    if !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let at = memchr::memmem::rfind(buf, b"HTTP/1.1 ")?;
    let head = &buf[at..];
    let is_error = matches!(head.get(9), Some(b'4' | b'5'));
    let has_content_type = head
        .split(|&b| b == b'\n')
        .any(|line| line.len() >= 13 && line[..13].eq_ignore_ascii_case(b"content-type:"));
    (is_error && !has_content_type).then_some(at)
}

/// Reads whatever is available into the per-thread scratch buffer and throws it away;
/// `Ready(Ok(0))` at end of stream.
pub fn poll_discard(stream: Pin<&mut TcpStream>, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    SCRATCH.with_borrow_mut(|scratch| stream.poll_read(cx, scratch))
}

impl hyper::rt::Read for HyperStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        SCRATCH.with_borrow_mut(|scratch| {
            let want = buf.remaining().min(scratch.len());
            match this.stream().poll_read(cx, &mut scratch[..want]) {
                Poll::Ready(Ok(n)) => {
                    if n > 0 {
                        let now = Instant::now();
                        this.activity.last_io.set(now);
                        if !this.activity.in_request.get()
                            && this.activity.head_started.get().is_none()
                        {
                            this.activity.head_started.set(Some(now));
                            this.activity.note_request_line_end(&scratch[..n]);
                        }
                    }
                    buf.put_slice(&scratch[..n]);
                    Poll::Ready(Ok(()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
    }
}

impl hyper::rt::Write for HyperStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let buf = match automatic_answer_at(buf) {
            // Everything before hyper's own answer goes out first; the answer never does.
            Some(0) => {
                this.activity.write_blocked.set(false);
                return Poll::Ready(Ok(buf.len()));
            }
            Some(at) => &buf[..at],
            None => buf,
        };
        let result = this.stream().poll_write(cx, buf);
        match result {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.activity.last_io.set(Instant::now());
                }
                this.activity.write_blocked.set(n < buf.len());
            }
            Poll::Pending => this.activity.write_blocked.set(true),
            Poll::Ready(Err(_)) => {}
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream().poll_flush(cx)
    }

    /// The connection, not hyper, closes the socket: after hyper is done it may still
    /// write the answer hyper could not give, then closes with lingering.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::automatic_answer_at;

    #[test]
    fn finds_only_hypers_bodiless_answer() {
        let ours = b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: 14\r\n\r\n{\"accepted\":1}";
        let head_only =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n";
        let auto = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(automatic_answer_at(ours), None);
        assert_eq!(
            automatic_answer_at(head_only),
            None,
            "HEAD answers keep their type"
        );
        assert_eq!(automatic_answer_at(auto), Some(0));
        let preflight =
            b"HTTP/1.1 204 No Content\r\naccess-control-allow-origin: *\r\ndate: x\r\n\r\n";
        assert_eq!(automatic_answer_at(preflight), None, "a 204 is ours");
        let both = [&ours[..], &auto[..]].concat();
        assert_eq!(automatic_answer_at(&both), Some(ours.len()));
    }
}
