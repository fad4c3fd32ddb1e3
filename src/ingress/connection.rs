//! Serving one TCP connection: HTTP/1.1 keep-alive and pipelining through hyper, the
//! header-read and idle timeouts, back-pressure, and the lingering close.
//!
//! The timeouts are enforced by a watchdog beside hyper rather than by hyper's own timer,
//! because hyper's header timer also runs while a keep-alive connection sits idle, which
//! would merge the two limits into one. The watchdog sees the activity the I/O adapter
//! records and ends the connection when the head of a request takes longer than
//! `header_read` (answering 408) or no byte moves for `idle`.
//!
//! Back-pressure: hyper stops reading a connection while the responses it has not yet
//! written to the socket fill its write buffer (bounded by `max_buf_size`), provided
//! `pipeline_flush` is off. With it on, hyper holds responses back for as long as its read
//! buffer has bytes, and a client that pipelines without reading made it buffer without
//! end (about 3.7 MB of responses per MB of requests).
//!
//! Lingering close: when the server ends a connection while the client may still be
//! sending (an early 413 or 503, a 408, `Connection: close` with more bytes behind it),
//! closing at once turns those unread bytes into a TCP reset, and a reset can destroy the
//! answer before the client reads it. So the server sends its FIN, then reads and discards
//! what still arrives, within bounds of time and bytes, before it closes (as nginx's
//! `lingering_close` does).

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::net::Shutdown;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use hyper::server::conn::http1;
use hyper::service::service_fn;

use super::handler::{self, IngressContext};
use super::io::{poll_discard, Activity, HyperStream, StreamReturn, Transport};
use super::metrics::Route;
use super::response;
use crate::admission::UnavailableCause;

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header_read: Duration,
    pub idle: Duration,
}

/// Bounds on reading and discarding after the server has decided to close.
#[derive(Debug, Clone, Copy)]
pub struct Lingering {
    /// Longest the whole lingering phase may take.
    pub time: Duration,
    /// Longest to wait for each further read.
    pub timeout: Duration,
    /// Most bytes discarded before closing regardless.
    pub max_bytes: u64,
}

/// Why a connection ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    HeaderRead,
    Idle,
}

/// What one connection is held to.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub routes: handler::Routes,
    pub timeouts: Timeouts,
    pub max_header_bytes: usize,
    pub lingering: Lingering,
}

/// Serves `stream` until the client closes it, a timeout expires, or shutdown completes it.
/// A connection admission refused (`admitted` is the cause) gets one 503 and is closed.
pub async fn serve(
    ctx: Rc<IngressContext>,
    stream: Transport,
    limits: ConnectionLimits,
    admitted: Result<(), UnavailableCause>,
) {
    let activity = Activity::new();
    let returned: StreamReturn = Rc::new(Cell::new(None));
    let outcome = serve_http(&ctx, stream, &activity, &returned, limits, admitted).await;
    let Some(mut stream) = returned.take() else {
        return;
    };
    // A request under way when the connection ended gets its answer, unless hyper still
    // holds earlier responses the socket has not taken: writing beside them would corrupt
    // them, and the client that is not reading them is not reading this either.
    let last_answer = match &outcome {
        Ok(()) => None,
        Err(Ended::Expired(Expired::HeaderRead)) => {
            handler::count_timeout(&ctx);
            Some(response::raw_timeout())
        }
        Err(Ended::Expired(Expired::Idle)) => None,
        Err(Ended::Http(err)) => {
            tracing::debug!(shard = ctx.shard, error = %err, "connection ended");
            err.is_parse().then(|| {
                let status = handler::count_unparseable(&ctx, err, &activity);
                response::raw_unparseable(status, &err.to_string())
            })
        }
    };
    // Lingering costs a slot for up to its timeout, so it is only for connections where
    // the client may still be sending: not for an idle one closed by its timeout or by
    // shutdown, nor for one the client closed.
    let linger_needed = activity.linger_needed.get()
        || last_answer.is_some()
        || matches!(outcome, Err(Ended::Http(_)));
    if let Some(bytes) = last_answer.filter(|_| !activity.write_blocked.get()) {
        let write = async {
            stream.write_all(&bytes).await?;
            stream.flush().await
        };
        let _ = futures_lite::future::or(async { write.await.ok() }, async {
            glommio::timer::sleep(limits.lingering.timeout).await;
            None
        })
        .await;
    }
    let stream = stream.into_socket(limits.lingering.timeout).await;
    if linger_needed {
        linger(stream, limits.lingering).await;
    } else {
        let _ = stream.shutdown(Shutdown::Both).await;
    }
}

#[derive(Debug)]
enum Ended {
    Expired(Expired),
    Http(hyper::Error),
}

/// Runs hyper on the connection; when this returns, hyper has been dropped and the socket
/// is in `returned`.
async fn serve_http(
    ctx: &Rc<IngressContext>,
    stream: Transport,
    activity: &Rc<Activity>,
    returned: &StreamReturn,
    limits: ConnectionLimits,
    admitted: Result<(), UnavailableCause>,
) -> Result<(), Ended> {
    let io = HyperStream::new(stream, activity.clone(), returned.clone());
    let service = {
        let ctx = ctx.clone();
        let activity = activity.clone();
        service_fn(move |req| {
            let ctx = ctx.clone();
            let activity = activity.clone();
            async move {
                activity.request_started();
                // The client may send more behind a request that ends its connection.
                // (`Connection: keep-alive` does not count: it must not make an idle
                // connection linger when its timeout closes it.)
                let client_closes = req.version() == hyper::Version::HTTP_10
                    || req
                        .headers()
                        .get(hyper::header::CONNECTION)
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                let reply = match admitted {
                    Err(cause) => {
                        let reply = handler::unavailable(&ctx, cause);
                        ctx.metrics().request(Route::Other, 503);
                        reply
                    }
                    Ok(()) => handler::handle(&ctx, req, limits.routes).await,
                };
                // An answer that closes the connection may leave the body, or requests
                // behind it, unread (every such answer of ours says `Connection: close`).
                let server_closes = reply.status().as_u16() >= 400
                    && reply.headers().contains_key(hyper::header::CONNECTION);
                if client_closes || server_closes {
                    activity.linger_needed.set(true);
                }
                activity.request_finished();
                Ok::<_, Infallible>(reply)
            }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(admitted.is_ok())
        // Off: see the module comment (back-pressure).
        .pipeline_flush(false)
        // The head limit exactly as configured; the buffer that holds it (and bounds the
        // responses waiting to be written) only as large as that needs.
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .header_read_timeout(None);
    let mut conn = pin!(builder.serve_connection(io, service));
    let watchdog_due = Rc::new(Cell::new(Instant::now()));
    let mut watchdog = pin!(watchdog(
        activity.clone(),
        limits.timeouts,
        watchdog_due.clone()
    ));
    let requested = &ctx.shared.edge.shutdown;
    let mut shutdown = pin!(requested.wait());
    let mut shutting_down = false;
    // The waker the shutdown listener holds. Once registered it stays registered until
    // shutdown is requested, and re-polling it only re-checks the registration (about
    // 190 instructions per request under callgrind), so it is polled again only when the
    // flag is set or the task's waker changed.
    let mut listening_with: Option<std::task::Waker> = None;

    std::future::poll_fn(|cx| {
        let must_poll = requested.is_requested()
            || !listening_with
                .as_ref()
                .is_some_and(|waker| waker.will_wake(cx.waker()));
        if !shutting_down && must_poll {
            listening_with = Some(cx.waker().clone());
            if shutdown.as_mut().poll(cx).is_ready() {
                // Finish the request in flight, if any, then close; idle connections
                // close now.
                conn.as_mut().graceful_shutdown();
                shutting_down = true;
            }
        }
        if let Poll::Ready(result) = conn.as_mut().poll(cx) {
            return Poll::Ready(result.map_err(Ended::Http));
        }
        // The watchdog's timer stays registered, with this task's waker, until it fires;
        // polling it before then only re-registers it (a reactor insert, about 1,100
        // instructions per request under callgrind), so it is polled only once due.
        if Instant::now() >= watchdog_due.get() {
            if let Poll::Ready(expired) = watchdog.as_mut().poll(cx) {
                return Poll::Ready(Err(Ended::Expired(expired)));
            }
        }
        Poll::Pending
    })
    .await
}

/// Answers a plaintext HTTP request sent to the TLS port with 400, then closes with
/// lingering (the client is still sending its request).
pub async fn refuse_plain_http(mut stream: TcpStream, lingering: Lingering) {
    let answer = response::raw_plain_http_on_tls_port();
    let write = async {
        let _ = stream.write_all(&answer).await;
        let _ = stream.flush().await;
    };
    futures_lite::future::or(write, glommio::timer::sleep(lingering.timeout)).await;
    linger(stream, lingering).await;
}

/// Sends FIN, then reads and discards until the client closes or a bound is reached.
async fn linger(mut stream: TcpStream, bounds: Lingering) {
    let _ = stream.shutdown(Shutdown::Write).await;
    let started = Instant::now();
    let mut discarded = 0u64;
    while discarded < bounds.max_bytes {
        let left = bounds.time.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        let read = std::future::poll_fn(|cx| poll_discard(Pin::new(&mut stream), cx));
        let waited = futures_lite::future::or(async { Some(read.await) }, async {
            glommio::timer::sleep(bounds.timeout.min(left)).await;
            None
        })
        .await;
        match waited {
            Some(Ok(n)) if n > 0 => discarded += n as u64,
            // End of stream, an error, or silence for `timeout`: done.
            _ => break,
        }
    }
}

/// Ends the connection's wait when a timeout expires. `due` is when it next needs to be
/// polled: the end of the sleep it is in.
async fn watchdog(activity: Rc<Activity>, timeouts: Timeouts, due: Rc<Cell<Instant>>) -> Expired {
    loop {
        let now = Instant::now();
        let idle_deadline = activity.last_io.get() + timeouts.idle;
        if now >= idle_deadline {
            return Expired::Idle;
        }
        // A head that starts while we sleep has a deadline after `now + header_read`, so
        // waking by then at the latest never misses one.
        let head_deadline = match activity.head_started.get() {
            Some(started) => started + timeouts.header_read,
            None => now + timeouts.header_read,
        };
        if activity.head_started.get().is_some() && now >= head_deadline {
            return Expired::HeaderRead;
        }
        let wake = idle_deadline.min(head_deadline);
        due.set(wake);
        glommio::timer::sleep(wake - now).await;
    }
}
