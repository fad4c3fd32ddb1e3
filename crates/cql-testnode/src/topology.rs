//! Which node owns a token: the vnode token ring of a cluster.
//!
//! Each node announces the tokens it owns; a node with token `t` owns the range from the
//! previous token (exclusive) up to `t` (inclusive), wrapping at the end of the ring. With
//! a datacenter-local policy the primary replica is the first node *of that datacenter*
//! clockwise from the token, so the ring is kept per datacenter as well. This module knows
//! nothing about connections: it is filled from cluster metadata and only answers "who
//! owns this token", as the driver's routing layer does.

use std::net::SocketAddr;

use thiserror::Error;

use crate::sharding::Sharding;

/// One node as routing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub address: SocketAddr,
    pub datacenter: String,
    pub sharding: Sharding,
}

/// An index into [`Topology::nodes`].
pub type NodeIndex = usize;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TopologyError {
    #[error("no node owns any token")]
    EmptyRing,
    #[error("token {token} names node {node}, but there are only {nodes} nodes")]
    UnknownNode {
        token: i64,
        node: NodeIndex,
        nodes: usize,
    },
    #[error("datacenter {0:?} has no node with tokens")]
    NoLocalNodes(String),
}

#[derive(Debug, Clone)]
pub struct Topology {
    nodes: Vec<Node>,
    /// (token, owner) sorted by token, restricted to the local datacenter when one is set.
    ring: Vec<(i64, NodeIndex)>,
}

impl Topology {
    /// Builds the ring from every node and the tokens each owns. With `local_dc`, tokens are
    /// routed to that datacenter's replicas only.
    pub fn new(
        nodes: Vec<Node>,
        tokens: impl IntoIterator<Item = (i64, NodeIndex)>,
        local_dc: Option<&str>,
    ) -> Result<Self, TopologyError> {
        let mut ring = Vec::new();
        for (token, node) in tokens {
            let Some(owner) = nodes.get(node) else {
                return Err(TopologyError::UnknownNode {
                    token,
                    node,
                    nodes: nodes.len(),
                });
            };
            if local_dc.is_none_or(|dc| owner.datacenter == dc) {
                ring.push((token, node));
            }
        }
        if ring.is_empty() {
            return Err(match local_dc {
                Some(dc) => TopologyError::NoLocalNodes(dc.to_owned()),
                None => TopologyError::EmptyRing,
            });
        }
        ring.sort_unstable();
        Ok(Topology { nodes, ring })
    }

    /// The primary (local) replica of `token`.
    pub fn owner(&self, token: i64) -> NodeIndex {
        let at = self.ring.partition_point(|&(t, _)| t < token);
        self.ring[if at == self.ring.len() { 0 } else { at }].1
    }

    /// The node and shard that own `token`.
    pub fn target(&self, token: i64) -> (NodeIndex, u16) {
        let node = self.owner(token);
        (node, self.nodes[node].sharding.shard_of(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: u8, dc: &str) -> Node {
        Node {
            address: SocketAddr::from(([127, 0, 0, i], 9042)),
            datacenter: dc.into(),
            sharding: Sharding {
                nr_shards: 4,
                ignore_msb: 12,
            },
        }
    }

    #[test]
    fn a_token_belongs_to_the_next_token_clockwise() {
        let t = Topology::new(
            vec![node(1, "dc1"), node(2, "dc1")],
            [(-100, 0), (0, 1), (100, 0)],
            None,
        )
        .unwrap();
        assert_eq!(t.owner(-100), 0, "a node owns its own token");
        assert_eq!(t.owner(-99), 1);
        assert_eq!(t.owner(0), 1);
        assert_eq!(t.owner(1), 0);
        assert_eq!(t.owner(101), 0, "wraps to the first token");
        assert_eq!(t.owner(i64::MIN), 0);
    }

    #[test]
    fn local_datacenter_routing_skips_remote_nodes() {
        let nodes = vec![node(1, "dc1"), node(2, "dc2")];
        let t = Topology::new(nodes.clone(), [(0, 0), (50, 1)], Some("dc1")).unwrap();
        assert_eq!(t.owner(10), 0, "dc2's token 50 is skipped");
        assert_eq!(
            Topology::new(nodes, [(50, 1)], Some("dc1")).unwrap_err(),
            TopologyError::NoLocalNodes("dc1".into())
        );
    }

    #[test]
    fn rejects_tokens_of_unknown_nodes() {
        assert!(matches!(
            Topology::new(vec![node(1, "dc1")], [(0, 3)], None),
            Err(TopologyError::UnknownNode { node: 3, .. })
        ));
    }
}
