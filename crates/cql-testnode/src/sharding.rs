//! Which shard of a ScyllaDB node owns a token.
//!
//! ScyllaDB splits each node's token range across its shards (cores) with the
//! "biased-token-round-robin" algorithm that the node announces in its SUPPORTED options:
//! bias the token to unsigned, drop `ignore_msb` high bits, and scale into
//! `0..nr_shards`. A request sent to the owning shard is processed there without a
//! cross-core hop, which is the point of shard-aware batching.

/// A node's sharding parameters, from its `SCYLLA_NR_SHARDS` and
/// `SCYLLA_SHARDING_IGNORE_MSB` options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sharding {
    pub nr_shards: u16,
    pub ignore_msb: u8,
}

impl Sharding {
    pub fn shard_of(&self, token: i64) -> u16 {
        let biased = (token as u64).wrapping_add(1 << 63);
        let shifted = biased.checked_shl(u32::from(self.ignore_msb)).unwrap_or(0);
        ((u128::from(shifted) * u128::from(self.nr_shards)) >> 64) as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_the_token_range_in_order() {
        let s = Sharding {
            nr_shards: 4,
            ignore_msb: 0,
        };
        assert_eq!(s.shard_of(i64::MIN), 0);
        assert_eq!(s.shard_of(-1), 1);
        assert_eq!(s.shard_of(0), 2);
        assert_eq!(s.shard_of(i64::MAX), 3);
        assert_eq!(s.shard_of(i64::MIN / 2), 1);
        let one = Sharding {
            nr_shards: 1,
            ignore_msb: 12,
        };
        assert_eq!(one.shard_of(12345), 0);
    }

    #[test]
    fn ignore_msb_interleaves_shards() {
        // With 12 bits ignored (ScyllaDB's default), neighbouring token ranges cycle
        // through every shard instead of each shard owning one contiguous quarter.
        let s = Sharding {
            nr_shards: 4,
            ignore_msb: 12,
        };
        let step = 1i64 << (64 - 12 - 2);
        let shards: Vec<u16> = (0..8)
            .map(|i| s.shard_of(i64::MIN.wrapping_add(i * step)))
            .collect();
        assert_eq!(shards, vec![0, 1, 2, 3, 0, 1, 2, 3]);
    }
}
