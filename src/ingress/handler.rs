//! Routing and the `POST /v1/events` pipeline: read, decode, parse and validate, admit.
//!
//! Everything after the body has arrived runs without an await, on this shard's reusable
//! buffers: the parse state, the encode buffer and the ring are borrowed, used and released
//! before the handler yields, so concurrent requests on one core never see each other's
//! half-done work, and a request's events reach the ring together or not at all.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use hyper::body::Incoming;
use hyper::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};

use super::body::{self, BodyError, ContentEncoding};
use super::response::{self, Reply};
use crate::admission::{self, UnavailableCause};
use crate::event::{BatchError, BatchParser, BodyFormat, EncodedBatch};
use crate::observe::metrics::{EventRejection, Metrics, RequestRejection, Route};
use crate::ring::ShardRing;
use crate::shutdown::Shutdown;

/// Limits and answers the HTTP stage applies.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_body_bytes: usize,
    pub max_decompressed_bytes: usize,
    pub retry_after_secs: u32,
}

/// Body buffers kept for reuse; larger ones are freed rather than pooled.
const POOLED_BUFFERS: usize = 8;
const POOLED_BUFFER_MAX: usize = 2 << 20;
/// Encode-buffer growth step: one allocation serves many small requests.
const ENCODE_CHUNK: usize = 256 * 1024;

/// What one shard's HTTP handlers share.
pub struct IngressContext {
    pub shard: usize,
    pub limits: HttpLimits,
    pub ring: Rc<ShardRing>,
    pub metrics: Arc<Metrics>,
    pub shutdown: Arc<Shutdown>,
    parser: RefCell<BatchParser>,
    encode_buf: RefCell<BytesMut>,
    batch: RefCell<EncodedBatch>,
    buffers: RefCell<Vec<Vec<u8>>>,
}

impl IngressContext {
    pub fn new(
        shard: usize,
        limits: HttpLimits,
        parser: BatchParser,
        ring: Rc<ShardRing>,
        metrics: Arc<Metrics>,
        shutdown: Arc<Shutdown>,
    ) -> Self {
        IngressContext {
            shard,
            limits,
            ring,
            metrics,
            shutdown,
            parser: RefCell::new(parser),
            encode_buf: RefCell::new(BytesMut::with_capacity(ENCODE_CHUNK)),
            batch: RefCell::new(EncodedBatch::default()),
            buffers: RefCell::new(Vec::new()),
        }
    }

    fn take_buffer(&self) -> Vec<u8> {
        self.buffers.borrow_mut().pop().unwrap_or_default()
    }

    fn return_buffer(&self, mut buf: Vec<u8>) {
        let mut pool = self.buffers.borrow_mut();
        if pool.len() < POOLED_BUFFERS && buf.capacity() <= POOLED_BUFFER_MAX {
            buf.clear();
            pool.push(buf);
        }
    }
}

/// Answers one request and counts it.
pub async fn handle(ctx: &IngressContext, req: Request<Incoming>) -> Reply {
    let (route, reply) = match req.uri().path() {
        "/v1/events" => (
            Route::Events,
            if req.method() == Method::POST {
                ingest(ctx, req).await
            } else {
                response::method_not_allowed("POST")
            },
        ),
        "/health" => (
            Route::Health,
            if is_get(req.method()) {
                response::json(StatusCode::OK, "{\"status\":\"ok\"}".into())
            } else {
                response::method_not_allowed("GET, HEAD")
            },
        ),
        "/ready" => (
            Route::Ready,
            if is_get(req.method()) {
                ready(ctx)
            } else {
                response::method_not_allowed("GET, HEAD")
            },
        ),
        "/metrics" => (
            Route::Metrics,
            if is_get(req.method()) {
                response::text(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    ctx.metrics.render(),
                )
            } else {
                response::method_not_allowed("GET, HEAD")
            },
        ),
        _ => (
            Route::Other,
            response::error(StatusCode::NOT_FOUND, "not_found", "no such route", ""),
        ),
    };
    ctx.metrics
        .shard(ctx.shard)
        .request(route, reply.status().as_u16());
    reply
}

fn is_get(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// `/ready`: 200 only while every shard's ring is below its high-water mark and every
/// sink's last write succeeded.
fn ready(ctx: &IngressContext) -> Reply {
    let mut reasons = Vec::new();
    if ctx.shutdown.is_requested() {
        reasons.push("shutting down".to_owned());
    }
    for (id, shard) in ctx.metrics.shards() {
        if shard.above_high_water() {
            reasons.push(format!("shard {id}: ring above its high-water mark"));
        }
        if shard.sink_failing.load(Relaxed) {
            reasons.push(format!("shard {id}: sink writes failing"));
        }
    }
    if reasons.is_empty() {
        return response::json(StatusCode::OK, "{\"ready\":true}".into());
    }
    let mut body = String::from("{\"ready\":false,\"reasons\":[");
    for (i, reason) in reasons.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        crate::event::encoded::write_json_string(&mut body, reason);
    }
    body.push_str("]}");
    response::json(StatusCode::SERVICE_UNAVAILABLE, body)
}

fn reject(ctx: &IngressContext, why: RequestRejection, reply: Reply) -> Reply {
    ctx.metrics.shard(ctx.shard).request_rejected(why);
    reply
}

async fn ingest(ctx: &IngressContext, req: Request<Incoming>) -> Reply {
    let headers = req.headers();
    let Some(format) = body_format(headers.get(CONTENT_TYPE)) else {
        return reject(
            ctx,
            RequestRejection::UnsupportedMediaType,
            response::error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Content-Type must be application/json or application/x-ndjson",
                "",
            ),
        );
    };
    let encoding_header = headers
        .get(CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let Some(encoding) = ContentEncoding::parse(encoding_header) else {
        return reject(
            ctx,
            RequestRejection::UnsupportedMediaType,
            response::error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Content-Encoding must be gzip, zstd or identity",
                "",
            ),
        );
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > ctx.limits.max_body_bytes as u64) {
        return body_error(
            ctx,
            BodyError::TooLarge {
                limit: ctx.limits.max_body_bytes,
            },
        );
    }

    let mut raw = ctx.take_buffer();
    if let Err(err) = body::read_limited(req.into_body(), ctx.limits.max_body_bytes, &mut raw).await
    {
        ctx.return_buffer(raw);
        return body_error(ctx, err);
    }
    let reply = if encoding == ContentEncoding::Identity {
        parse_and_admit(ctx, &mut raw, format)
    } else {
        let mut decoded = ctx.take_buffer();
        let reply = match body::decompress(
            encoding,
            &raw,
            ctx.limits.max_decompressed_bytes,
            &mut decoded,
        ) {
            Ok(()) => parse_and_admit(ctx, &mut decoded, format),
            Err(err) => body_error(ctx, err),
        };
        ctx.return_buffer(decoded);
        reply
    };
    ctx.return_buffer(raw);
    reply
}

fn body_format(content_type: Option<&hyper::header::HeaderValue>) -> Option<BodyFormat> {
    let Some(value) = content_type else {
        return Some(BodyFormat::Json);
    };
    let media = value.to_str().ok()?.split(';').next()?.trim();
    if media.eq_ignore_ascii_case("application/json") {
        Some(BodyFormat::Json)
    } else if media.eq_ignore_ascii_case("application/x-ndjson")
        || media.eq_ignore_ascii_case("application/ndjson")
    {
        Some(BodyFormat::Ndjson)
    } else {
        None
    }
}

fn body_error(ctx: &IngressContext, err: BodyError) -> Reply {
    let message = err.to_string();
    match err {
        BodyError::TooLarge { limit } => reject(
            ctx,
            RequestRejection::BodyTooLarge,
            response::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                &message,
                &format!(",\"limit\":{limit}"),
            ),
        ),
        BodyError::DecompressedTooLarge { limit } => reject(
            ctx,
            RequestRejection::DecompressedTooLarge,
            response::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "decompressed_too_large",
                &message,
                &format!(",\"limit\":{limit}"),
            ),
        ),
        BodyError::BadEncoding { .. } | BodyError::Read(_) => reject(
            ctx,
            RequestRejection::BadEncoding,
            response::error(StatusCode::BAD_REQUEST, "bad_encoding", &message, ""),
        ),
    }
}

/// Parses, validates and admits a complete body. No await: see the module comment.
fn parse_and_admit(ctx: &IngressContext, body: &mut [u8], format: BodyFormat) -> Reply {
    let metrics = ctx.metrics.shard(ctx.shard);
    let received_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut encode_buf = ctx.encode_buf.borrow_mut();
    if encode_buf.capacity() - encode_buf.len() < body.len() + 1024 {
        encode_buf.reserve(ENCODE_CHUNK.max(body.len() + 1024));
    }
    let mut batch = ctx.batch.borrow_mut();
    let parsed =
        ctx.parser
            .borrow_mut()
            .parse(body, format, received_at_ms, &mut *encode_buf, &mut batch);
    if let Err(err) = parsed {
        let why = match &err {
            BatchError::Malformed { .. } => RequestRejection::MalformedJson,
            BatchError::Empty => RequestRejection::Empty,
            BatchError::NotAnEventOrArray => RequestRejection::NotAnEvent,
            BatchError::TooManyEvents { .. } => RequestRejection::TooManyEvents,
            BatchError::Invalid { invalid, valid, .. } => {
                metrics.events_rejected(EventRejection::Invalid, *invalid);
                metrics.events_rejected(EventRejection::WithInvalidRequest, *valid);
                RequestRejection::InvalidEvents
            }
        };
        return reject(ctx, why, response::batch_error(&err));
    }

    let chunk = encode_buf.split().freeze();
    let events = batch.len();
    let mut ring = ctx.ring.ring.borrow_mut();
    let was_empty = ring.is_empty();
    match admission::admit(&mut ring, &chunk, &batch.ends, ctx.ring.is_closing()) {
        Ok(()) => {
            metrics.ring_depth(ring.len(), ring.bytes());
            drop(ring);
            metrics.events_accepted.fetch_add(events as u64, Relaxed);
            ctx.ring.notify_pushed(was_empty);
            response::accepted(events)
        }
        Err(cause) => {
            drop(ring);
            metrics.events_rejected(EventRejection::Unavailable, events);
            unavailable(ctx, cause)
        }
    }
}

/// Counts and builds a 503.
pub fn unavailable(ctx: &IngressContext, cause: UnavailableCause) -> Reply {
    ctx.metrics.shard(ctx.shard).unavailable(cause);
    response::unavailable(cause, ctx.limits.retry_after_secs)
}
