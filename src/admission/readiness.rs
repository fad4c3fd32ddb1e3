//! Readiness: whether this edge can keep new requests, computed once, from the state each
//! stage publishes for that purpose (never from metrics).
//!
//! Without the overflow, ready means every ring below its high-water mark and every sink's
//! last write successful. With it, full rings and a failing sink only make the edge
//! *degraded* (requests are being spilled), and unready means the spill itself is refusing.
//! The same pressure makes the in-process drain hold off: live traffic comes first.

use std::sync::Arc;

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
}

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
        let pressure = if self.overflow.is_some() {
            &mut degraded
        } else {
            &mut reasons
        };
        pressure.extend(self.shard_pressure());
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
        self.shard_pressure().next()
    }

    fn shard_pressure(&self) -> impl Iterator<Item = String> + '_ {
        self.shards
            .iter()
            .enumerate()
            .flat_map(|(id, (ring, sink))| {
                let high = ring
                    .above_high_water()
                    .then(|| format!("shard {id}: ring above its high-water mark"));
                let failing = sink
                    .health
                    .is_failing()
                    .then(|| format!("shard {id}: sink writes failing"));
                high.into_iter().chain(failing)
            })
    }
}
