//! Configuration: defaults, overridden by a TOML file, then by `TIDEGATE_*` environment
//! variables, then by command-line flags; then handed to each stage as its own settings.
//!
//! Layers are merged as TOML tables before anything is typed, so every key can come from
//! any layer under one name: the file's `[limits] max_body_bytes` is the environment's
//! `TIDEGATE_LIMITS_MAX_BODY_BYTES` and shows up in `tidegate config print` as the same
//! key. Every layer refuses a key it does not know, the environment included (a typo such
//! as `TIDEGATE_SPOOL_FSNYC` would otherwise leave the default silently in force).
//! Validation names the offending key, and the binary exits with status 2.
//!
//! Sections that belong to one stage are that stage's own settings type (`[spool]`,
//! `[scylla]`, `[schema]`, `[kafka]`); the rest describe the edge as an operator sees it
//! (`[server]`, `[limits]`, `[ring]`, `[batch]`) and are split here into the typed limits
//! each stage takes. No stage reads this module.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use toml::{Table, Value};

use crate::event::{BatchLimits, EventLimits};
use crate::ingress::{
    AuthSettings, BodyTimeout, ConnectionPolicy, CorsPolicy, CorsSettings, HttpLimits, Lingering,
    Routes, Timeouts, TlsSettings,
};
use crate::log::DurabilitySettings;
use crate::overflow::KafkaSettings;
use crate::ring::RingCapacity;
use crate::sink::scylla::{SchemaConfig, ScyllaSettings};
use crate::sink::spool::SpoolSettings;
use crate::sink::{SinkKind, SinkSettings};
use crate::writer::BatchPolicy;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: LimitsConfig,
    pub ring: RingConfig,
    pub batch: BatchConfig,
    pub sink: SinkConfig,
    pub spool: SpoolSettings,
    pub scylla: ScyllaSettings,
    pub schema: SchemaConfig,
    pub kafka: KafkaSettings,
    pub durability: DurabilitySettings,
    pub cors: CorsSettings,
    pub auth: AuthSettings,
    pub log: LogConfig,
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
    /// A second address, served by shard 0, with only `/metrics`, `/health` and `/ready`
    /// (e.g. `127.0.0.1:9464`); once set, the ingest address no longer serves `/metrics`.
    /// Empty: none.
    pub admin_listen: String,
    /// PEM certificate chain (leaf first); with `tls_key_file`, the ingest listener speaks
    /// TLS only (rustls, ALPN `http/1.1`). Both reload on SIGHUP. Empty: plaintext.
    pub tls_cert_file: String,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: String,
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

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
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
            admin_listen: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
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

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
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

/// `TIDEGATE_*` variables that are not configuration keys: the flags' own variables (see
/// `cli`), and those of the repository's scripts and tests.
const NOT_CONFIG_KEYS: [&str; 6] = [
    "TIDEGATE_CONFIG",
    "TIDEGATE_LISTEN",
    "TIDEGATE_SHARDS",
    "TIDEGATE_SINK",
    "TIDEGATE_DATA_DIR",
    "TIDEGATE_TOOLS",
];
const NOT_CONFIG_PREFIXES: [&str; 2] = ["TIDEGATE_TEST_", "TIDEGATE_TUNING_"];

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
            match keys
                .iter()
                .find(|key| key.replace('.', "_").eq_ignore_ascii_case(rest))
            {
                Some(key) => set_key(&mut table, key, &value)
                    .map_err(|m| invalid(&format!("{key} (from {name})"), m))?,
                None if NOT_CONFIG_KEYS.contains(&name.as_str())
                    || NOT_CONFIG_PREFIXES.iter().any(|p| name.starts_with(p)) => {}
                None => {
                    return Err(invalid(
                        &name,
                        "is not a configuration key (TIDEGATE_<SECTION>_<KEY>; \
                         `tidegate config print` lists them)",
                    ))
                }
            }
        }
        for (key, value) in flags {
            set_key(&mut table, key, value).map_err(|m| invalid(key, m))?;
        }
        let config: Config = serde_path_to_error::deserialize(Value::Table(table))
            .map_err(|e| invalid(&e.path().to_string(), e.inner().message().to_owned()))?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as TOML, as `tidegate config print` shows it.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("the configuration serializes")
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.admin_listen_addr()?;
        self.cors_policy()?;
        let tls = self.tls_settings();
        if tls.is_on() && (tls.cert_file.is_empty() || tls.key_file.is_empty()) {
            return Err(invalid(
                "server.tls_cert_file",
                "TLS needs both server.tls_cert_file and server.tls_key_file",
            ));
        }
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
        let stage = |checked: Result<(), (&str, &str)>| {
            checked.map_err(|(key, message)| invalid(key, message))
        };
        stage(self.spool.check())?;
        stage(self.scylla.check())?;
        self.schema
            .validate()
            .map_err(|message| invalid("schema", message))?;
        stage(self.kafka.check())?;
        stage(self.durability.check())?;
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid("log.level", "is not a valid tracing filter"));
        }
        Ok(())
    }

    /// Whether a full ring spills to Kafka (rather than answering 503 at once).
    pub fn overflow_enabled(&self) -> bool {
        self.kafka.enabled()
    }

    /// The admin listener's address, if one is configured.
    pub fn admin_listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.server.admin_listen.is_empty() {
            return Ok(None);
        }
        self.server.admin_listen.parse().map(Some).map_err(|_| {
            invalid(
                "server.admin_listen",
                "must be IP:PORT, e.g. 127.0.0.1:9464, or empty",
            )
        })
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server
            .listen
            .parse()
            .map_err(|_| invalid("server.listen", "must be IP:PORT, e.g. 0.0.0.0:8080"))
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
            accept_text_plain: self.cors.accept_text_plain,
        }
    }

    /// Which web pages may post; an entry that is not an origin fails the start.
    pub fn cors_policy(&self) -> Result<CorsPolicy, ConfigError> {
        CorsPolicy::new(&self.cors).map_err(|e| invalid("cors.allowed_origins", e.to_string()))
    }

    /// The certificate files; whether they load is checked when the server starts.
    pub fn tls_settings(&self) -> TlsSettings {
        TlsSettings {
            cert_file: self.server.tls_cert_file.clone(),
            key_file: self.server.tls_key_file.clone(),
        }
    }

    pub fn connection_policy(&self) -> ConnectionPolicy {
        ConnectionPolicy {
            tls: self.tls_settings().is_on(),
            routes: if self.server.admin_listen.is_empty() {
                Routes::All
            } else {
                Routes::Ingest
            },
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

    /// What the sink factory needs, from every section a sink may use.
    pub fn sink_settings(&self) -> SinkSettings {
        SinkSettings {
            kind: self.sink.kind,
            spool: self.spool.clone(),
            scylla: ScyllaSettings {
                driver_threads: self.scylla.driver_threads_for(self.shard_count()),
                ..self.scylla.clone()
            },
            schema: self.schema.clone(),
            spool_is_log: self.durability.is_durable(),
            #[cfg(feature = "test-hooks")]
            gate: Default::default(),
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

    /// An admin address splits the routes: metrics leave the ingest listener.
    #[test]
    fn an_admin_address_moves_the_metrics_off_the_ingest_listener() {
        let config = Config::load(None, vec![], &[]).unwrap();
        assert_eq!(config.admin_listen_addr().unwrap(), None);
        assert_eq!(config.connection_policy().routes, Routes::All);
        let config = Config::load(
            None,
            env(&[("TIDEGATE_SERVER_ADMIN_LISTEN", "127.0.0.1:9464")]),
            &[],
        )
        .unwrap();
        assert_eq!(
            config.admin_listen_addr().unwrap(),
            Some("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(config.connection_policy().routes, Routes::Ingest);
        let err = Config::load(
            None,
            env(&[("TIDEGATE_SERVER_ADMIN_LISTEN", "localhost")]),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("server.admin_listen"), "{err}");
    }

    /// A list entry that is not an origin (a path, a bare host) fails the start: the
    /// browser's `Origin` would never match it.
    #[test]
    fn cors_origins_are_checked_at_load() {
        let config = Config::load(
            None,
            env(&[(
                "TIDEGATE_CORS_ALLOWED_ORIGINS",
                "https://a.example, http://b:81",
            )]),
            &[],
        )
        .unwrap();
        assert!(config.cors_policy().unwrap().is_on());
        let err = Config::load(
            None,
            env(&[("TIDEGATE_CORS_ALLOWED_ORIGINS", "https://a.example/app")]),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("cors.allowed_origins"), "{err}");
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
    fn an_unknown_environment_key_is_refused_by_name() {
        let err = Config::load(None, env(&[("TIDEGATE_SPOOL_FSNYC", "never")]), &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("TIDEGATE_SPOOL_FSNYC"), "{err}");
        // The flags' own variables and the scripts' are not configuration keys.
        Config::load(
            None,
            env(&[
                ("TIDEGATE_LISTEN", "127.0.0.1:1"),
                ("TIDEGATE_TEST_TANSU", "/bin/tansu"),
                ("TIDEGATE_TUNING_NIC", "eth0"),
            ]),
            &[],
        )
        .unwrap();
    }

    #[test]
    fn a_bad_enum_value_names_its_key() {
        for (key, value) in [
            ("scylla.consistency", "SOME"),
            ("kafka.compression", "brotli"),
            ("log.format", "xml"),
            ("schema.replication_strategy", "Everywhere"),
        ] {
            let err = Config::load(None, vec![], &[(key, value.into())])
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(key), "{key}: {err}");
        }
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
