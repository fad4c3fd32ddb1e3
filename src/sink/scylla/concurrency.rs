//! Adaptive request concurrency per target shard: additive increase, multiplicative decrease.
//!
//! A fixed number of requests in flight is either too few for a healthy cluster or too many
//! for a struggling one. Each (node, shard) target has its own limit: it grows by one per
//! window of completions whose latency looks normal, and shrinks by 10% on a back-pressure
//! signal — Overloaded, a timeout — or when latency climbs past the mean plus 2.5 standard
//! deviations of what was observed (an exponentially weighted average, weight 0.4), the
//! scheme Vector's adaptive request concurrency uses. When the cluster slows, in-flight
//! requests drop, the writers slow, rings fill, and the edge answers 503 instead of piling
//! requests onto the database.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

const EWMA_WEIGHT: f64 = 0.4;
const DEVIATIONS: f64 = 2.5;
const DECREASE: f64 = 0.9;

/// The AIMD decision, without any synchronisation: easy to test.
#[derive(Debug, Clone)]
pub struct Aimd {
    floor: usize,
    ceiling: usize,
    limit: usize,
    /// Completions since the last increase; the limit grows once per `limit` of them.
    window: usize,
    mean_us: Option<f64>,
    var_us: f64,
}

/// What a completion did to the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Same,
    Up,
    Down(usize),
}

impl Aimd {
    pub fn new(floor: usize, ceiling: usize) -> Self {
        let floor = floor.max(1);
        Aimd {
            floor,
            ceiling: ceiling.max(floor),
            limit: floor,
            window: 0,
            mean_us: None,
            var_us: 0.0,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    fn decrease(&mut self) -> Change {
        let next = ((self.limit as f64 * DECREASE) as usize).max(self.floor);
        let by = self.limit - next;
        self.limit = next;
        self.window = 0;
        if by > 0 {
            Change::Down(by)
        } else {
            Change::Same
        }
    }

    /// A request completed normally in `rtt`.
    pub fn on_success(&mut self, rtt: Duration) -> Change {
        let us = rtt.as_secs_f64() * 1e6;
        let Some(mean) = self.mean_us else {
            self.mean_us = Some(us);
            return self.grow();
        };
        let slow = us > mean + DEVIATIONS * self.var_us.sqrt() && self.var_us > 0.0;
        let delta = us - mean;
        let mean = mean + EWMA_WEIGHT * delta;
        self.var_us = (1.0 - EWMA_WEIGHT) * (self.var_us + EWMA_WEIGHT * delta * delta);
        self.mean_us = Some(mean);
        if slow {
            self.decrease()
        } else {
            self.grow()
        }
    }

    fn grow(&mut self) -> Change {
        self.window += 1;
        if self.window >= self.limit && self.limit < self.ceiling {
            self.window = 0;
            self.limit += 1;
            Change::Up
        } else {
            Change::Same
        }
    }

    /// The cluster pushed back (Overloaded, timeout).
    pub fn on_backpressure(&mut self) -> Change {
        self.decrease()
    }
}

/// An AIMD limit enforced by a semaphore whose permits follow the limit.
#[derive(Debug)]
pub struct AdaptiveLimit {
    semaphore: Arc<Semaphore>,
    state: Mutex<(Aimd, usize)>,
}

/// A request slot; report how the request went with [`AdaptiveLimit::complete`].
pub struct Slot(OwnedSemaphorePermit);

/// How a request ended, for the limit.
pub enum Outcome {
    Success(Duration),
    Backpressure,
    /// Failed for a reason that says nothing about load.
    Neutral,
}

impl AdaptiveLimit {
    pub fn new(floor: usize, ceiling: usize) -> Self {
        let aimd = Aimd::new(floor, ceiling);
        let permits = aimd.limit();
        AdaptiveLimit {
            semaphore: Arc::new(Semaphore::new(permits)),
            state: Mutex::new((aimd, permits)),
        }
    }

    pub fn limit(&self) -> usize {
        self.state.lock().unwrap().0.limit()
    }

    /// Requests holding a slot now.
    pub fn in_flight(&self) -> usize {
        let permits = self.state.lock().unwrap().1;
        permits.saturating_sub(self.semaphore.available_permits())
    }

    pub async fn acquire(&self) -> Slot {
        Slot(
            self.semaphore
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed"),
        )
    }

    pub fn complete(&self, slot: Slot, outcome: Outcome) {
        let mut state = self.state.lock().unwrap();
        let (aimd, permits) = &mut *state;
        match outcome {
            Outcome::Success(rtt) => aimd.on_success(rtt),
            Outcome::Backpressure => aimd.on_backpressure(),
            Outcome::Neutral => Change::Same,
        };
        // Permits follow the limit: hand out one more on growth, retire returning ones
        // while there are more than the limit.
        if *permits < aimd.limit() {
            self.semaphore.add_permits(aimd.limit() - *permits);
            *permits = aimd.limit();
        }
        if *permits > aimd.limit() {
            slot.0.forget();
            *permits -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_by_one_per_window_of_good_completions_up_to_the_ceiling() {
        let mut a = Aimd::new(1, 4);
        let ms = Duration::from_millis(1);
        let ups: Vec<Change> = (0..20).map(|_| a.on_success(ms)).collect();
        assert_eq!(a.limit(), 4);
        // 1 completion at limit 1, 2 at limit 2, 3 at limit 3: limit 4 after 6.
        assert_eq!(ups.iter().position(|c| *c == Change::Up), Some(0));
        assert_eq!(ups.iter().filter(|c| **c == Change::Up).count(), 3);
    }

    #[test]
    fn backs_off_on_pressure_and_on_latency_spikes_but_not_below_the_floor() {
        let mut a = Aimd::new(2, 100);
        for i in 0..2_000 {
            // Latency with a little jitter: normal.
            a.on_success(Duration::from_micros(1_000 + (i % 7) * 10));
        }
        let high = a.limit();
        assert!(high > 20, "{high}");
        assert!(matches!(a.on_backpressure(), Change::Down(_)));
        assert_eq!(a.limit(), (high as f64 * 0.9) as usize);
        assert!(matches!(
            a.on_success(Duration::from_millis(50)),
            Change::Down(_)
        ));
        for _ in 0..200 {
            a.on_backpressure();
        }
        assert_eq!(a.limit(), 2);
    }

    #[tokio::test]
    async fn permits_follow_the_limit() {
        let limit = AdaptiveLimit::new(1, 8);
        for _ in 0..100 {
            let slot = limit.acquire().await;
            limit.complete(slot, Outcome::Success(Duration::from_micros(500)));
        }
        assert_eq!(limit.limit(), 8);
        assert_eq!(limit.semaphore.available_permits(), 8);
        // Shrink: returning slots are retired until permits match the limit.
        let slots: Vec<Slot> = futures_lite::future::block_on(async {
            let mut v = Vec::new();
            for _ in 0..8 {
                v.push(limit.acquire().await);
            }
            v
        });
        for slot in slots {
            limit.complete(slot, Outcome::Backpressure);
        }
        assert!(limit.limit() < 8);
        assert_eq!(limit.semaphore.available_permits(), limit.limit());
    }
}
