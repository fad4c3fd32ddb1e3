//! The hot-key limit: one user sending far more than others must not monopolize the
//! ScyllaDB shard that owns its partition.
//!
//! Each shard keeps a token bucket per user_id it has seen recently. An event whose user
//! has a token goes the normal way (ring, then ScyllaDB); one beyond the user's rate goes
//! straight to the overflow topic, from which the drain writes it later at a pace the
//! cluster can take. Buckets are per shard, as everything on the hot path is: a user
//! whose requests land on N shards gets up to N times the configured rate.

use std::collections::HashMap;
use std::time::Instant;

/// Buckets a shard tracks before it forgets the users that are not over their rate.
const MAX_TRACKED_USERS: usize = 100_000;

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

pub struct HotKeys {
    per_second: f64,
    burst: f64,
    buckets: HashMap<Box<[u8]>, Bucket>,
}

impl HotKeys {
    pub fn new(events_per_second: u32, burst: u32) -> Self {
        HotKeys {
            per_second: f64::from(events_per_second),
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
        }
    }

    /// Takes a token for one event of `user_id` at `now`; `false` means the user is over
    /// its rate and the event should be spilled.
    pub fn admit(&mut self, user_id: &[u8], now: Instant) -> bool {
        let (per_second, burst) = (self.per_second, self.burst);
        if let Some(bucket) = self.buckets.get_mut(user_id) {
            let earned = now.saturating_duration_since(bucket.refilled).as_secs_f64() * per_second;
            bucket.tokens = (bucket.tokens + earned).min(burst);
            bucket.refilled = now;
            if bucket.tokens >= 1.0 {
                bucket.tokens -= 1.0;
                return true;
            }
            return false;
        }
        if self.buckets.len() >= MAX_TRACKED_USERS {
            self.forget_quiet_users(now);
        }
        self.buckets.insert(
            user_id.into(),
            Bucket {
                tokens: burst - 1.0,
                refilled: now,
            },
        );
        true
    }

    /// Drops every bucket that has refilled completely: those users are not hot, and a new
    /// bucket for them would start full anyway. If every tracked user is hot, all are
    /// forgotten (the limit fails open rather than growing memory without bound).
    fn forget_quiet_users(&mut self, now: Instant) {
        let (per_second, burst) = (self.per_second, self.burst);
        self.buckets.retain(|_, bucket| {
            let earned = now.saturating_duration_since(bucket.refilled).as_secs_f64() * per_second;
            bucket.tokens + earned < burst
        });
        if self.buckets.len() >= MAX_TRACKED_USERS {
            self.buckets.clear();
        }
    }

    pub fn tracked_users(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_is_admitted_then_the_rate_applies() {
        let mut keys = HotKeys::new(10, 5);
        let t0 = Instant::now();
        let admitted = (0..20).filter(|_| keys.admit(b"hot", t0)).count();
        assert_eq!(admitted, 5, "the burst, then nothing at the same instant");
        // 10 per second: half a second earns 5 more.
        let t1 = t0 + Duration::from_millis(500);
        let admitted = (0..20).filter(|_| keys.admit(b"hot", t1)).count();
        assert_eq!(admitted, 5);
        // Other users are untouched by one user's limit.
        assert!(keys.admit(b"calm", t1));
    }

    #[test]
    fn tokens_never_exceed_the_burst() {
        let mut keys = HotKeys::new(1000, 3);
        let t0 = Instant::now();
        assert!(keys.admit(b"u", t0));
        let later = t0 + Duration::from_secs(60);
        let admitted = (0..10).filter(|_| keys.admit(b"u", later)).count();
        assert_eq!(admitted, 3);
    }

    #[test]
    fn memory_is_bounded_by_forgetting_quiet_users() {
        let mut keys = HotKeys::new(1, 2);
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED_USERS {
            keys.admit(format!("user-{i}").as_bytes(), t0);
        }
        assert_eq!(keys.tracked_users(), MAX_TRACKED_USERS);
        // Ten seconds on, every bucket has refilled: all those users are quiet.
        assert!(keys.admit(b"newcomer", t0 + Duration::from_secs(10)));
        assert_eq!(keys.tracked_users(), 1);
    }
}
