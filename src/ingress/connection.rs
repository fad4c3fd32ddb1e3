//! Serving one TCP connection: HTTP/1.1 keep-alive and pipelining through hyper, the
//! header-read and idle timeouts, and graceful shutdown.
//!
//! The timeouts are enforced by a watchdog beside hyper rather than by hyper's own timer,
//! because hyper's header timer also runs while a keep-alive connection sits idle, which
//! would merge the two limits into one. The watchdog sees the activity the I/O adapter
//! records and drops the connection when the head of a request takes longer than
//! `header_read` or no byte moves for `idle`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use glommio::net::TcpStream;
use hyper::server::conn::http1;
use hyper::service::service_fn;

use super::handler::{self, IngressContext};
use super::io::{Activity, HyperStream};
use crate::admission::UnavailableCause;

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header_read: Duration,
    pub idle: Duration,
}

/// Why a connection ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    HeaderRead,
    Idle,
}

/// Serves `stream` until the client closes it, a timeout expires, or shutdown completes it.
/// With `over_limit`, the connection gets one 503 (connection limit) and is closed.
pub async fn serve(
    ctx: Rc<IngressContext>,
    stream: TcpStream,
    timeouts: Timeouts,
    max_header_bytes: usize,
    over_limit: bool,
) {
    let activity = Activity::new();
    let io = HyperStream::new(stream, activity.clone());
    let service = {
        let ctx = ctx.clone();
        let activity = activity.clone();
        service_fn(move |req| {
            let ctx = ctx.clone();
            let activity = activity.clone();
            async move {
                activity.request_started();
                let reply = if over_limit {
                    let reply = handler::unavailable(&ctx, UnavailableCause::ConnectionLimit);
                    ctx.metrics
                        .shard(ctx.shard)
                        .request(crate::observe::metrics::Route::Other, 503);
                    reply
                } else {
                    handler::handle(&ctx, req).await
                };
                activity.request_finished();
                Ok::<_, Infallible>(reply)
            }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(!over_limit)
        .pipeline_flush(true)
        .max_buf_size(max_header_bytes.max(8192))
        .header_read_timeout(None);
    let mut conn = pin!(builder.serve_connection(io, service));
    let mut watchdog = pin!(watchdog(activity, timeouts));
    let mut shutdown = pin!(ctx.shutdown.wait());
    let mut shutting_down = false;

    let outcome = std::future::poll_fn(|cx| {
        if !shutting_down && shutdown.as_mut().poll(cx).is_ready() {
            // Finish the request in flight, if any, then close; idle connections close now.
            conn.as_mut().graceful_shutdown();
            shutting_down = true;
        }
        if let Poll::Ready(result) = conn.as_mut().poll(cx) {
            return Poll::Ready(result.map_err(|e| e.to_string()));
        }
        if let Poll::Ready(expired) = watchdog.as_mut().poll(cx) {
            return Poll::Ready(Err(format!("closed: {expired:?} timeout")));
        }
        Poll::Pending
    })
    .await;
    if let Err(reason) = outcome {
        tracing::debug!(shard = ctx.shard, %reason, "connection ended");
    }
}

async fn watchdog(activity: Rc<Activity>, timeouts: Timeouts) -> Expired {
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
        glommio::timer::sleep(idle_deadline.min(head_deadline) - now).await;
    }
}
