//! A histogram of integer observations with fixed upper bounds, safe to observe from one
//! thread and read from any: one relaxed increment per observation, no lock.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the latency buckets, in microseconds.
const LATENCY_BUCKETS_US: [u64; 15] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000,
];

pub struct Histogram {
    bounds: &'static [u64],
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("bounds", &self.bounds)
            .finish()
    }
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

    /// Per-bucket (not cumulative) counts with their upper bounds divided by `scale`, the
    /// last bound being +Inf; then the count and the scaled sum.
    pub fn snapshot(&self, scale: f64) -> (Vec<(f64, u64)>, u64, f64) {
        let mut buckets = Vec::with_capacity(self.buckets.len());
        let mut count = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            let n = bucket.load(Relaxed);
            count += n;
            let bound = self
                .bounds
                .get(i)
                .map_or(f64::INFINITY, |&b| b as f64 / scale);
            buckets.push((bound, n));
        }
        (buckets, count, self.sum.load(Relaxed) as f64 / scale)
    }
}
