//! HTTP ingress, where every request enters.
//!
//! Each shard accepts on its own SO_REUSEPORT socket (`listener`), serves each connection
//! with hyper over a glommio stream (`connection`, `io`), TLS-terminated by rustls when
//! configured (`tls`), and answers requests in
//! `handler`, which reads bodies within limits (`body`), builds every reply (`response`)
//! and counts what it answered (`metrics`).

mod auth;
mod body;
mod connection;
mod cors;
mod handler;
mod io;
mod listener;
mod metrics;
mod response;
mod tls;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures_lite::future;
use glommio::net::TcpListener;

pub use auth::{ApiKeys, AuthSettings, KeysError};
pub use body::{decompress, BodyError, BodyTimeout, ContentEncoding};
pub use connection::{serve as serve_connection, ConnectionLimits, Lingering, Timeouts};
pub use cors::{CorsError, CorsPolicy, CorsSettings};
pub use handler::{HttpLimits, IngressContext, Routes, Shared};
pub use io::Transport;
pub use listener::{adopt, bind_reuseport};
pub use metrics::{EventRejection, IngressMetrics, RequestRejection, Route};
pub use tls::{ServerTls, TlsError, TlsSettings, Validity};

#[derive(Debug, Clone, Copy)]
pub struct ConnectionPolicy {
    pub routes: Routes,
    /// Whether connections speak TLS first (with the certificate in `Shared::tls`).
    pub tls: bool,
    pub timeouts: Timeouts,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub lingering: Lingering,
    /// How long shutdown waits for open connections to finish their requests.
    pub shutdown_grace: Duration,
}

/// Accepts and serves connections until shutdown is requested, then stops accepting and
/// waits (up to the grace period) for open connections to finish.
pub async fn serve(ctx: Rc<IngressContext>, listener: TcpListener, policy: ConnectionPolicy) {
    let open = Rc::new(Cell::new(0usize));
    let closed = Rc::new(event_listener::Event::new());
    let shard_metrics = || ctx.metrics();
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            ctx.shared.edge.shutdown.wait().await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(err)) => {
                // Typically EMFILE/ENFILE: back off briefly instead of spinning.
                tracing::warn!(shard = ctx.shard, error = %err, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let admitted = crate::admission::admit_connection(open.get(), policy.max_connections);
        open.set(open.get() + 1);
        // Moved, not set: shard 0 may run an admin listener beside this one, each with its
        // own count for its own limit, and the gauge is the shard's.
        shard_metrics().connections_open.fetch_add(1, Relaxed);
        shard_metrics().connections_accepted.fetch_add(1, Relaxed);
        let (ctx, open, closed) = (ctx.clone(), open.clone(), closed.clone());
        glommio::spawn_local(async move {
            let limits = connection::ConnectionLimits {
                routes: policy.routes,
                timeouts: policy.timeouts,
                max_header_bytes: policy.max_header_bytes,
                lingering: policy.lingering,
            };
            let transport = match ctx.shared.tls.as_ref().filter(|_| policy.tls) {
                None => Some(Transport::Plain(stream)),
                Some(tls) => match tls.handshake(stream, policy.timeouts.header_read).await {
                    tls::Handshake::Done(tls) => Some(Transport::Tls(tls)),
                    tls::Handshake::PlainHttp(stream) => {
                        ctx.metrics().request(Route::Other, 400);
                        connection::refuse_plain_http(stream, policy.lingering).await;
                        None
                    }
                    tls::Handshake::Closed => None,
                },
            };
            if let Some(transport) = transport {
                connection::serve(ctx.clone(), transport, limits, admitted).await;
            }
            open.set(open.get() - 1);
            ctx.metrics().connections_open.fetch_sub(1, Relaxed);
            closed.notify(usize::MAX);
        })
        .detach();
    }
    drop(listener);

    let deadline = glommio::timer::sleep(policy.shutdown_grace);
    let all_closed = async {
        while open.get() > 0 {
            let listener = closed.listen();
            if open.get() == 0 {
                break;
            }
            listener.await;
        }
    };
    future::or(all_closed, async {
        deadline.await;
        tracing::warn!(
            shard = ctx.shard,
            open = open.get(),
            "shutdown grace period over; closing remaining connections"
        );
    })
    .await;
}
