//! Routing and the `POST /v1/events` pipeline: read, decode, parse and validate, admit.
//!
//! Everything after the body has arrived runs without an await, on this shard's reusable
//! buffers: the parse state, the encode buffer and the ring are borrowed, used and released
//! before the handler yields, so concurrent requests on one core never see each other's
//! half-done work, and a request's events reach the ring together or not at all. The one
//! exception is a request that must be spilled to the Kafka overflow: it waits for the
//! broker's acknowledgements holding only its own events (slices of its own buffer).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, EXPECT, HOST,
};
use hyper::{Method, Request, StatusCode, Version};

use super::auth::{ApiKeys, Key};
use super::body::{self, BodyError, BodyTimeout, ContentEncoding, Dropped};
use super::cors::{self, CorsPolicy, OriginCheck};
use super::metrics::{EventRejection, IngressMetrics, RequestRejection, Route};
use super::response::{self, Reply};
use crate::admission::{
    self, Admission, BodyBudget, BodyCharge, EdgeState, OverflowAvailable, SpillPlan,
    UnavailableCause,
};
use crate::event::{Arrival, BatchError, BatchParser, BodyFormat, EncodedBatch};
use crate::log::ShardLog;
use crate::observe::{self, Registry};
use crate::overflow::{HotKeys, OverflowProducer, ShardOverflow};
use crate::ring::ShardRing;
use crate::writer::BatchSource as _;

/// Limits and answers the HTTP stage applies.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_body_bytes: usize,
    pub max_decompressed_bytes: usize,
    /// Per shard: bodies being received hold at most this much memory.
    pub max_inflight_body_bytes: usize,
    /// Longest request target; longer gets 414.
    pub max_uri_bytes: usize,
    pub body_timeout: BodyTimeout,
    pub retry_after_secs: u32,
    /// A `text/plain` body on `/v1/events` is read as JSON (see [`super::cors`]).
    pub accept_text_plain: bool,
}

/// Body buffers kept for reuse; larger ones are freed rather than pooled.
const POOLED_BUFFERS: usize = 8;
const POOLED_BUFFER_MAX: usize = 2 << 20;
/// Encode-buffer growth step: one allocation serves many small requests.
const ENCODE_CHUNK: usize = 256 * 1024;

/// What the process gives each shard's HTTP stage.
pub struct Shared {
    pub metrics: Arc<IngressMetrics>,
    /// Every stage's metrics, for `/metrics`.
    pub registry: Arc<Registry>,
    /// What readiness and shutdown read.
    pub edge: Arc<EdgeState>,
    /// Which web pages may post (see [`super::cors`]).
    pub cors: Arc<CorsPolicy>,
    /// The API keys, when `auth.keys_file` is set (see [`super::auth`]).
    pub keys: Option<Arc<ApiKeys>>,
    /// The certificate, when the ingest listener speaks TLS (see [`super::tls`]).
    pub tls: Option<Arc<super::ServerTls>>,
}

/// What one shard's HTTP handlers share.
pub struct IngressContext {
    pub(super) shard: usize,
    pub(super) limits: HttpLimits,
    ring: Rc<ShardRing>,
    pub(super) shared: Shared,
    /// The Kafka overflow, when configured, and this shard's hot-key buckets.
    producer: Option<Arc<OverflowProducer>>,
    /// The write-ahead log, when a 202 must mean "on disk".
    log: Option<Rc<ShardLog>>,
    hot_keys: RefCell<Option<HotKeys>>,
    parser: RefCell<BatchParser>,
    encode_buf: RefCell<BytesMut>,
    batch: RefCell<EncodedBatch>,
    buffers: RefCell<Vec<Vec<u8>>>,
    body_budget: Rc<BodyBudget>,
}

impl IngressContext {
    pub fn new(
        shard: usize,
        limits: HttpLimits,
        parser: BatchParser,
        ring: Rc<ShardRing>,
        shared: Shared,
        overflow: Option<ShardOverflow>,
        log: Option<Rc<ShardLog>>,
    ) -> Self {
        let (producer, hot_keys) = match overflow {
            Some(o) => (Some(o.producer), o.hot_keys),
            None => (None, None),
        };
        IngressContext {
            shard,
            limits,
            ring,
            shared,
            producer,
            log,
            hot_keys: RefCell::new(hot_keys),
            parser: RefCell::new(parser),
            encode_buf: RefCell::new(BytesMut::with_capacity(ENCODE_CHUNK)),
            batch: RefCell::new(EncodedBatch::default()),
            buffers: RefCell::new(Vec::new()),
            body_budget: BodyBudget::new(limits.max_inflight_body_bytes),
        }
    }

    pub(super) fn metrics(&self) -> &super::metrics::ShardMetrics {
        self.shared.metrics.shard(self.shard)
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
pub async fn handle(ctx: &IngressContext, req: Request<Incoming>, routes: Routes) -> Reply {
    if let Some(reply) = check_head(ctx, &req) {
        ctx.metrics().request(Route::Other, reply.status().as_u16());
        return reply;
    }
    let path = req.uri().path();
    let served = match path {
        "/v1/events" => routes != Routes::Admin,
        "/metrics" => routes != Routes::Ingest,
        _ => true,
    };
    let (route, reply) = match path {
        _ if !served => (
            Route::Other,
            response::error(StatusCode::NOT_FOUND, "not_found", "no such route", ""),
        ),
        // The plain POST first, without a second future around it: the hot path.
        "/v1/events"
            if req.method() == Method::POST
                && !ctx.shared.cors.is_on()
                && ctx.shared.keys.is_none() =>
        {
            (Route::Events, ingest(ctx, req, None).await)
        }
        "/v1/events" => (Route::Events, events(ctx, req).await),
        "/health" => (
            Route::Health,
            if is_get(req.method()) {
                response::json(StatusCode::OK, "{\"status\":\"ok\"}")
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
                // Prometheus asks for OpenMetrics; anything else gets the classic format.
                let openmetrics = req
                    .headers()
                    .get(hyper::header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("application/openmetrics-text"));
                if openmetrics {
                    response::text(
                        StatusCode::OK,
                        observe::CONTENT_TYPE,
                        observe::render(&ctx.shared.registry),
                    )
                } else {
                    response::text(
                        StatusCode::OK,
                        "text/plain; version=0.0.4; charset=utf-8",
                        observe::render_classic(&ctx.shared.registry),
                    )
                }
            } else {
                response::method_not_allowed("GET, HEAD")
            },
        ),
        _ => (
            Route::Other,
            response::error(StatusCode::NOT_FOUND, "not_found", "no such route", ""),
        ),
    };
    ctx.metrics().request(route, reply.status().as_u16());
    reply
}

/// `/v1/events`: a POST from a client or an allowed page, or a page's preflight.
async fn events(ctx: &IngressContext, req: Request<Incoming>) -> Reply {
    let cors = &ctx.shared.cors;
    if req.method() == Method::POST {
        match cors.check(req.headers()) {
            OriginCheck::NotCrossOrigin => authorised_ingest(ctx, req).await,
            OriginCheck::Allowed(origin) => {
                let mut reply = authorised_ingest(ctx, req).await;
                cors::allow(&mut reply, origin);
                reply
            }
            // Before the body is read, as for every refusal that needs only the head.
            OriginCheck::Refused => reject(
                ctx,
                RequestRejection::OriginNotAllowed,
                response::closing(cors::origin_refused()),
            ),
        }
    } else if req.method() == Method::OPTIONS {
        match cors.preflight(req.headers()) {
            Ok(reply) => reply,
            Err(refusal) => reject(ctx, refusal.counted_as(), refusal.reply()),
        }
    } else {
        response::method_not_allowed("OPTIONS, POST")
    }
}

/// `ingest` for a request whose API key, when keys are on, may write and has room.
async fn authorised_ingest(ctx: &IngressContext, req: Request<Incoming>) -> Reply {
    let Some(keys) = &ctx.shared.keys else {
        return ingest(ctx, req, None).await;
    };
    match keys.authorise(req.headers(), req.uri().query()) {
        Ok(key) => ingest(ctx, req, Some(&key)).await,
        // Before the body is read: the answer is already certain.
        Err(refusal) => reject(
            ctx,
            refusal.counted_as(),
            response::closing(refusal.reply()),
        ),
    }
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routes {
    /// Everything, on the one listener there is.
    All,
    /// The ingest listener beside an admin one: `/v1/events`, `/health`, `/ready`; the
    /// metrics are not for the clients the ingest port faces.
    Ingest,
    /// The admin listener: `/metrics`, `/health`, `/ready`.
    Admin,
}

/// The rules every request head must meet whatever its route; `Some` is the refusal.
/// Refusals close the connection: a head that breaks framing rules leaves no trustworthy
/// place where a next request would begin.
fn check_head(ctx: &IngressContext, req: &Request<Incoming>) -> Option<Reply> {
    let uri_len = req
        .uri()
        .path_and_query()
        .map_or(req.uri().path().len(), |pq| pq.as_str().len());
    if uri_len > ctx.limits.max_uri_bytes {
        return Some(reject(
            ctx,
            RequestRejection::UriTooLong,
            response::closing(response::error(
                StatusCode::URI_TOO_LONG,
                "uri_too_long",
                "the request target is too long",
                &format!(",\"limit\":{}", ctx.limits.max_uri_bytes),
            )),
        ));
    }
    // One pass over the headers (every value of each): a lookup by name hashes the name,
    // a walk only compares known names.
    let (mut hosts, mut content_types, mut content_encodings) = (0, 0, 0);
    for (name, _) in req.headers() {
        if name == HOST {
            hosts += 1;
        } else if name == CONTENT_TYPE {
            content_types += 1;
        } else if name == CONTENT_ENCODING {
            content_encodings += 1;
        }
    }
    // RFC 9112 §3.2: an HTTP/1.1 request carries exactly one Host; none is allowed in 1.0.
    let host_ok = match req.version() {
        Version::HTTP_10 => hosts <= 1,
        _ => hosts == 1,
    };
    if !host_ok {
        return Some(bad_request(
            ctx,
            "bad_host",
            "an HTTP/1.1 request must carry exactly one Host header",
        ));
    }
    for (name, count) in [
        (CONTENT_TYPE, content_types),
        (CONTENT_ENCODING, content_encodings),
    ] {
        if count > 1 {
            return Some(bad_request(
                ctx,
                "duplicate_header",
                &format!("the {name} header may appear only once"),
            ));
        }
    }
    None
}

fn bad_request(ctx: &IngressContext, code: &str, message: &str) -> Reply {
    reject(
        ctx,
        RequestRejection::BadRequest,
        response::closing(response::error(StatusCode::BAD_REQUEST, code, message, "")),
    )
}

/// The status for a request hyper could not parse, counted: 431 for a head over
/// `server.max_header_bytes`, 414 for hyper's own URI limit, 505 for a well-formed HTTP
/// version other than 1.0 and 1.1 (HTTP/2's preface included), 400 for anything else.
pub fn count_unparseable(
    ctx: &IngressContext,
    err: &hyper::Error,
    activity: &super::io::Activity,
) -> StatusCode {
    let reason = err.to_string();
    let (status, why) = if err.is_parse_too_large() {
        (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            RequestRejection::BadRequest,
        )
    } else if err.is_parse_version_h2()
        || (reason.starts_with("invalid HTTP version") && activity.saw_unsupported_version())
    {
        (
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            RequestRejection::BadRequest,
        )
    } else if reason.starts_with("URI too long") {
        (StatusCode::URI_TOO_LONG, RequestRejection::UriTooLong)
    } else {
        (StatusCode::BAD_REQUEST, RequestRejection::BadRequest)
    };
    let metrics = ctx.metrics();
    metrics.request_rejected(why);
    metrics.request(Route::Other, status.as_u16());
    status
}

/// Counts a 408 sent for a head that did not complete in time.
pub fn count_timeout(ctx: &IngressContext) {
    let metrics = ctx.metrics();
    metrics.request_rejected(RequestRejection::BodyTimeout);
    metrics.request(Route::Other, 408);
}

fn is_get(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// `/ready`: 200 while new requests can be kept (see `admission::Readiness`).
fn ready(ctx: &IngressContext) -> Reply {
    let readiness = ctx.shared.edge.readiness();
    let (status, mut body) = if readiness.is_ready() {
        (StatusCode::OK, String::from("{\"ready\":true"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            String::from("{\"ready\":false"),
        )
    };
    for (key, reasons) in [
        ("reasons", &readiness.reasons),
        ("degraded", &readiness.degraded),
    ] {
        if reasons.is_empty() {
            continue;
        }
        body.push_str(",\"");
        body.push_str(key);
        body.push_str("\":[");
        for (i, reason) in reasons.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            crate::encoded::write_json_string(&mut body, reason);
        }
        body.push(']');
    }
    body.push('}');
    response::json(status, body)
}

/// How long a refused request's answer waits for the rest of its body to arrive, so that
/// the body is dropped in the connection's own task rather than in one of its own (see
/// [`body::drop_arrived`]). A client that sends its body late gets its 503 this much later.
const ARRIVING_BODY_WAIT: std::time::Duration = std::time::Duration::from_millis(1);

fn reject(ctx: &IngressContext, why: RequestRejection, reply: Reply) -> Reply {
    ctx.metrics().request_rejected(why);
    reply
}

/// The headers that say how to read a body, found in one pass over the head: a lookup by
/// name hashes the name, and three lookups cost about 320 instructions per request
/// against some 40 for the walk. Each is its header's first value, as a lookup gives;
/// `check_head` has already refused a repeated Content-Type or Content-Encoding.
#[derive(Default)]
struct BodyHeaders<'h> {
    content_type: Option<&'h HeaderValue>,
    content_encoding: Option<&'h HeaderValue>,
    content_length: Option<&'h HeaderValue>,
}

impl<'h> BodyHeaders<'h> {
    fn of(headers: &'h HeaderMap) -> Self {
        let mut found = BodyHeaders::default();
        for (name, value) in headers {
            let slot = if name == CONTENT_TYPE {
                &mut found.content_type
            } else if name == CONTENT_ENCODING {
                &mut found.content_encoding
            } else if name == CONTENT_LENGTH {
                &mut found.content_length
            } else {
                continue;
            };
            slot.get_or_insert(value);
        }
        found
    }
}

async fn ingest(ctx: &IngressContext, req: Request<Incoming>, key: Option<&Key>) -> Reply {
    let headers = BodyHeaders::of(req.headers());
    let Some(format) = body_format(headers.content_type, ctx.limits.accept_text_plain) else {
        return reject(
            ctx,
            RequestRejection::UnsupportedMediaType,
            response::closing(response::error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Content-Type must be application/json or application/x-ndjson \
                 (or text/plain, with cors.accept_text_plain)",
                "",
            )),
        );
    };
    let encoding_header = headers
        .content_encoding
        .map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let Some(encoding) = ContentEncoding::parse(encoding_header) else {
        return reject(
            ctx,
            RequestRejection::UnsupportedMediaType,
            response::closing(response::error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Content-Encoding must be gzip, zstd or identity",
                "",
            )),
        );
    };
    let declared = headers
        .content_length
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

    let refusal = admission::certain_refusal(
        &mut ctx.ring.borrow_mut(),
        ctx.ring.is_closing(),
        ctx.log.as_deref(),
        ctx.producer.is_some(),
    );
    if let Some(cause) = refusal {
        // Decided before the body is read. As nginx does with a refused request's body,
        // the body is then dropped, within the usual limit and deadline, so that the
        // connection stays open for the client's retry: a new connection per refusal cost
        // more than the refusal itself under overload. What arrived with the head is
        // dropped here, before answering; the rest, if any, is dropped in the background
        // and the answer goes out after ARRIVING_BODY_WAIT at most. A client waiting for
        // 100 Continue is not asked for its body: the connection closes.
        let reply = unavailable(ctx, cause);
        if req.headers().contains_key(EXPECT) {
            return response::closing(reply);
        }
        if hyper::body::Body::is_end_stream(req.body()) {
            return reply;
        }
        let limit = ctx.limits.max_body_bytes;
        return match body::drop_arrived(req.into_body(), limit, ARRIVING_BODY_WAIT).await {
            Dropped::Whole => reply,
            Dropped::Failed => response::closing(reply),
            Dropped::Partly { body, seen } => {
                let timeout = ctx.limits.body_timeout;
                glommio::spawn_local(body::discard(body, limit, timeout, seen)).detach();
                reply
            }
        };
    }

    let mut raw = ctx.take_buffer();
    let mut charge = BodyCharge::new(ctx.body_budget.clone());
    let read = body::read_limited(
        req.into_body(),
        ctx.limits.max_body_bytes,
        declared.map(|len| len as usize),
        ctx.limits.body_timeout,
        &mut charge,
        &mut raw,
    )
    .await;
    let frame = match read {
        Ok(frame) => frame,
        Err(err) => {
            drop(charge);
            ctx.return_buffer(raw);
            return body_error(ctx, err);
        }
    };
    let received = frame.as_deref().unwrap_or(&raw);
    let decided = if encoding == ContentEncoding::Identity {
        parse_and_admit(ctx, received, format, key)
    } else {
        let mut decoded = ctx.take_buffer();
        let decided = match body::decompress(
            encoding,
            received,
            ctx.limits.max_decompressed_bytes,
            &mut decoded,
        ) {
            Ok(()) => parse_and_admit(ctx, &decoded, format, key),
            Err(err) => Ok(body_error(ctx, err)),
        };
        ctx.return_buffer(decoded);
        decided
    };
    drop(frame);
    drop(charge);
    ctx.return_buffer(raw);
    match decided {
        Ok(reply) => reply,
        Err(Pending::Spill(plan)) => spill_and_answer(ctx, plan, key).await,
        Err(Pending::Commit {
            chunk,
            ends,
            admitted,
        }) => commit_and_answer(ctx, chunk, ends, admitted, key).await,
    }
}

/// What an admitted request still waits for before it can be answered.
enum Pending {
    /// The Kafka overflow's acknowledgements.
    Spill(SpillPlan),
    /// The write-ahead log's sync (its room in the ring reserved, or on disk only).
    Commit {
        chunk: Bytes,
        ends: Vec<usize>,
        admitted: Admission,
    },
}

fn body_format(content_type: Option<&HeaderValue>, accept_text_plain: bool) -> Option<BodyFormat> {
    let Some(value) = content_type else {
        return Some(BodyFormat::Json);
    };
    // What SDKs send, as they send it: decided without the general parse below, which
    // costs some 250 instructions per request.
    if value.as_bytes() == b"application/json" {
        return Some(BodyFormat::Json);
    }
    let media = value.to_str().ok()?.split(';').next()?.trim();
    if media.eq_ignore_ascii_case("application/json")
        || (accept_text_plain && media.eq_ignore_ascii_case("text/plain"))
    {
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
            response::closing(response::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                &message,
                &format!(",\"limit\":{limit}"),
            )),
        ),
        BodyError::Unavailable(cause) => response::closing(unavailable(ctx, cause)),
        BodyError::TimedOut => reject(ctx, RequestRejection::BodyTimeout, response::body_timeout()),
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

/// Parses, validates and admits a complete body. No await: see the module comment. A
/// request that must wait (for the overflow, or for the write-ahead log) comes back as
/// what it waits for.
fn parse_and_admit(
    ctx: &IngressContext,
    body: &[u8],
    format: BodyFormat,
    key: Option<&Key>,
) -> Result<Reply, Pending> {
    let metrics = ctx.metrics();
    let received_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut encode_buf = ctx.encode_buf.borrow_mut();
    if encode_buf.capacity() - encode_buf.len() < body.len() + 1024 {
        encode_buf.reserve(ENCODE_CHUNK.max(body.len() + 1024));
    }
    let mut batch = ctx.batch.borrow_mut();
    let arrival = Arrival {
        received_at_ms,
        source: key.map_or("", |key| &key.name),
    };
    let parsed = ctx
        .parser
        .borrow_mut()
        .parse(body, format, arrival, &mut *encode_buf, &mut batch);
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
        return Ok(reject(ctx, why, response::batch_error(&err)));
    }

    let events = batch.len();
    if let Some(Err(refusal)) = key.map(|key| key.charge(events as u64)) {
        // Nothing of the request is kept: its encoded events are dropped unsplit.
        encode_buf.clear();
        metrics.events_rejected(EventRejection::RateLimited, events);
        return Ok(reject(ctx, refusal.counted_as(), refusal.reply()));
    }
    let chunk = encode_buf.split().freeze();
    let mut ring = ctx.ring.borrow_mut();
    let was_empty = ring.is_empty();
    let mut hot_keys = ctx.hot_keys.borrow_mut();
    let overflow = ctx.producer.as_ref().map(|_| OverflowAvailable {
        hot_keys: hot_keys.as_mut(),
    });
    match admission::admit(
        &mut ring,
        &chunk,
        &batch.ends,
        ctx.ring.is_closing(),
        ctx.log.as_deref(),
        overflow,
    ) {
        Ok(Admission::InRing) => {
            drop(ring);
            count_accepted(ctx, key, events);
            ctx.ring.notify_pushed(was_empty);
            Ok(response::accepted(events))
        }
        Ok(admitted @ (Admission::Reserved | Admission::DiskOnly)) => Err(Pending::Commit {
            chunk,
            ends: batch.ends.clone(),
            admitted,
        }),
        Ok(Admission::Spill(plan)) => Err(Pending::Spill(plan)),
        Err(cause) => {
            drop(ring);
            metrics.events_rejected(EventRejection::Unavailable, events);
            Ok(unavailable(ctx, cause))
        }
    }
}

/// Spills what the ring could not take (or the hot-key limit sent away) and answers 202
/// only once the broker has acknowledged it all.
async fn spill_and_answer(ctx: &IngressContext, plan: SpillPlan, key: Option<&Key>) -> Reply {
    let producer = ctx
        .producer
        .as_ref()
        .expect("admission plans a spill only when the overflow is configured");
    let events = plan.events();
    let result =
        admission::spill(plan, ctx.shard, &**producer, &ctx.ring, ctx.log.as_deref()).await;
    let metrics = ctx.metrics();
    match result {
        Ok(spilled) => {
            producer
                .stats
                .spilled(spilled.events, spilled.hot_key_events, spilled.elapsed);
            count_accepted(ctx, key, events);
            response::accepted(events)
        }
        Err(cause) => {
            metrics.events_rejected(EventRejection::Unavailable, events);
            unavailable(ctx, cause)
        }
    }
}

/// Answers 202 once the write-ahead log has synced the request's events.
async fn commit_and_answer(
    ctx: &IngressContext,
    chunk: Bytes,
    ends: Vec<usize>,
    admitted: Admission,
    key: Option<&Key>,
) -> Reply {
    let log = ctx
        .log
        .as_deref()
        .expect("admission reserves only when the log is on");
    let metrics = ctx.metrics();
    match admission::commit(log, &ctx.ring, &chunk, &ends, &admitted).await {
        Ok(()) => {
            count_accepted(ctx, key, ends.len());
            response::accepted(ends.len())
        }
        Err(cause) => {
            metrics.events_rejected(EventRejection::Unavailable, ends.len());
            unavailable(ctx, cause)
        }
    }
}

/// Counts a 202's events, in all and for the key that sent them.
fn count_accepted(ctx: &IngressContext, key: Option<&Key>, events: usize) {
    ctx.metrics()
        .events_accepted
        .fetch_add(events as u64, Relaxed);
    if let Some(key) = key {
        key.stats.events_accepted.fetch_add(events as u64, Relaxed);
    }
}

/// Counts and builds a 503.
pub fn unavailable(ctx: &IngressContext, cause: UnavailableCause) -> Reply {
    ctx.metrics().unavailable(cause);
    response::unavailable(cause, ctx.limits.retry_after_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format_of(content_type: &str, accept_text_plain: bool) -> Option<BodyFormat> {
        body_format(
            Some(&HeaderValue::from_str(content_type).unwrap()),
            accept_text_plain,
        )
    }

    #[test]
    fn media_types_are_read_whatever_their_spelling() {
        assert_eq!(body_format(None, false), Some(BodyFormat::Json));
        for json in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            " application/json ;charset=UTF-8",
        ] {
            assert_eq!(format_of(json, false), Some(BodyFormat::Json), "{json}");
        }
        for ndjson in ["application/x-ndjson", "application/ndjson; charset=utf-8"] {
            assert_eq!(
                format_of(ndjson, false),
                Some(BodyFormat::Ndjson),
                "{ndjson}"
            );
        }
        assert_eq!(format_of("text/plain;charset=UTF-8", false), None);
        assert_eq!(
            format_of("text/plain;charset=UTF-8", true),
            Some(BodyFormat::Json)
        );
        for other in ["application/jsonx", "application/json5", "text/json", ""] {
            assert_eq!(format_of(other, true), None, "{other}");
        }
    }

    #[test]
    fn body_headers_are_the_first_value_of_each() {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("example"));
        headers.append(CONTENT_LENGTH, HeaderValue::from_static("12"));
        headers.append(CONTENT_LENGTH, HeaderValue::from_static("13"));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let found = BodyHeaders::of(&headers);
        assert_eq!(found.content_length.unwrap(), "12");
        assert_eq!(found.content_type.unwrap(), "application/json");
        assert!(found.content_encoding.is_none());
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(BodyHeaders::of(&headers).content_encoding.unwrap(), "gzip");
    }
}
