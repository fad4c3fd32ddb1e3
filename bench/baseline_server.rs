//! The same-run baseline for load tests: a do-nothing hyper server on one tokio thread.
//!
//! It reads each request body completely and answers 202 `{"accepted":1}`, so that a load
//! run compares tidegate against the cost of HTTP/1.1 alone on the same core, same
//! machine, same minute. Usage: `baseline-server 127.0.0.1:9090`.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

async fn answer(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let status = if body.is_ok() {
        StatusCode::ACCEPTED
    } else {
        StatusCode::BAD_REQUEST
    };
    let mut response = Response::new(Full::new(Bytes::from_static(b"{\"accepted\":1}")));
    *response.status_mut() = status;
    Ok(response)
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9090".into());
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(&addr).await?;
            println!("baseline: listening on http://{}", listener.local_addr()?);
            loop {
                let (stream, _) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                // A current-thread runtime: every connection runs on this one core.
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service_fn(answer))
                        .await;
                });
            }
        })
}
