//! The `[scylla]` settings: which cluster, how to write to it, and how hard to push it.

use serde::{Deserialize, Serialize};

/// The consistency level of every insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WriteConsistency {
    One,
    LocalOne,
    Quorum,
    LocalQuorum,
    All,
}

impl From<WriteConsistency> for scylla::statement::Consistency {
    fn from(level: WriteConsistency) -> Self {
        use scylla::statement::Consistency;
        match level {
            WriteConsistency::One => Consistency::One,
            WriteConsistency::LocalOne => Consistency::LocalOne,
            WriteConsistency::Quorum => Consistency::Quorum,
            WriteConsistency::LocalQuorum => Consistency::LocalQuorum,
            WriteConsistency::All => Consistency::All,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScyllaSettings {
    /// Contact points, `host:port`; the rest of the cluster is discovered from them.
    /// From the environment: comma-separated.
    pub contact_points: Vec<String>,
    /// Datacenter whose replicas receive writes.
    pub local_datacenter: String,
    pub consistency: WriteConsistency,
    /// Empty for no authentication.
    pub username: String,
    pub password: String,
    pub request_timeout_ms: u64,
    /// The driver's periodic metadata refresh. Topology changes reach the driver as events
    /// the nodes push (and the driver then re-reads system.peers); this interval bounds how
    /// stale the rest of its metadata, such as the schema, may get.
    pub metadata_refresh_ms: u64,
    /// Adaptive in-flight CQL requests per target shard: never fewer than this...
    pub concurrency_floor: usize,
    /// ...and never more than this.
    pub concurrency_ceiling: usize,
    /// Threads that run the driver (its connections and the CQL batches the shards hand
    /// over). 0: one per four shards, at least one.
    pub driver_threads: usize,
}

impl Default for ScyllaSettings {
    fn default() -> Self {
        ScyllaSettings {
            contact_points: vec!["127.0.0.1:9042".into()],
            local_datacenter: "datacenter1".into(),
            consistency: WriteConsistency::LocalQuorum,
            username: String::new(),
            password: String::new(),
            request_timeout_ms: 5_000,
            metadata_refresh_ms: 60_000,
            concurrency_floor: 1,
            concurrency_ceiling: 64,
            driver_threads: 0,
        }
    }
}

/// Shards per driver thread when `driver_threads` is 0. One driver thread kept up with
/// about 0.7 M rows/s here (1.4 µs of its CPU per row), a few shards' worth of 100-event
/// traffic.
const SHARDS_PER_DRIVER_THREAD: usize = 4;

impl ScyllaSettings {
    /// How many threads run the driver for `shards` shards.
    pub fn driver_threads_for(&self, shards: usize) -> usize {
        match self.driver_threads {
            0 => shards.div_ceil(SHARDS_PER_DRIVER_THREAD).max(1),
            n => n,
        }
    }

    /// The first rule these settings break, as (key, message).
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.contact_points.is_empty() {
            return Err(("scylla.contact_points", "must name at least one node"));
        }
        if self.metadata_refresh_ms == 0 {
            return Err(("scylla.metadata_refresh_ms", "must be greater than 0"));
        }
        if self.concurrency_floor == 0 || self.concurrency_ceiling < self.concurrency_floor {
            return Err((
                "scylla.concurrency_ceiling",
                "needs 1 <= scylla.concurrency_floor <= scylla.concurrency_ceiling",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_threads_follow_the_shards_unless_set() {
        let auto = ScyllaSettings::default();
        assert_eq!(auto.driver_threads_for(1), 1);
        assert_eq!(auto.driver_threads_for(4), 1);
        assert_eq!(auto.driver_threads_for(5), 2);
        assert_eq!(auto.driver_threads_for(64), 16);
        let set = ScyllaSettings {
            driver_threads: 3,
            ..ScyllaSettings::default()
        };
        assert_eq!(set.driver_threads_for(64), 3);
    }
}
