//! The simulated cluster: nodes, their tokens and shards, the schema, and the system tables
//! a driver reads to discover all of that.

use std::net::{IpAddr, Ipv4Addr};

use uuid::Uuid;

use crate::result::{ColumnType, Value};

pub const DATACENTER: &str = "datacenter1";
pub const RACK: &str = "rack1";
pub const CLUSTER_NAME: &str = "tidegate-testnode";
/// ScyllaDB's default for SCYLLA_SHARDING_IGNORE_MSB.
pub const IGNORE_MSB: u8 = 12;

#[derive(Debug, Clone)]
pub struct Node {
    pub index: usize,
    pub ip: Ipv4Addr,
    pub host_id: Uuid,
    pub tokens: Vec<i64>,
    pub shards: u16,
    /// Whether the node is in the ring. A standby node has its address and tokens ready
    /// but owns nothing and is in no peers table until it joins.
    pub member: bool,
}

#[derive(Debug, Clone)]
pub struct Keyspace {
    pub name: String,
    pub replication: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct Table {
    pub keyspace: String,
    pub name: String,
    /// Columns in declaration order.
    pub columns: Vec<(String, ColumnType)>,
    pub partition_key: Vec<String>,
    pub clustering_key: Vec<String>,
}

/// A system table's columns and rows.
pub type TableContents = (Vec<(&'static str, ColumnType)>, Vec<Vec<Value>>);

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub keyspaces: Vec<Keyspace>,
    pub tables: Vec<Table>,
    pub schema_version: Uuid,
}

impl Cluster {
    /// `nodes` nodes on 127.0.0.1, 127.0.0.2, ..., each with `shards` shards and `vnodes`
    /// tokens drawn from a fixed seed, so that runs are reproducible; the first `members`
    /// are in the ring, the rest standing by to join.
    pub fn new(nodes: usize, members: usize, shards: u16, vnodes: usize, seed: u64) -> Cluster {
        let mut state = seed | 1;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let nodes = (0..nodes)
            .map(|i| Node {
                index: i,
                ip: Ipv4Addr::new(127, 0, 0, (i + 1) as u8),
                host_id: Uuid::from_u64_pair(next(), next()),
                tokens: (0..vnodes).map(|_| next() as i64).collect(),
                shards,
                member: i < members,
            })
            .collect();
        Cluster {
            nodes,
            keyspaces: Vec::new(),
            tables: Vec::new(),
            schema_version: Uuid::from_u128(1),
        }
    }

    pub fn schema_changed(&mut self) {
        self.schema_version = Uuid::from_u128(self.schema_version.as_u128() + 1);
    }

    pub fn table(&self, keyspace: &str, name: &str) -> Option<&Table> {
        self.tables
            .iter()
            .find(|t| t.keyspace == keyspace && t.name == name)
    }

    /// The columns and rows of a system table as seen from `node`, or `None` when the
    /// test node does not have that table.
    pub fn system_table(&self, node: usize, keyspace: &str, table: &str) -> Option<TableContents> {
        use ColumnType::*;
        let peer_row = |n: &Node| {
            vec![
                Value::Inet(IpAddr::V4(n.ip)),
                Value::Inet(IpAddr::V4(n.ip)),
                Value::Uuid(n.host_id),
                Value::Text(DATACENTER.into()),
                Value::Text(RACK.into()),
                Value::TextList(n.tokens.iter().map(i64::to_string).collect()),
                Value::Uuid(self.schema_version),
            ]
        };
        let peer_columns = vec![
            ("peer", Inet),
            ("rpc_address", Inet),
            ("host_id", Uuid),
            ("data_center", Text),
            ("rack", Text),
            ("tokens", SetOfText),
            ("schema_version", Uuid),
        ];
        Some(match (keyspace, table) {
            ("system", "local") => {
                let mut columns = peer_columns;
                columns.extend([
                    ("key", Text),
                    ("cluster_name", Text),
                    ("partitioner", Text),
                    ("release_version", Text),
                    ("cql_version", Text),
                    ("broadcast_address", Inet),
                    ("listen_address", Inet),
                ]);
                let n = &self.nodes[node];
                let mut row = peer_row(n);
                row.extend([
                    Value::Text("local".into()),
                    Value::Text(CLUSTER_NAME.into()),
                    Value::Text("org.apache.cassandra.dht.Murmur3Partitioner".into()),
                    Value::Text("3.0.8".into()),
                    Value::Text("3.3.1".into()),
                    Value::Inet(IpAddr::V4(n.ip)),
                    Value::Inet(IpAddr::V4(n.ip)),
                ]);
                (columns, vec![row])
            }
            ("system", "peers") => (
                peer_columns,
                self.nodes
                    .iter()
                    .filter(|n| n.member && n.index != node)
                    .map(peer_row)
                    .collect(),
            ),
            ("system_schema", "keyspaces") => (
                vec![
                    ("keyspace_name", Text),
                    ("durable_writes", Boolean),
                    ("replication", MapOfText),
                ],
                self.keyspaces
                    .iter()
                    .map(|k| {
                        vec![
                            Value::Text(k.name.clone()),
                            Value::Boolean(true),
                            Value::TextMap(k.replication.clone()),
                        ]
                    })
                    .collect(),
            ),
            ("system_schema", "scylla_keyspaces") => (
                vec![("keyspace_name", Text), ("initial_tablets", Int)],
                Vec::new(),
            ),
            ("system_schema", "tables") => (
                vec![("keyspace_name", Text), ("table_name", Text)],
                self.tables
                    .iter()
                    .map(|t| vec![Value::Text(t.keyspace.clone()), Value::Text(t.name.clone())])
                    .collect(),
            ),
            ("system_schema", "scylla_tables") => (
                vec![
                    ("keyspace_name", Text),
                    ("table_name", Text),
                    ("partitioner", Text),
                ],
                self.tables
                    .iter()
                    .map(|t| {
                        vec![
                            Value::Text(t.keyspace.clone()),
                            Value::Text(t.name.clone()),
                            Value::Null,
                        ]
                    })
                    .collect(),
            ),
            ("system_schema", "columns") => (
                vec![
                    ("keyspace_name", Text),
                    ("table_name", Text),
                    ("column_name", Text),
                    ("kind", Text),
                    ("position", Int),
                    ("type", Text),
                    ("clustering_order", Text),
                ],
                self.tables
                    .iter()
                    .flat_map(|t| {
                        t.columns.iter().map(move |(name, ty)| {
                            let (kind, position, order) = if let Some(p) =
                                t.partition_key.iter().position(|c| c == name)
                            {
                                ("partition_key", p as i32, "none")
                            } else if let Some(p) = t.clustering_key.iter().position(|c| c == name)
                            {
                                ("clustering", p as i32, "asc")
                            } else {
                                ("regular", -1, "none")
                            };
                            vec![
                                Value::Text(t.keyspace.clone()),
                                Value::Text(t.name.clone()),
                                Value::Text(name.clone()),
                                Value::Text(kind.into()),
                                Value::Int(position),
                                Value::Text(ty.cql_name().into()),
                                Value::Text(order.into()),
                            ]
                        })
                    })
                    .collect(),
            ),
            ("system_schema", "views") => (
                vec![
                    ("keyspace_name", Text),
                    ("view_name", Text),
                    ("base_table_name", Text),
                ],
                Vec::new(),
            ),
            ("system_schema", "types") => (
                vec![
                    ("keyspace_name", Text),
                    ("type_name", Text),
                    ("field_names", ListOfText),
                    ("field_types", ListOfText),
                ],
                Vec::new(),
            ),
            _ => return None,
        })
    }
}
