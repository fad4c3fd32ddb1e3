//! Readiness: whether this edge can keep new requests, computed once, from the state each
//! stage publishes for that purpose (never from metrics).
//!
//! Without the overflow, ready means every ring below its high-water mark and every sink's
//! last write successful. With it, full rings and a failing sink only make the edge
//! *degraded* (requests are being spilled), and unready means the spill itself is refusing.
//! With durable acknowledgement the log is the buffer: full rings and a failing sink are
//! *degraded* (requests are kept on disk), and a log above its high-water mark is the
//! pressure that makes the edge unready (or degraded, with the overflow). The same
//! pressure makes the in-process drain hold off: live traffic comes first.

use std::sync::Arc;

use crate::log::LogStats;
use crate::overflow::OverflowStats;
use crate::ring::RingLoad;
use crate::shutdown::Shutdown;
use crate::writer::WriterStats;

/// What readiness reads, for every shard of the process.
pub struct EdgeState {
    pub shutdown: Arc<Shutdown>,
    /// Per shard: its ring's published load and its sink's health.
    pub shards: Vec<(Arc<RingLoad>, Arc<WriterStats>)>,
    /// The Kafka overflow's state, when configured.
    pub overflow: Option<Arc<OverflowStats>>,
    /// Per shard, with durable acknowledgement: its write-ahead log's fill.
    pub logs: Vec<Arc<LogStats>>,
}

/// A log holding this share of `durability.max_log_bytes` unstored is a pressure reason.
pub const LOG_HIGH_WATER_PERCENT: u8 = 80;

/// The answer `/ready` gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Why new requests cannot be kept; empty means ready.
    pub reasons: Vec<String>,
    /// Why the edge works harder than usual while ready (spilling, say).
    pub degraded: Vec<String>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.reasons.is_empty()
    }
}

impl EdgeState {
    pub fn readiness(&self) -> Readiness {
        let mut reasons = Vec::new();
        let mut degraded = Vec::new();
        if self.shutdown.is_requested() {
            reasons.push("shutting down".to_owned());
        }
        let durable = !self.logs.is_empty();
        let (buffer_pressure, log_pressure) = self.shard_pressure();
        match (self.overflow.is_some(), durable) {
            (true, _) => {
                degraded.extend(buffer_pressure);
                degraded.extend(log_pressure);
            }
            (false, true) => {
                degraded.extend(buffer_pressure);
                reasons.extend(log_pressure);
            }
            (false, false) => reasons.extend(buffer_pressure),
        }
        if let Some(overflow) = &self.overflow {
            if overflow.spilling() {
                degraded.push("spilling to the Kafka overflow topic".to_owned());
            }
            if let Some(reason) = overflow.saturated() {
                reasons.push(reason.to_owned());
            }
        }
        Readiness { reasons, degraded }
    }

    /// Why the drain should hold off now, if it should: the edge is spilling, a ring is
    /// above its high-water mark, or a sink is failing.
    pub fn drain_pressure(&self) -> Option<String> {
        if self.overflow.as_ref().is_some_and(|o| o.spilling()) {
            return Some("the edge is spilling".into());
        }
        let (buffer, log) = self.shard_pressure();
        buffer.into_iter().chain(log).next()
    }

    /// Per shard: rings above their high-water mark and failing sinks; and logs above
    /// theirs.
    fn shard_pressure(&self) -> (Vec<String>, Vec<String>) {
        let mut buffer = Vec::new();
        let mut log = Vec::new();
        for (id, (ring, sink)) in self.shards.iter().enumerate() {
            if ring.above_high_water() {
                buffer.push(format!("shard {id}: ring above its high-water mark"));
            }
            if sink.health.is_failing() {
                buffer.push(format!("shard {id}: sink writes failing"));
            }
            if self
                .logs
                .get(id)
                .is_some_and(|l| l.above(LOG_HIGH_WATER_PERCENT))
            {
                log.push(format!(
                    "shard {id}: write-ahead log above its high-water mark"
                ));
            }
        }
        (buffer, log)
    }
}
