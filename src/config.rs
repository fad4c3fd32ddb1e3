//! Configuration: defaults, overridden by a TOML file, then by `TIDEGATE_*` environment
//! variables, then by command-line flags.
//!
//! Layers are merged as TOML tables before anything is typed, so every key can come from
//! any layer under one name: the file's `[limits] max_body_bytes` is the environment's
//! `TIDEGATE_LIMITS_MAX_BODY_BYTES` and shows up in `tidegate config print` as the same
//! key. Validation then names the offending key, and the binary exits with status 2.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use toml::{Table, Value};

use crate::event::{BatchLimits, EventLimits};
use crate::ingress::{BodyTimeout, ConnectionPolicy, HttpLimits, Lingering, Timeouts};
use crate::ring::RingCapacity;
use crate::sink::scylla::schema::SchemaConfig;
use crate::sink::spool::{FsyncPolicy, SpoolConfig};
use crate::sink::SinkKind;
use crate::writer::BatchPolicy;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: LimitsConfig,
    pub ring: RingConfig,
    pub batch: BatchConfig,
    pub sink: SinkConfig,
    pub spool: SpoolSection,
    pub scylla: ScyllaConfig,
    pub schema: SchemaConfig,
    pub kafka: KafkaConfig,
    pub log: LogConfig,
}

/// The Kafka overflow: where a full ring spills, and the drain that brings spilled events
/// back. With no brokers configured there is no overflow and a full ring means 503.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`; empty turns the overflow off. From the environment:
    /// comma-separated.
    pub brokers: Vec<String>,
    pub topic: String,
    /// Create the topic at start-up if it is missing (brokers such as tansu do not
    /// auto-create topics), with this many partitions and this replication factor.
    pub create_topic: bool,
    pub partitions: i32,
    pub replication_factor: i32,
    /// A spilled request is answered 202 only once the broker acknowledged every event
    /// (acks=all) within this deadline; otherwise 503.
    pub ack_deadline_ms: u64,
    /// The producer's local queue: beyond either bound a spill is refused at once (503).
    pub queue_max_messages: u32,
    pub queue_max_kbytes: u32,
    pub linger_ms: u32,
    /// An idempotent producer: librdkafka's retries cannot duplicate or reorder an event
    /// within a partition. Off only for brokers that mishandle it (see the README).
    pub idempotence: bool,
    /// none, gzip, snappy, lz4 or zstd.
    pub compression: String,
    /// Consumer group of the drain.
    pub consumer_group: String,
    /// Run the drain inside the server (otherwise run `tidegate drain` as its own process).
    pub drain: bool,
    /// Events the drain writes to the sink per batch (and commits per offset commit).
    pub drain_batch_events: usize,
    /// Per user_id and shard, events per second beyond which that user's events go
    /// straight to the overflow topic; 0 turns the hot-key limit off.
    pub hot_key_events_per_second: u32,
    /// Events a user may send at once before the per-second limit applies.
    pub hot_key_burst: u32,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: Vec::new(),
            topic: "tidegate-overflow".into(),
            create_topic: true,
            partitions: 12,
            replication_factor: 1,
            ack_deadline_ms: 2_000,
            queue_max_messages: 100_000,
            queue_max_kbytes: 64 * 1024,
            linger_ms: 5,
            idempotence: true,
            compression: "zstd".into(),
            consumer_group: "tidegate-drain".into(),
            drain: false,
            drain_batch_events: 5_000,
            hot_key_events_per_second: 0,
            hot_key_burst: 1_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScyllaConfig {
    /// Contact points, `host:port`; the rest of the cluster is discovered from them.
    /// From the environment: comma-separated.
    pub contact_points: Vec<String>,
    /// Datacenter whose replicas receive writes.
    pub local_datacenter: String,
    /// ONE, LOCAL_ONE, QUORUM, LOCAL_QUORUM or ALL.
    pub consistency: String,
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
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        ScyllaConfig {
            contact_points: vec!["127.0.0.1:9042".into()],
            local_datacenter: "datacenter1".into(),
            consistency: "LOCAL_QUORUM".into(),
            username: String::new(),
            password: String::new(),
            request_timeout_ms: 5_000,
            metadata_refresh_ms: 60_000,
            concurrency_floor: 1,
            concurrency_ceiling: 64,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address every shard listens on (SO_REUSEPORT). Port 0 picks a free port.
    pub listen: String,
    /// Number of shards (one pinned thread each); 0 means one per online core.
    pub shards: usize,
    /// Pin each shard to its own core.
    pub pin_cores: bool,
    /// Listen backlog of each shard's socket.
    pub backlog: u32,
    /// Open connections per shard; further connections get one 503 and are closed.
    pub max_connections_per_shard: usize,
    /// Time allowed for a request's head to arrive once its first byte has.
    pub header_read_timeout_ms: u64,
    /// A connection with no bytes moving in either direction for this long is closed.
    pub idle_timeout_ms: u64,
    /// Largest request head (request line and headers); a larger one gets 431.
    pub max_header_bytes: usize,
    /// Longest request target (path and query); a longer one gets 414.
    pub max_uri_bytes: usize,
    /// Time a request body gets to arrive once its head has, before the extensions below.
    pub body_read_timeout_ms: u64,
    /// Each byte of body received extends the body's deadline by `1 / rate` seconds, so a
    /// slow but steady upload completes while a trickle gets 408 (Apache's mod_reqtimeout
    /// `body=…,MinRate=…`).
    pub body_min_bytes_per_second: u64,
    /// After an early final answer, how long the server keeps reading and discarding what
    /// the client still sends, so that the client reads the answer rather than a reset
    /// (nginx's lingering_time)…
    pub lingering_time_ms: u64,
    /// …how long it waits for each further byte meanwhile (nginx's lingering_timeout)…
    pub lingering_timeout_ms: u64,
    /// …and how many bytes it discards at most.
    pub lingering_max_bytes: u64,
    /// On SIGTERM/SIGINT, how long open connections may take to finish.
    pub shutdown_grace_ms: u64,
    /// The Retry-After value sent with every 503.
    pub retry_after_seconds: u32,
    /// Before a shard's thread sleeps for want of work, it keeps polling io_uring for this
    /// long (glommio's spin-before-park): lower wake-up latency for a core of CPU; 0 = off.
    pub spin_before_park_us: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Request body as sent (compressed or not).
    pub max_body_bytes: usize,
    /// Request body after Content-Encoding is undone.
    pub max_decompressed_bytes: usize,
    /// Per shard: memory held by request bodies being received. A body that does not fit
    /// in what is left gets 503 `body_memory` at once.
    pub max_inflight_body_bytes: usize,
    pub max_events_per_request: usize,
    /// Nesting depth inside `payload`, the payload object itself counting as 1.
    pub max_payload_depth: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RingConfig {
    /// Events each shard's ring holds at most.
    pub capacity_events: usize,
    /// Encoded bytes each shard's ring holds at most.
    pub capacity_bytes: usize,
    /// `/ready` turns 503 when any ring is this full (percent of either bound).
    pub high_water_percent: u8,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// The writer hands the sink at most this many events at once. Large drains matter:
    /// each spool write has a fixed cost, and 1,000-event batches could not keep up with
    /// one core's ingest (see the commit that raised this to 10,000).
    pub max_events: usize,
    pub max_bytes: usize,
    /// Longest an event waits for its batch to fill.
    pub max_delay_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    pub kind: SinkKind,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolSection {
    pub data_dir: PathBuf,
    pub segment_bytes: u64,
    /// `each-flush`, `interval` or `never`.
    pub fsync: String,
    pub fsync_interval_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter, e.g. `info` or `tidegate=debug`.
    pub level: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            shards: 0,
            pin_cores: true,
            backlog: 4096,
            max_connections_per_shard: 10_000,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_header_bytes: 64 * 1024,
            max_uri_bytes: 8 * 1024,
            body_read_timeout_ms: 10_000,
            body_min_bytes_per_second: 1024,
            lingering_time_ms: 30_000,
            lingering_timeout_ms: 5_000,
            lingering_max_bytes: 16 << 20,
            shutdown_grace_ms: 30_000,
            retry_after_seconds: 1,
            spin_before_park_us: 0,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: 1 << 20,
            max_decompressed_bytes: 10 << 20,
            max_inflight_body_bytes: 64 << 20,
            max_events_per_request: 10_000,
            max_payload_depth: 32,
        }
    }
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            capacity_events: 200_000,
            capacity_bytes: 64 << 20,
            high_water_percent: 80,
        }
    }
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_events: 10_000,
            max_bytes: 1 << 20,
            max_delay_ms: 10,
        }
    }
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            kind: SinkKind::Spool,
        }
    }
}

impl Default for SpoolSection {
    fn default() -> Self {
        SpoolSection {
            data_dir: PathBuf::from("tidegate-data"),
            segment_bytes: 64 << 20,
            fsync: "interval".into(),
            fsync_interval_ms: 1_000,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// One command-line override: the dotted key and its value as text.
pub type Override = (&'static str, String);

impl Config {
    /// Builds the effective configuration from its four layers.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &[Override],
    ) -> Result<Config, ConfigError> {
        let mut table = match Value::try_from(Config::default()) {
            Ok(Value::Table(t)) => t,
            _ => unreachable!("the default configuration serializes to a table"),
        };
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let overlay: Table = toml::from_str(&text).map_err(|e| ConfigError::File {
                path: path.to_owned(),
                message: e.message().to_owned(),
            })?;
            merge_file(&mut table, overlay, "").map_err(|message| ConfigError::File {
                path: path.to_owned(),
                message,
            })?;
        }
        let keys = all_keys(&table);
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("TIDEGATE_") else {
                continue;
            };
            if let Some(key) = keys
                .iter()
                .find(|key| key.replace('.', "_").eq_ignore_ascii_case(rest))
            {
                set_key(&mut table, key, &value)
                    .map_err(|m| invalid(&format!("{key} (from {name})"), m))?;
            }
        }
        for (key, value) in flags {
            set_key(&mut table, key, value).map_err(|m| invalid(key, m))?;
        }
        let config: Config = Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| invalid("configuration", e.message().to_owned()))?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as TOML, as `tidegate config print` shows it.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("the configuration serializes")
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        let positive = |key: &str, value: u64| {
            if value == 0 {
                Err(invalid(key, "must be greater than 0"))
            } else {
                Ok(())
            }
        };
        positive("server.backlog", self.server.backlog.into())?;
        positive(
            "server.max_connections_per_shard",
            self.server.max_connections_per_shard as u64,
        )?;
        positive(
            "server.header_read_timeout_ms",
            self.server.header_read_timeout_ms,
        )?;
        positive("server.idle_timeout_ms", self.server.idle_timeout_ms)?;
        if self.server.max_header_bytes < 1024 {
            return Err(invalid("server.max_header_bytes", "must be at least 1024"));
        }
        positive("server.max_uri_bytes", self.server.max_uri_bytes as u64)?;
        positive(
            "server.body_read_timeout_ms",
            self.server.body_read_timeout_ms,
        )?;
        positive(
            "server.body_min_bytes_per_second",
            self.server.body_min_bytes_per_second,
        )?;
        if self.limits.max_inflight_body_bytes < self.limits.max_body_bytes {
            return Err(invalid(
                "limits.max_inflight_body_bytes",
                "must be at least limits.max_body_bytes, or a largest body could never be read",
            ));
        }
        positive("limits.max_body_bytes", self.limits.max_body_bytes as u64)?;
        positive(
            "limits.max_decompressed_bytes",
            self.limits.max_decompressed_bytes as u64,
        )?;
        positive(
            "limits.max_events_per_request",
            self.limits.max_events_per_request as u64,
        )?;
        positive(
            "limits.max_payload_depth",
            self.limits.max_payload_depth as u64,
        )?;
        if self.limits.max_payload_depth > 512 {
            return Err(invalid("limits.max_payload_depth", "must be at most 512"));
        }
        positive("ring.capacity_events", self.ring.capacity_events as u64)?;
        positive("ring.capacity_bytes", self.ring.capacity_bytes as u64)?;
        if !(1..=100).contains(&self.ring.high_water_percent) {
            return Err(invalid(
                "ring.high_water_percent",
                "must be between 1 and 100",
            ));
        }
        positive("batch.max_events", self.batch.max_events as u64)?;
        positive("batch.max_bytes", self.batch.max_bytes as u64)?;
        if self.limits.max_events_per_request > self.ring.capacity_events {
            return Err(invalid(
                "limits.max_events_per_request",
                "must not exceed ring.capacity_events, or a full request could never fit",
            ));
        }
        positive("spool.segment_bytes", self.spool.segment_bytes)?;
        self.fsync_policy()?;
        if self.scylla.contact_points.is_empty() {
            return Err(invalid(
                "scylla.contact_points",
                "must name at least one node",
            ));
        }
        if !matches!(
            self.scylla.consistency.as_str(),
            "ONE" | "LOCAL_ONE" | "QUORUM" | "LOCAL_QUORUM" | "ALL"
        ) {
            return Err(invalid(
                "scylla.consistency",
                "must be ONE, LOCAL_ONE, QUORUM, LOCAL_QUORUM or ALL",
            ));
        }
        positive(
            "scylla.metadata_refresh_ms",
            self.scylla.metadata_refresh_ms,
        )?;
        if self.scylla.concurrency_floor == 0
            || self.scylla.concurrency_ceiling < self.scylla.concurrency_floor
        {
            return Err(invalid(
                "scylla.concurrency_ceiling",
                "needs 1 <= scylla.concurrency_floor <= scylla.concurrency_ceiling",
            ));
        }
        self.schema
            .validate()
            .map_err(|message| invalid("schema", message))?;
        self.validate_kafka()?;
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(invalid("log.format", "must be text or json"));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid("log.level", "is not a valid tracing filter"));
        }
        Ok(())
    }

    fn validate_kafka(&self) -> Result<(), ConfigError> {
        let kafka = &self.kafka;
        if kafka.topic.is_empty() {
            return Err(invalid("kafka.topic", "must not be empty"));
        }
        if kafka.partitions < 1 || kafka.replication_factor < 1 {
            return Err(invalid(
                "kafka.partitions",
                "kafka.partitions and kafka.replication_factor must be at least 1",
            ));
        }
        if kafka.ack_deadline_ms == 0 || kafka.queue_max_messages == 0 {
            return Err(invalid(
                "kafka.ack_deadline_ms",
                "kafka.ack_deadline_ms and kafka.queue_max_messages must be greater than 0",
            ));
        }
        if !matches!(
            kafka.compression.as_str(),
            "none" | "gzip" | "snappy" | "lz4" | "zstd"
        ) {
            return Err(invalid(
                "kafka.compression",
                "must be none, gzip, snappy, lz4 or zstd",
            ));
        }
        if kafka.drain_batch_events == 0 {
            return Err(invalid(
                "kafka.drain_batch_events",
                "must be greater than 0",
            ));
        }
        if kafka.brokers.is_empty() && (kafka.drain || kafka.hot_key_events_per_second > 0) {
            return Err(invalid(
                "kafka.brokers",
                "the drain and the hot-key limit need the overflow topic: name its brokers",
            ));
        }
        if kafka.hot_key_events_per_second > 0 && kafka.hot_key_burst == 0 {
            return Err(invalid("kafka.hot_key_burst", "must be greater than 0"));
        }
        Ok(())
    }

    /// Whether a full ring spills to Kafka (rather than answering 503 at once).
    pub fn overflow_enabled(&self) -> bool {
        !self.kafka.brokers.is_empty()
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server
            .listen
            .parse()
            .map_err(|_| invalid("server.listen", "must be IP:PORT, e.g. 0.0.0.0:8080"))
    }

    pub fn fsync_policy(&self) -> Result<FsyncPolicy, ConfigError> {
        match self.spool.fsync.as_str() {
            "each-flush" => Ok(FsyncPolicy::EachFlush),
            "never" => Ok(FsyncPolicy::Never),
            "interval" if self.spool.fsync_interval_ms > 0 => Ok(FsyncPolicy::Interval(
                Duration::from_millis(self.spool.fsync_interval_ms),
            )),
            "interval" => Err(invalid("spool.fsync_interval_ms", "must be greater than 0")),
            _ => Err(invalid(
                "spool.fsync",
                "must be each-flush, interval or never",
            )),
        }
    }

    /// Shards to run: as configured, or one per online core.
    pub fn shard_count(&self) -> usize {
        if self.server.shards > 0 {
            self.server.shards
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    pub fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_events: self.limits.max_events_per_request,
            event: EventLimits {
                max_payload_depth: self.limits.max_payload_depth,
                ..EventLimits::default()
            },
        }
    }

    pub fn http_limits(&self) -> HttpLimits {
        HttpLimits {
            max_body_bytes: self.limits.max_body_bytes,
            max_decompressed_bytes: self.limits.max_decompressed_bytes,
            max_inflight_body_bytes: self.limits.max_inflight_body_bytes,
            max_uri_bytes: self.server.max_uri_bytes,
            body_timeout: BodyTimeout {
                initial: Duration::from_millis(self.server.body_read_timeout_ms),
                min_bytes_per_second: self.server.body_min_bytes_per_second,
            },
            retry_after_secs: self.server.retry_after_seconds,
        }
    }

    pub fn connection_policy(&self) -> ConnectionPolicy {
        ConnectionPolicy {
            timeouts: Timeouts {
                header_read: Duration::from_millis(self.server.header_read_timeout_ms),
                idle: Duration::from_millis(self.server.idle_timeout_ms),
            },
            max_connections: self.server.max_connections_per_shard,
            max_header_bytes: self.server.max_header_bytes,
            lingering: Lingering {
                time: Duration::from_millis(self.server.lingering_time_ms),
                timeout: Duration::from_millis(self.server.lingering_timeout_ms),
                max_bytes: self.server.lingering_max_bytes,
            },
            shutdown_grace: Duration::from_millis(self.server.shutdown_grace_ms),
        }
    }

    pub fn ring_capacity(&self) -> RingCapacity {
        RingCapacity {
            events: self.ring.capacity_events,
            bytes: self.ring.capacity_bytes,
        }
    }

    pub fn batch_policy(&self) -> BatchPolicy {
        BatchPolicy {
            max_events: self.batch.max_events,
            max_bytes: self.batch.max_bytes,
            max_delay: Duration::from_millis(self.batch.max_delay_ms),
        }
    }

    pub fn spool_config(&self) -> SpoolConfig {
        SpoolConfig {
            dir: self.spool.data_dir.clone(),
            segment_bytes: self.spool.segment_bytes,
            fsync: self.fsync_policy().expect("validated"),
        }
    }
}

/// Deep-merges a file's table over the defaults, refusing keys the defaults lack.
fn merge_file(base: &mut Table, overlay: Table, prefix: &str) -> Result<(), String> {
    for (key, value) in overlay {
        let path = format!("{prefix}{key}");
        match (base.get_mut(&key), value) {
            (Some(Value::Table(base_inner)), Value::Table(inner)) => {
                merge_file(base_inner, inner, &format!("{path}."))?
            }
            (Some(slot), value) => *slot = value,
            (None, _) => return Err(format!("unknown key {path}")),
        }
    }
    Ok(())
}

fn all_keys(table: &Table) -> Vec<String> {
    let mut keys = Vec::new();
    for (section, value) in table {
        if let Value::Table(inner) = value {
            keys.extend(inner.keys().map(|k| format!("{section}.{k}")));
        }
    }
    keys
}

/// Sets `section.key` from text, typed like the value it replaces.
fn set_key(table: &mut Table, key: &str, text: &str) -> Result<(), String> {
    let (section, name) = key.split_once('.').ok_or("not a section.key name")?;
    let slot = table
        .get_mut(section)
        .and_then(|s| s.as_table_mut())
        .and_then(|s| s.get_mut(name))
        .ok_or_else(|| format!("unknown key {key}"))?;
    *slot = match slot {
        Value::Integer(_) => Value::Integer(
            text.trim()
                .parse()
                .map_err(|_| format!("{text:?} is not an integer"))?,
        ),
        Value::Array(_) => Value::Array(
            text.split(',')
                .map(|item| Value::String(item.trim().to_owned()))
                .filter(|item| item.as_str() != Some(""))
                .collect(),
        ),
        Value::Boolean(_) => Value::Boolean(
            text.trim()
                .parse()
                .map_err(|_| format!("{text:?} is not true or false"))?,
        ),
        _ => Value::String(text.to_owned()),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        let dir = std::env::temp_dir().join(format!("tidegate-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        std::fs::write(
            &file,
            "[server]\nlisten = \"127.0.0.1:1\"\nshards = 3\n[ring]\ncapacity_events = 20000\n",
        )
        .unwrap();
        let config = Config::load(
            Some(&file),
            env(&[
                ("TIDEGATE_SERVER_SHARDS", "2"),
                ("TIDEGATE_RING_CAPACITY_EVENTS", "30000"),
                ("UNRELATED", "x"),
            ]),
            &[("server.shards", "1".into())],
        )
        .unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:1", "file over default");
        assert_eq!(config.ring.capacity_events, 30_000, "env over file");
        assert_eq!(config.server.shards, 1, "flag over env");
        assert_eq!(config.limits.max_body_bytes, 1 << 20, "default kept");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let err = Config::load(None, env(&[("TIDEGATE_SERVER_BACKLOG", "lots")]), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.backlog"), "{err}");
        let err = Config::load(None, vec![], &[("spool.fsync", "sometimes".into())])
            .unwrap_err()
            .to_string();
        assert!(err.contains("spool.fsync"), "{err}");
        let err = Config::load(None, vec![], &[("server.listen", "nowhere".into())])
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.listen"), "{err}");
        let err = Config::load(None, vec![], &[("sink.kind", "tape".into())])
            .unwrap_err()
            .to_string();
        assert!(err.contains("tape"), "{err}");
    }

    #[test]
    fn the_overflow_is_off_without_brokers_and_its_extras_need_them() {
        let config = Config::load(None, vec![], &[]).unwrap();
        assert!(!config.overflow_enabled());
        let config = Config::load(
            None,
            env(&[("TIDEGATE_KAFKA_BROKERS", "k1:9092, k2:9092")]),
            &[],
        )
        .unwrap();
        assert!(config.overflow_enabled());
        assert_eq!(config.kafka.brokers, ["k1:9092", "k2:9092"]);
        for (key, value) in [
            ("TIDEGATE_KAFKA_DRAIN", "true"),
            ("TIDEGATE_KAFKA_HOT_KEY_EVENTS_PER_SECOND", "100"),
        ] {
            let err = Config::load(None, env(&[(key, value)]), &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains("kafka.brokers"), "{key}: {err}");
        }
        let err = Config::load(
            None,
            env(&[
                ("TIDEGATE_KAFKA_BROKERS", "k:9092"),
                ("TIDEGATE_KAFKA_COMPRESSION", "brotli"),
            ]),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("kafka.compression"), "{err}");
    }

    #[test]
    fn printed_config_loads_back_identically() {
        let config = Config::default();
        let dir = std::env::temp_dir().join(format!("tidegate-print-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("printed.toml");
        std::fs::write(&file, config.to_toml()).unwrap();
        assert_eq!(Config::load(Some(&file), vec![], &[]).unwrap(), config);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
