//! Splitting a drained batch into CQL batches that each belong to one shard of one node.
//!
//! An unlogged batch whose rows live on several replicas makes the coordinator fan out and
//! is a known way to hurt ScyllaDB; one whose rows all live on the receiving shard is
//! applied where it lands. So every event is routed (token → owning node → owning shard),
//! events are ordered by target and then by token (rows of one partition stay adjacent),
//! and each target's run is cut into batches bounded by rows and bytes, preferring to cut
//! between partitions.

use bytes::Bytes;

use crate::encoded::{user_id_bytes, EventBatch};
use murmur3_token::murmur3_token;

/// A node, as an index into the hosts a grouping call has seen.
pub type NodeIndex = usize;

/// Bounds of one CQL batch.
#[derive(Debug, Clone, Copy)]
pub struct CqlBatchLimits {
    pub max_rows: usize,
    /// Of encoded event bytes; the CQL request is close to this size.
    pub max_bytes: usize,
}

impl Default for CqlBatchLimits {
    fn default() -> Self {
        // Well under ScyllaDB's 128 KiB batch-size warning.
        CqlBatchLimits {
            max_rows: 100,
            max_bytes: 64 * 1024,
        }
    }
}

/// Rows for one shard of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardBatch {
    pub node: NodeIndex,
    pub shard: u16,
    pub events: Vec<Bytes>,
    pub bytes: usize,
}

/// An event routing could not place (its bytes are not an event); kept for dead-lettering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unroutable(pub Bytes);

/// Reusable routing state: the per-event keys are kept between calls to avoid reallocating.
#[derive(Default)]
pub struct Grouper {
    keys: Vec<(NodeIndex, u16, i64, u32)>,
}

impl Grouper {
    /// Routes `events` with `locate` (token → owning node and shard) and cuts them into
    /// shard batches, appended to `out`.
    pub fn group(
        &mut self,
        events: &EventBatch,
        mut locate: impl FnMut(i64) -> (NodeIndex, u16),
        limits: CqlBatchLimits,
        out: &mut Vec<ShardBatch>,
        unroutable: &mut Vec<Unroutable>,
    ) {
        self.keys.clear();
        for (i, event) in events.iter().enumerate() {
            match user_id_bytes(event) {
                Some(key) => {
                    let token = murmur3_token(key);
                    let (node, shard) = locate(token);
                    self.keys.push((node, shard, token, i as u32));
                }
                None => unroutable.push(Unroutable(events.owned(i))),
            }
        }
        // Stable order within a partition: equal tokens keep arrival order by index.
        self.keys.sort_unstable();

        let mut start = 0;
        while start < self.keys.len() {
            let (node, shard, _, _) = self.keys[start];
            let mut end = start;
            let mut bytes = 0;
            // The end of the last whole partition that fits, to cut between partitions.
            let mut partition_cut = None;
            while end < self.keys.len() {
                let (n, s, token, i) = self.keys[end];
                if (n, s) != (node, shard) {
                    break;
                }
                let len = events.get(i as usize).len();
                let rows = end - start;
                if rows > 0 && (rows + 1 > limits.max_rows || bytes + len > limits.max_bytes) {
                    break;
                }
                if end > start && self.keys[end - 1].2 != token {
                    partition_cut = Some(end);
                }
                bytes += len;
                end += 1;
            }
            // Cut at a partition boundary when the batch is full inside a partition that
            // continues after it, unless that partition alone fills the batch.
            let full =
                end < self.keys.len() && self.keys[end].0 == node && self.keys[end].1 == shard;
            if full && self.keys[end].2 == self.keys[end - 1].2 {
                if let Some(cut) = partition_cut {
                    end = cut;
                }
            }
            let batch: Vec<Bytes> = self.keys[start..end]
                .iter()
                .map(|&(_, _, _, i)| events.owned(i as usize))
                .collect();
            out.push(ShardBatch {
                node,
                shard,
                bytes: batch.iter().map(Bytes::len).sum(),
                events: batch,
            });
            start = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoded::{encode_into, EventFields, EventView};

    fn event(user: &str, n: u128) -> Bytes {
        let mut out = Vec::new();
        encode_into(
            &mut out,
            &EventFields {
                user_id: user,
                event_type: "t",
                event_time_ms: 1,
                event_id: uuid::Uuid::from_u128(n),
                received_at_ms: 2,
                source: "",
            },
            |o: &mut Vec<u8>| o.extend_from_slice(b"{\"k\":1}"),
        );
        Bytes::from(out)
    }

    /// A stand-in for the driver's replica locator: 3 nodes of 4 shards, every token owned
    /// by exactly one (node, shard), as a cluster's ring would.
    struct Cluster;

    impl Cluster {
        fn target(&self, token: i64) -> (NodeIndex, u16) {
            let bits = token as u64;
            ((bits % 3) as NodeIndex, (bits >> 60) as u16 % 4)
        }
    }

    fn cluster() -> Cluster {
        Cluster
    }

    #[test]
    fn every_batch_holds_rows_of_one_shard_of_one_node_only() {
        let topology = cluster();
        let events: EventBatch = (0..5_000)
            .map(|i| event(&format!("user-{}", i % 700), i))
            .collect();
        let mut batches = Vec::new();
        let mut unroutable = Vec::new();
        Grouper::default().group(
            &events,
            |t| topology.target(t),
            CqlBatchLimits::default(),
            &mut batches,
            &mut unroutable,
        );
        assert!(unroutable.is_empty());
        let mut total = 0;
        for b in &batches {
            assert!(b.events.len() <= 100 && b.bytes <= 64 * 1024);
            for e in &b.events {
                let token = murmur3_token(EventView::decode(e).unwrap().user_id.as_bytes());
                assert_eq!(topology.target(token), (b.node, b.shard));
            }
            total += b.events.len();
        }
        assert_eq!(total, events.len(), "every event in exactly one batch");
        let targets: std::collections::BTreeSet<_> =
            batches.iter().map(|b| (b.node, b.shard)).collect();
        assert_eq!(targets.len(), 12, "3 nodes x 4 shards all used");
    }

    #[test]
    fn partitions_stay_together_and_in_arrival_order() {
        let topology = cluster();
        // Two users, interleaved, 30 events each: one target batch per user's partition
        // unless both hash to the same shard.
        let events: EventBatch = (0..60)
            .map(|i| event(if i % 2 == 0 { "alice" } else { "bob" }, i))
            .collect();
        let mut batches = Vec::new();
        Grouper::default().group(
            &events,
            |t| topology.target(t),
            CqlBatchLimits {
                max_rows: 40,
                max_bytes: 1 << 20,
            },
            &mut batches,
            &mut Vec::new(),
        );
        for b in &batches {
            let users: std::collections::BTreeSet<_> = b
                .events
                .iter()
                .map(|e| EventView::decode(e).unwrap().user_id.to_owned())
                .collect();
            // A 40-row batch over two 30-row partitions is cut between them.
            assert_eq!(users.len(), 1, "{users:?}");
            let ids: Vec<u128> = b
                .events
                .iter()
                .map(|e| EventView::decode(e).unwrap().event_id.as_u128())
                .collect();
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "arrival order kept");
        }
    }

    #[test]
    fn garbage_is_set_aside_not_dropped() {
        let mut unroutable = Vec::new();
        let mut batches = Vec::new();
        let topology = cluster();
        Grouper::default().group(
            &[Bytes::from_static(b"x"), event("u", 1)]
                .into_iter()
                .collect(),
            |t| topology.target(t),
            CqlBatchLimits::default(),
            &mut batches,
            &mut unroutable,
        );
        assert_eq!(unroutable, vec![Unroutable(Bytes::from_static(b"x"))]);
        assert_eq!(batches.iter().map(|b| b.events.len()).sum::<usize>(), 1);
    }
}
