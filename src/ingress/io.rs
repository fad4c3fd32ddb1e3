//! hyper's I/O traits over a glommio TCP stream, recording activity for the timeouts.
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

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use hyper::rt::ReadBufCursor;

/// What the watchdog knows about a connection.
pub struct Activity {
    /// When bytes last moved in either direction.
    pub last_io: Cell<Instant>,
    /// When the first bytes of a request head arrived, until the request is dispatched.
    pub head_started: Cell<Option<Instant>>,
    /// Whether a request is being handled (set by the service).
    pub in_request: Cell<bool>,
}

impl Activity {
    pub fn new() -> Rc<Self> {
        Rc::new(Activity {
            last_io: Cell::new(Instant::now()),
            head_started: Cell::new(None),
            in_request: Cell::new(false),
        })
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
    /// non-blocking recv into the slice; when it returns Pending it has only registered
    /// for readiness and holds no pointer to the buffer.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 64 * 1024]);
}

pub struct HyperStream {
    stream: TcpStream,
    activity: Rc<Activity>,
}

impl HyperStream {
    pub fn new(stream: TcpStream, activity: Rc<Activity>) -> Self {
        HyperStream { stream, activity }
    }
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
            match Pin::new(&mut this.stream).poll_read(cx, &mut scratch[..want]) {
                Poll::Ready(Ok(n)) => {
                    if n > 0 {
                        let now = Instant::now();
                        this.activity.last_io.set(now);
                        if !this.activity.in_request.get()
                            && this.activity.head_started.get().is_none()
                        {
                            this.activity.head_started.set(Some(now));
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
        let result = Pin::new(&mut this.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            if n > 0 {
                this.activity.last_io.set(Instant::now());
            }
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_close(cx)
    }
}
