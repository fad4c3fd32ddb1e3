//! Counters and gauges for every stage, readable from any shard, rendered as Prometheus text.
//!
//! Each shard writes only its own block of relaxed atomics, padded to a cache line so that
//! shards never contend; `/metrics` and `/ready`, served by whichever shard took the
//! connection, read every block. Counters are per event where events are countable, so
//! that the outcome counters add up: every event the server parsed is counted once, as
//! accepted or as rejected for one reason, and `accepted = flushed + in ring`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::admission::UnavailableCause;

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
const STATUSES: [u16; 9] = [200, 202, 400, 404, 405, 413, 415, 500, 503];

fn status_index(status: u16) -> usize {
    STATUSES
        .iter()
        .position(|&s| s == status)
        .unwrap_or(STATUSES.len() - 2)
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
}

impl RequestRejection {
    const ALL: [RequestRejection; 12] = [
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
}

impl EventRejection {
    const ALL: [EventRejection; 3] = [
        EventRejection::Invalid,
        EventRejection::WithInvalidRequest,
        EventRejection::Unavailable,
    ];

    fn as_str(self) -> &'static str {
        match self {
            EventRejection::Invalid => "invalid",
            EventRejection::WithInvalidRequest => "with_invalid_request",
            EventRejection::Unavailable => "unavailable",
        }
    }
}

/// Upper bounds of the flush latency buckets, in microseconds.
const LATENCY_BUCKETS_US: [u64; 15] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000,
];

/// A histogram of integer observations with fixed upper bounds (plus +Inf).
pub struct Histogram {
    bounds: &'static [u64],
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Default for Histogram {
    /// A latency histogram, in microseconds.
    fn default() -> Self {
        Histogram::with_bounds(&LATENCY_BUCKETS_US)
    }
}

impl Histogram {
    pub fn with_bounds(bounds: &'static [u64]) -> Self {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    pub fn observe_value(&self, value: u64) {
        let bucket = self
            .bounds
            .iter()
            .position(|&bound| value <= bound)
            .unwrap_or(self.bounds.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum.fetch_add(value, Relaxed);
    }

    /// Observes a duration, in microseconds.
    pub fn observe(&self, elapsed: Duration) {
        self.observe_value(elapsed.as_micros().min(u128::from(u64::MAX)) as u64);
    }

    /// Appends the series of `name` with `labels` (e.g. `shard="0"`, or empty); bounds and
    /// sum are divided by `scale` (1e6 turns microseconds into Prometheus's seconds).
    pub fn render(&self, out: &mut String, name: &str, labels: &str, scale: f64) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{}\"}} {cumulative}",
                *bound as f64 / scale
            );
        }
        cumulative += self.buckets[self.bounds.len()].load(Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.sum.load(Relaxed) as f64 / scale;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// One shard's metrics; written only by that shard.
#[derive(Default)]
pub struct ShardMetrics {
    requests: [[AtomicU64; STATUSES.len()]; Route::ALL.len()],
    requests_rejected: [AtomicU64; RequestRejection::ALL.len()],
    unavailable: [AtomicU64; UnavailableCause::ALL.len()],
    pub events_accepted: AtomicU64,
    events_rejected: [AtomicU64; EventRejection::ALL.len()],
    pub ring_events: AtomicU64,
    pub ring_bytes: AtomicU64,
    pub ring_capacity_events: AtomicU64,
    pub ring_capacity_bytes: AtomicU64,
    pub ring_high_water_events: AtomicU64,
    pub ring_high_water_bytes: AtomicU64,
    pub batches_flushed: AtomicU64,
    pub events_flushed: AtomicU64,
    pub bytes_flushed: AtomicU64,
    pub sink_errors: AtomicU64,
    pub sink_failing: AtomicBool,
    pub flush_latency: Histogram,
    pub connections_open: AtomicU64,
    pub connections_accepted: AtomicU64,
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

    /// Publishes the ring's current depth for other shards' `/metrics` and `/ready`.
    pub fn ring_depth(&self, events: usize, bytes: usize) {
        self.ring_events.store(events as u64, Relaxed);
        self.ring_bytes.store(bytes as u64, Relaxed);
    }

    /// Whether the ring is at or above its high-water mark.
    pub fn above_high_water(&self) -> bool {
        self.ring_events.load(Relaxed) >= self.ring_high_water_events.load(Relaxed)
            || self.ring_bytes.load(Relaxed) >= self.ring_high_water_bytes.load(Relaxed)
    }
}

/// A component with metrics of its own (a sink's driver, say), rendered after the shards'.
pub trait MetricsSource: Send + Sync {
    fn render(&self, out: &mut String);
}

pub struct Metrics {
    shards: Box<[CachePadded<ShardMetrics>]>,
    sources: std::sync::RwLock<Vec<std::sync::Arc<dyn MetricsSource>>>,
}

impl Metrics {
    pub fn new(shards: usize) -> Self {
        Metrics {
            shards: (0..shards)
                .map(|_| CachePadded::new(ShardMetrics::default()))
                .collect(),
            sources: std::sync::RwLock::new(Vec::new()),
        }
    }

    /// Adds a component's metrics to `/metrics`.
    pub fn add_source(&self, source: std::sync::Arc<dyn MetricsSource>) {
        self.sources.write().unwrap().push(source);
    }

    pub fn shard(&self, shard: usize) -> &ShardMetrics {
        &self.shards[shard]
    }

    pub fn shards(&self) -> impl Iterator<Item = (usize, &ShardMetrics)> {
        self.shards.iter().map(|s| &**s).enumerate()
    }

    /// Totals across shards of (accepted, flushed, in ring) events.
    pub fn outcome_totals(&self) -> (u64, u64, u64) {
        self.shards().fold((0, 0, 0), |(a, f, r), (_, s)| {
            (
                a + s.events_accepted.load(Relaxed),
                f + s.events_flushed.load(Relaxed),
                r + s.ring_events.load(Relaxed),
            )
        })
    }

    /// Renders every metric in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let mut family = |name: &str, kind: &str, help: &str, each: &dyn Fn(&mut String)| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            each(&mut out);
        };
        let shards = || self.shards();

        family(
            "tidegate_http_requests_total",
            "counter",
            "HTTP requests answered, by route and status.",
            &|out| {
                for (id, s) in shards() {
                    for (r, route) in Route::ALL.iter().enumerate() {
                        for (i, status) in STATUSES.iter().enumerate() {
                            let n = s.requests[r][i].load(Relaxed);
                            if n > 0 {
                                let _ = writeln!(out, "tidegate_http_requests_total{{shard=\"{id}\",route=\"{}\",status=\"{status}\"}} {n}", route.as_str());
                            }
                        }
                    }
                }
            },
        );
        family(
            "tidegate_requests_rejected_total",
            "counter",
            "Requests refused with a 4xx, by reason.",
            &|out| {
                for (id, s) in shards() {
                    for (i, why) in RequestRejection::ALL.iter().enumerate() {
                        let n = s.requests_rejected[i].load(Relaxed);
                        let _ = writeln!(
                            out,
                            "tidegate_requests_rejected_total{{shard=\"{id}\",reason=\"{}\"}} {n}",
                            why.as_str()
                        );
                    }
                }
            },
        );
        family(
            "tidegate_unavailable_total",
            "counter",
            "Requests refused with 503, by cause.",
            &|out| {
                for (id, s) in shards() {
                    for cause in UnavailableCause::ALL {
                        let n = s.unavailable[cause.index()].load(Relaxed);
                        let _ = writeln!(
                            out,
                            "tidegate_unavailable_total{{shard=\"{id}\",cause=\"{}\"}} {n}",
                            cause.as_str()
                        );
                    }
                }
            },
        );
        family(
            "tidegate_events_accepted_total",
            "counter",
            "Events answered 202: each is flushed or still in a ring.",
            &|out| {
                for (id, s) in shards() {
                    let n = s.events_accepted.load(Relaxed);
                    let _ = writeln!(out, "tidegate_events_accepted_total{{shard=\"{id}\"}} {n}");
                }
            },
        );
        family(
            "tidegate_events_rejected_total",
            "counter",
            "Parsed events not accepted, by reason (each counted once).",
            &|out| {
                for (id, s) in shards() {
                    for (i, why) in EventRejection::ALL.iter().enumerate() {
                        let n = s.events_rejected[i].load(Relaxed);
                        let _ = writeln!(
                            out,
                            "tidegate_events_rejected_total{{shard=\"{id}\",reason=\"{}\"}} {n}",
                            why.as_str()
                        );
                    }
                }
            },
        );
        let gauge = |name: &str, help: &str, get: &dyn Fn(&ShardMetrics) -> u64| {
            let mut text = format!("# HELP {name} {help}\n# TYPE {name} gauge\n");
            for (id, s) in shards() {
                let _ = writeln!(text, "{name}{{shard=\"{id}\"}} {}", get(s));
            }
            text
        };
        let counter = |name: &str, help: &str, get: &dyn Fn(&ShardMetrics) -> u64| {
            gauge(name, help, get).replacen("gauge", "counter", 1)
        };
        out.push_str(&gauge(
            "tidegate_ring_events",
            "Events in the shard's ring, including a batch being written.",
            &|s| s.ring_events.load(Relaxed),
        ));
        out.push_str(&gauge(
            "tidegate_ring_bytes",
            "Encoded bytes in the shard's ring.",
            &|s| s.ring_bytes.load(Relaxed),
        ));
        out.push_str(&gauge(
            "tidegate_ring_capacity_events",
            "The ring's capacity in events.",
            &|s| s.ring_capacity_events.load(Relaxed),
        ));
        out.push_str(&gauge(
            "tidegate_ring_capacity_bytes",
            "The ring's capacity in bytes.",
            &|s| s.ring_capacity_bytes.load(Relaxed),
        ));
        out.push_str(&counter(
            "tidegate_sink_batches_total",
            "Batches the sink stored.",
            &|s| s.batches_flushed.load(Relaxed),
        ));
        out.push_str(&counter(
            "tidegate_sink_events_total",
            "Events the sink stored.",
            &|s| s.events_flushed.load(Relaxed),
        ));
        out.push_str(&counter(
            "tidegate_sink_bytes_total",
            "Encoded bytes the sink stored.",
            &|s| s.bytes_flushed.load(Relaxed),
        ));
        out.push_str(&counter(
            "tidegate_sink_errors_total",
            "Failed batch writes (each retried).",
            &|s| s.sink_errors.load(Relaxed),
        ));
        out.push_str(&gauge(
            "tidegate_sink_healthy",
            "1 while the sink's last write succeeded.",
            &|s| u64::from(!s.sink_failing.load(Relaxed)),
        ));
        out.push_str(&gauge(
            "tidegate_connections_open",
            "Open HTTP connections.",
            &|s| s.connections_open.load(Relaxed),
        ));
        out.push_str(&counter(
            "tidegate_connections_accepted_total",
            "Accepted TCP connections.",
            &|s| s.connections_accepted.load(Relaxed),
        ));

        let name = "tidegate_sink_flush_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to store one batch.\n# TYPE {name} histogram"
        );
        for (id, s) in shards() {
            s.flush_latency
                .render(&mut out, name, &format!("shard=\"{id}\""), 1e6);
        }
        for source in self.sources.read().unwrap().iter() {
            source.render(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::new(2);
        m.shard(1).request(Route::Events, 202);
        m.shard(1).events_accepted.fetch_add(5, Relaxed);
        m.shard(0).unavailable(UnavailableCause::RingFull);
        m.shard(0).flush_latency.observe(Duration::from_micros(300));
        m.shard(0).flush_latency.observe(Duration::from_secs(10));
        let text = m.render();
        assert!(text.contains(
            "tidegate_http_requests_total{shard=\"1\",route=\"/v1/events\",status=\"202\"} 1"
        ));
        assert!(text.contains("tidegate_events_accepted_total{shard=\"1\"} 5"));
        assert!(text.contains("tidegate_unavailable_total{shard=\"0\",cause=\"ring_full\"} 1"));
        assert!(text.contains("tidegate_sink_flush_seconds_bucket{shard=\"0\",le=\"0.00025\"} 0"));
        assert!(text.contains("tidegate_sink_flush_seconds_bucket{shard=\"0\",le=\"0.0005\"} 1"));
        assert!(text.contains("tidegate_sink_flush_seconds_bucket{shard=\"0\",le=\"+Inf\"} 2"));
        assert!(text.contains("# TYPE tidegate_sink_events_total counter"));
    }
}
