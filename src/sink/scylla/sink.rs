//! The ScyllaDB sink, shard side: route and group on this core, execute on the driver's runtime.
//!
//! Each event's token is located with the driver's own replica locator (so tidegate and the
//! driver agree on ownership): the first replica in the local datacenter, and its shard.
//! Events are grouped into CQL batches that each belong to one shard of one node, and the
//! whole set goes to the driver's runtime as one job. Batches the cluster refuses for good
//! go to a dead-letter spool (counted and logged, never silently dropped), and the error
//! that refused them to `reasons.ndjson` beside their segments; transient failures are
//! reported to the writer, which keeps the events and retries, so a slow or failing
//! cluster backs up into the ring and then into 503s.

use std::path::PathBuf;

use bytes::Bytes;
use scylla::cluster::metadata::Strategy;
use scylla::cluster::ClusterState;
use scylla::frame::response::result::TableSpec;
use scylla::routing::Token;
use uuid::Uuid;

use crate::encoded::{EventBatch, EventView};

use super::dispatch::{Dispatcher, Job, TargetedBatch};
use super::grouping::{CqlBatchLimits, Grouper, ShardBatch, Unroutable};
use crate::segment::{SegmentSettings, SegmentWriter};
use crate::sink::{Sink, SinkError};

pub struct ScyllaSink {
    shard: usize,
    dispatcher: Dispatcher,
    grouper: Grouper,
    limits: CqlBatchLimits,
    dead_letter: SegmentWriter,
    /// One JSON line per refused batch: when, why, and which event_ids.
    reasons: PathBuf,
    groups: Vec<ShardBatch>,
    unroutable: Vec<Unroutable>,
}

impl ScyllaSink {
    /// Refused events go to segments kept as `dead_letter` says, with a reasons file
    /// beside them.
    pub async fn open(
        shard: usize,
        dispatcher: Dispatcher,
        dead_letter: SegmentSettings,
    ) -> Result<Self, SinkError> {
        let reasons = dead_letter.dir.join(REASONS_FILE);
        Ok(ScyllaSink {
            shard,
            dispatcher,
            grouper: Grouper::default(),
            limits: CqlBatchLimits::default(),
            dead_letter: SegmentWriter::open(dead_letter).await?,
            reasons,
            groups: Vec::new(),
            unroutable: Vec::new(),
        })
    }

    /// Where refused events of `data_dir`'s shards are kept.
    pub fn dead_letter_dir(data_dir: &std::path::Path) -> PathBuf {
        data_dir.join("dead-letter")
    }

    async fn dead_letter(&mut self, events: &[Bytes], reason: &str) -> Result<(), SinkError> {
        tracing::error!(
            shard = self.shard,
            events = events.len(),
            reason,
            "ScyllaDB refused a batch for good; its events went to the dead-letter spool"
        );
        self.dead_letter
            .append(events.iter().map(|event| &event[..]))
            .await?;
        self.record_reason(events, reason)
    }

    /// Appends the refusal to the reasons file. A blocking write, on purpose: refusals are
    /// rare, and the record must be on disk before the events leave the ring.
    fn record_reason(&self, events: &[Bytes], reason: &str) -> Result<(), SinkError> {
        use std::io::Write as _;
        let mut line = String::with_capacity(128 + events.len() * 40);
        line.push_str("{\"at\":");
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        line.push('"');
        crate::encoded::write_rfc3339_millis(&mut line, now_ms);
        line.push_str("\",\"shard\":");
        line.push_str(itoa::Buffer::new().format(self.shard));
        line.push_str(",\"reason\":");
        crate::encoded::write_json_string(&mut line, reason);
        line.push_str(",\"event_ids\":[");
        for (i, event) in events.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            match EventView::decode(event) {
                Ok(view) => {
                    line.push('"');
                    line.push_str(&view.event_id.hyphenated().to_string());
                    line.push('"');
                }
                Err(_) => line.push_str("null"),
            }
        }
        line.push_str("]}\n");
        let io = |source| SinkError::Io {
            path: self.reasons.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.reasons)
            .map_err(io)?;
        file.write_all(line.as_bytes()).map_err(io)?;
        file.sync_data().map_err(io)
    }
}

/// Where rows go: a table, and the datacenter whose replicas take the writes.
#[derive(Debug, Clone, Copy)]
pub struct LocalTable<'a> {
    pub keyspace: &'a str,
    pub table: &'a str,
    pub local_datacenter: &'a str,
}

/// Groups a drain into CQL batches of one shard of one node, locating each event's token
/// with the driver's replica locator: the first replica in the local datacenter (or, if
/// it has none, the first replica), and its shard. Group `node`s index `hosts`. Returns
/// whether some token had no known replica (incomplete metadata): nothing is sent then.
#[allow(clippy::too_many_arguments)] // the sink's reusable buffers, passed in
pub fn locate_and_group(
    state: &ClusterState,
    target: LocalTable<'_>,
    batch: &EventBatch,
    grouper: &mut Grouper,
    limits: CqlBatchLimits,
    hosts: &mut Vec<Uuid>,
    groups: &mut Vec<ShardBatch>,
    unroutable: &mut Vec<Unroutable>,
) -> bool {
    hosts.clear();
    groups.clear();
    unroutable.clear();
    let mut unknown_owner = false;
    // Asked for the local datacenter directly, the locator walks its precomputed ring
    // without allocating; the driver's get_token_endpoints would build a Vec per event.
    let strategy = state
        .get_keyspace(target.keyspace)
        .map_or(&Strategy::LocalStrategy, |k| &k.strategy);
    let table_spec = TableSpec::borrowed(target.keyspace, target.table);
    let locator = state.replica_locator();
    grouper.group(
        batch,
        |token| {
            let token = Token::new(token);
            let chosen = locator
                .replicas_for_token(token, strategy, Some(target.local_datacenter), &table_spec)
                .into_iter()
                .next()
                .or_else(|| {
                    locator
                        .replicas_for_token(token, strategy, None, &table_spec)
                        .into_iter()
                        .next()
                });
            match chosen {
                Some((node, shard)) => {
                    let index = match hosts.iter().position(|h| *h == node.host_id) {
                        Some(i) => i,
                        None => {
                            hosts.push(node.host_id);
                            hosts.len() - 1
                        }
                    };
                    (index, shard as u16)
                }
                None => {
                    unknown_owner = true;
                    (usize::MAX, 0)
                }
            }
        },
        limits,
        groups,
        unroutable,
    );
    unknown_owner
}

/// The file beside each dead-letter shard's segments that says why its events are there.
pub const REASONS_FILE: &str = "reasons.ndjson";

impl Sink for ScyllaSink {
    async fn write_batch(&mut self, batch: &EventBatch) -> Result<(), SinkError> {
        let state = self.dispatcher.session.get_cluster_state();
        let mut hosts: Vec<Uuid> = Vec::new();
        let unknown_owner = locate_and_group(
            &state,
            LocalTable {
                keyspace: &self.dispatcher.keyspace,
                table: &self.dispatcher.table,
                local_datacenter: &self.dispatcher.local_datacenter,
            },
            batch,
            &mut self.grouper,
            self.limits,
            &mut hosts,
            &mut self.groups,
            &mut self.unroutable,
        );
        if unknown_owner {
            return Err(SinkError::Scylla(
                "no replica known for some tokens yet (cluster metadata incomplete)".into(),
            ));
        }
        if !self.unroutable.is_empty() {
            let garbage: Vec<Bytes> = self.unroutable.drain(..).map(|u| u.0).collect();
            self.dead_letter(&garbage, "not a tidegate event").await?;
        }

        let (reply_tx, reply_rx) = flume::bounded(1);
        let job = Job {
            batches: self
                .groups
                .drain(..)
                .map(|group| TargetedBatch {
                    host_id: hosts[group.node],
                    shard: group.shard,
                    events: group.events,
                })
                .collect(),
            reply: reply_tx,
        };
        self.dispatcher
            .jobs
            .send_async(job)
            .await
            .map_err(|_| SinkError::Scylla("the driver thread has stopped".into()))?;
        let outcome = reply_rx
            .recv_async()
            .await
            .map_err(|_| SinkError::Scylla("the driver thread dropped a job".into()))?;
        for (events, reason) in &outcome.rejected {
            self.dead_letter(events, reason).await?;
        }
        if outcome.transient_failures > 0 {
            return Err(SinkError::Scylla(format!(
                "{} CQL batches failed after retries: {}",
                outcome.transient_failures,
                outcome.last_error.unwrap_or_default()
            )));
        }
        Ok(())
    }

    async fn tick(&mut self) -> Result<(), SinkError> {
        Ok(self.dead_letter.sync_if_due().await?)
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        Ok(self.dead_letter.close().await?)
    }
}
