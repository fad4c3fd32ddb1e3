//! What the HTTP stage counts: requests by route and status, refusals by reason, events by
//! outcome, connections.
//!
//! Each shard writes only its own block of relaxed atomics, padded to a cache line so that
//! shards never contend; `/metrics`, served by whichever shard took the connection, reads
//! every block. Counters are per event where events are countable, so that the outcome
//! counters add up: every event the server parsed is counted once, as accepted or as
//! rejected for one reason, and `accepted = flushed + in ring`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crossbeam_utils::CachePadded;

use crate::admission::UnavailableCause;
use crate::observe::{self, Collector, DescriptorEncoder};

/// The routes requests are counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Events,
    Health,
    Ready,
    Metrics,
    Other,
}

impl Route {
    const ALL: [Route; 5] = [
        Route::Events,
        Route::Health,
        Route::Ready,
        Route::Metrics,
        Route::Other,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Route::Events => "/v1/events",
            Route::Health => "/health",
            Route::Ready => "/ready",
            Route::Metrics => "/metrics",
            Route::Other => "other",
        }
    }
}

/// The statuses tidegate answers with.
const STATUSES: [u16; 17] = [
    200, 202, 204, 400, 401, 403, 404, 405, 408, 413, 414, 415, 429, 431, 500, 503, 505,
];
/// Where a status outside the list is counted.
const OTHER_STATUS: usize = 14;
const _: () = assert!(STATUSES[OTHER_STATUS] == 500);

fn status_index(status: u16) -> usize {
    STATUSES
        .iter()
        .position(|&s| s == status)
        .unwrap_or(OTHER_STATUS)
}

/// Why a request was refused with a 4xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestRejection {
    MalformedJson,
    Empty,
    NotAnEvent,
    InvalidEvents,
    TooManyEvents,
    BodyTooLarge,
    DecompressedTooLarge,
    BadEncoding,
    UnsupportedMediaType,
    /// The request's head broke HTTP's rules (Host, duplicated framing headers).
    BadRequest,
    /// The request target was longer than `server.max_uri_bytes`.
    UriTooLong,
    /// The body did not arrive within `server.body_read_timeout_ms` and its extensions.
    BodyTimeout,
    /// A page whose origin is not in `cors.allowed_origins` (403).
    OriginNotAllowed,
    /// A CORS preflight refused for another reason: CORS off, or a method other than POST.
    CorsPreflightRefused,
    /// No API key, or one not in `auth.keys_file` (401).
    Unauthorized,
    /// An API key with `write = false` (403).
    KeyCannotWrite,
    /// An API key over its `events_per_second` (429).
    RateLimited,
}

impl RequestRejection {
    const ALL: [RequestRejection; 17] = [
        RequestRejection::MalformedJson,
        RequestRejection::Empty,
        RequestRejection::NotAnEvent,
        RequestRejection::InvalidEvents,
        RequestRejection::TooManyEvents,
        RequestRejection::BodyTooLarge,
        RequestRejection::DecompressedTooLarge,
        RequestRejection::BadEncoding,
        RequestRejection::UnsupportedMediaType,
        RequestRejection::BadRequest,
        RequestRejection::UriTooLong,
        RequestRejection::BodyTimeout,
        RequestRejection::OriginNotAllowed,
        RequestRejection::CorsPreflightRefused,
        RequestRejection::Unauthorized,
        RequestRejection::KeyCannotWrite,
        RequestRejection::RateLimited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestRejection::MalformedJson => "malformed_json",
            RequestRejection::Empty => "empty",
            RequestRejection::NotAnEvent => "not_an_event",
            RequestRejection::InvalidEvents => "invalid_events",
            RequestRejection::TooManyEvents => "too_many_events",
            RequestRejection::BodyTooLarge => "body_too_large",
            RequestRejection::DecompressedTooLarge => "decompressed_too_large",
            RequestRejection::BadEncoding => "bad_encoding",
            RequestRejection::UnsupportedMediaType => "unsupported_media_type",
            RequestRejection::BadRequest => "bad_request",
            RequestRejection::UriTooLong => "uri_too_long",
            RequestRejection::BodyTimeout => "body_timeout",
            RequestRejection::OriginNotAllowed => "origin_not_allowed",
            RequestRejection::CorsPreflightRefused => "cors_preflight_refused",
            RequestRejection::Unauthorized => "unauthorized",
            RequestRejection::KeyCannotWrite => "key_cannot_write",
            RequestRejection::RateLimited => "rate_limited",
        }
    }
}

/// Why a parsed, countable event was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventRejection {
    /// The event broke a rule.
    Invalid,
    /// The event was fine but another event of its request was not (all or nothing).
    WithInvalidRequest,
    /// The request was answered 503.
    Unavailable,
    /// The request's API key was over its rate (429).
    RateLimited,
}

impl EventRejection {
    const ALL: [EventRejection; 4] = [
        EventRejection::Invalid,
        EventRejection::WithInvalidRequest,
        EventRejection::Unavailable,
        EventRejection::RateLimited,
    ];

    fn as_str(self) -> &'static str {
        match self {
            EventRejection::Invalid => "invalid",
            EventRejection::WithInvalidRequest => "with_invalid_request",
            EventRejection::Unavailable => "unavailable",
            EventRejection::RateLimited => "rate_limited",
        }
    }
}

/// One shard's counters; written only by that shard.
#[derive(Debug, Default)]
pub struct ShardMetrics {
    requests: [[AtomicU64; STATUSES.len()]; Route::ALL.len()],
    requests_rejected: [AtomicU64; RequestRejection::ALL.len()],
    unavailable: [AtomicU64; UnavailableCause::ALL.len()],
    pub(super) events_accepted: AtomicU64,
    events_rejected: [AtomicU64; EventRejection::ALL.len()],
    pub(super) connections_open: AtomicU64,
    pub(super) connections_accepted: AtomicU64,
}

impl ShardMetrics {
    pub fn request(&self, route: Route, status: u16) {
        let route = Route::ALL.iter().position(|&r| r == route).unwrap();
        self.requests[route][status_index(status)].fetch_add(1, Relaxed);
    }

    pub fn request_rejected(&self, why: RequestRejection) {
        let i = RequestRejection::ALL
            .iter()
            .position(|&r| r == why)
            .unwrap();
        self.requests_rejected[i].fetch_add(1, Relaxed);
    }

    pub fn unavailable(&self, cause: UnavailableCause) {
        self.unavailable[cause.index()].fetch_add(1, Relaxed);
    }

    pub fn events_rejected(&self, why: EventRejection, count: usize) {
        let i = EventRejection::ALL.iter().position(|&r| r == why).unwrap();
        self.events_rejected[i].fetch_add(count as u64, Relaxed);
    }
}

/// Every shard's HTTP counters.
#[derive(Debug)]
pub struct IngressMetrics {
    shards: Box<[CachePadded<ShardMetrics>]>,
}

impl IngressMetrics {
    pub fn new(shards: usize) -> Self {
        IngressMetrics {
            shards: (0..shards)
                .map(|_| CachePadded::new(ShardMetrics::default()))
                .collect(),
        }
    }

    pub fn shard(&self, shard: usize) -> &ShardMetrics {
        &self.shards[shard]
    }

    fn shards(&self) -> impl Iterator<Item = (usize, &ShardMetrics)> {
        self.shards.iter().map(|s| &**s).enumerate()
    }

    /// Events answered 202, across shards.
    pub fn events_accepted(&self) -> u64 {
        self.shards()
            .map(|(_, s)| s.events_accepted.load(Relaxed))
            .sum()
    }
}

impl Collector for IngressMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let mut requests = Vec::new();
        for (id, s) in self.shards() {
            for (r, route) in Route::ALL.iter().enumerate() {
                for (i, status) in STATUSES.iter().enumerate() {
                    let n = s.requests[r][i].load(Relaxed);
                    if n > 0 {
                        let mut labels = observe::shard_labels(id);
                        labels.push(("route", route.as_str().to_owned()));
                        labels.push(("status", status.to_string()));
                        requests.push((labels, n));
                    }
                }
            }
        }
        observe::counter(
            &mut encoder,
            "tidegate_http_requests",
            "HTTP requests answered, by route and status.",
            requests,
        )?;
        let by_reason = |label: &'static str,
                         names: &[&'static str],
                         values: &dyn Fn(&ShardMetrics, usize) -> u64| {
            let mut samples = Vec::new();
            for (id, s) in self.shards() {
                for (i, name) in names.iter().enumerate() {
                    let mut labels = observe::shard_labels(id);
                    labels.push((label, (*name).to_owned()));
                    samples.push((labels, values(s, i)));
                }
            }
            samples
        };
        let rejections: Vec<&str> = RequestRejection::ALL.iter().map(|r| r.as_str()).collect();
        observe::counter(
            &mut encoder,
            "tidegate_requests_rejected",
            "Requests refused with a 4xx, by reason.",
            by_reason("reason", &rejections, &|s, i| {
                s.requests_rejected[i].load(Relaxed)
            }),
        )?;
        let causes: Vec<&str> = UnavailableCause::ALL.iter().map(|c| c.as_str()).collect();
        observe::counter(
            &mut encoder,
            "tidegate_unavailable",
            "Requests refused with 503, by cause.",
            by_reason("cause", &causes, &|s, i| s.unavailable[i].load(Relaxed)),
        )?;
        observe::counter(
            &mut encoder,
            "tidegate_events_accepted",
            "Events answered 202: each is flushed or still in a ring.",
            self.shards()
                .map(|(id, s)| (observe::shard_labels(id), s.events_accepted.load(Relaxed))),
        )?;
        let outcomes: Vec<&str> = EventRejection::ALL.iter().map(|r| r.as_str()).collect();
        observe::counter(
            &mut encoder,
            "tidegate_events_rejected",
            "Parsed events not accepted, by reason (each counted once).",
            by_reason("reason", &outcomes, &|s, i| {
                s.events_rejected[i].load(Relaxed)
            }),
        )?;
        observe::gauge(
            &mut encoder,
            "tidegate_connections_open",
            "Open HTTP connections.",
            self.shards().map(|(id, s)| {
                (
                    observe::shard_labels(id),
                    s.connections_open.load(Relaxed) as i64,
                )
            }),
        )?;
        observe::counter(
            &mut encoder,
            "tidegate_connections_accepted",
            "Accepted TCP connections.",
            self.shards().map(|(id, s)| {
                (
                    observe::shard_labels(id),
                    s.connections_accepted.load(Relaxed),
                )
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::observe::Registry;
    use crate::writer::{WriterStats, WritersCollector};

    /// prometheus-client writes `le` before a family's own labels, and names a counter
    /// family without its `_total` suffix in `# TYPE` (OpenMetrics); samples keep it.
    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Arc::new(IngressMetrics::new(2));
        m.shard(1).request(Route::Events, 202);
        m.shard(1).events_accepted.fetch_add(5, Relaxed);
        m.shard(0).unavailable(UnavailableCause::RingFull);
        let writers: Vec<Arc<WriterStats>> = (0..2).map(|_| Arc::default()).collect();
        writers[0].flushed(1, 10, Duration::from_micros(300));
        writers[0].flushed(1, 10, Duration::from_secs(10));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(m.clone()));
        registry.register_collector(Box::new(WritersCollector(writers)));
        let text = observe::render(&registry);
        assert!(text.contains(
            "tidegate_http_requests_total{shard=\"1\",route=\"/v1/events\",status=\"202\"} 1"
        ));
        assert!(text.contains("tidegate_events_accepted_total{shard=\"1\"} 5"));
        assert!(text.contains("tidegate_unavailable_total{shard=\"0\",cause=\"ring_full\"} 1"));
        assert!(
            text.contains("tidegate_sink_flush_seconds_bucket{le=\"0.00025\",shard=\"0\"} 0"),
            "{text}"
        );
        assert!(text.contains("tidegate_sink_flush_seconds_bucket{le=\"0.0005\",shard=\"0\"} 1"));
        assert!(text.contains("tidegate_sink_flush_seconds_bucket{le=\"+Inf\",shard=\"0\"} 2"));
        assert!(
            text.contains("# TYPE tidegate_sink_events counter"),
            "{text}"
        );
    }
}
