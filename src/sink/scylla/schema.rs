//! The keyspace and table tidegate writes to, as CQL: `tidegate schema print|apply`.
//!
//! `event_id` is part of the primary key so that two events of one user in the same
//! millisecond never overwrite each other, while a retried event (same id) is the same row:
//! writes are idempotent, which is what makes retrying a timed-out batch safe. The keyspace
//! is created with tablets disabled: token-to-shard routing only holds for vnode keyspaces.

use serde::{Deserialize, Serialize};

/// How the keyspace's replicas are placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicationStrategy {
    /// Per datacenter (`schema.datacenter`): what production clusters use.
    NetworkTopologyStrategy,
    /// One ring for the whole cluster: single-datacenter test clusters.
    SimpleStrategy,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SchemaConfig {
    pub keyspace: String,
    pub table: String,
    pub replication_strategy: ReplicationStrategy,
    pub replication_factor: u32,
    /// Datacenter for NetworkTopologyStrategy; defaults to `scylla.local_datacenter`.
    pub datacenter: String,
    pub default_ttl_days: u32,
}

impl Default for SchemaConfig {
    fn default() -> Self {
        SchemaConfig {
            keyspace: "tidegate".into(),
            table: "events".into(),
            replication_strategy: ReplicationStrategy::NetworkTopologyStrategy,
            replication_factor: 3,
            datacenter: "datacenter1".into(),
            default_ttl_days: 30,
        }
    }
}

impl SchemaConfig {
    /// The statements that create the schema, each idempotent (`IF NOT EXISTS`).
    pub fn statements(&self) -> Vec<String> {
        let replication = match self.replication_strategy {
            ReplicationStrategy::SimpleStrategy => format!(
                "{{'class': 'SimpleStrategy', 'replication_factor': '{}'}}",
                self.replication_factor
            ),
            ReplicationStrategy::NetworkTopologyStrategy => format!(
                "{{'class': 'NetworkTopologyStrategy', '{}': '{}'}}",
                self.datacenter, self.replication_factor
            ),
        };
        vec![
            format!(
                "CREATE KEYSPACE IF NOT EXISTS {} WITH replication = {replication} \
                 AND tablets = {{'enabled': false}}",
                self.keyspace
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {}.{} (\
                 user_id text, event_time timestamp, event_id uuid, event_type text, \
                 payload text, received_at timestamp, source text, \
                 PRIMARY KEY ((user_id), event_time, event_id)) \
                 WITH CLUSTERING ORDER BY (event_time DESC, event_id ASC) \
                 AND default_time_to_live = {}",
                self.keyspace,
                self.table,
                u64::from(self.default_ttl_days) * 86_400
            ),
        ]
    }

    /// Columns added since the table was first published, each with the statement that
    /// adds it to a table made before: `schema apply` runs those a table lacks.
    pub fn migrations(&self) -> Vec<(&'static str, String)> {
        vec![(
            "source",
            format!(
                "ALTER TABLE {}.{} ADD source text",
                self.keyspace, self.table
            ),
        )]
    }

    /// The prepared INSERT the sink binds each event to.
    pub fn insert(&self) -> String {
        format!(
            "INSERT INTO {}.{} \
             (user_id, event_time, event_id, event_type, payload, received_at, source) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
            self.keyspace, self.table
        )
    }

    pub fn validate(&self) -> Result<(), String> {
        let ident = |s: &str| {
            !s.is_empty()
                && s.len() <= 48
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !s.as_bytes()[0].is_ascii_digit()
        };
        if !ident(&self.keyspace) {
            return Err("keyspace must be a plain CQL identifier".into());
        }
        if !ident(&self.table) {
            return Err("table must be a plain CQL identifier".into());
        }
        if self.replication_factor == 0 {
            return Err("replication_factor must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_idempotent_and_disable_tablets() {
        let config = SchemaConfig::default();
        let statements = config.statements();
        assert!(statements.iter().all(|s| s.contains("IF NOT EXISTS")));
        assert!(statements[0].contains("'datacenter1': '3'"));
        assert!(statements[0].contains("tablets = {'enabled': false}"));
        assert!(statements[1].contains("PRIMARY KEY ((user_id), event_time, event_id)"));
        assert!(statements[1].contains("default_time_to_live = 2592000"));
        assert!(config
            .insert()
            .starts_with("INSERT INTO tidegate.events (user_id"));
        // Every column a migration adds is in the table as created and in the insert.
        for (column, alter) in config.migrations() {
            assert!(
                statements[1].contains(&format!(" {column} text")),
                "{column}"
            );
            assert!(
                config.insert().contains(&format!(", {column})")),
                "{column}"
            );
            assert_eq!(
                alter,
                format!("ALTER TABLE tidegate.events ADD {column} text")
            );
        }
        let bad = SchemaConfig {
            keyspace: "x; DROP".into(),
            ..SchemaConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
