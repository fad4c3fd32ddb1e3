//! One shard: a core's whole pipeline, from its listening socket to its sink.
//!
//! This is where the stages are wired together, once per core, on that core's glommio
//! executor: the HTTP ingress pushes into the shard's ring, the shard's writer drains the
//! ring into the shard's sink. Nothing here is shared with other shards except what the
//! process hands in: the metrics blocks (each written by one shard), readiness state, the
//! shutdown request, the sink factory and the overflow's producer.

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use glommio::{Latency, Shares};
use socket2::Socket;

use super::config::Config;
use crate::encoded::EventBatch;
use crate::event::BatchParser;
use crate::ingress::{self, IngressContext, Shared};
use crate::log::{self, LeaveInLog, LogError, LogStats, LoggedRing, ShardLog};
use crate::overflow::{HotKeys, OverflowProducer, ShardOverflow};
use crate::ring::{RingLoad, ShardRing};
use crate::segment::SegmentWriter;
use crate::sink::{spool, AnySink, SinkError, SinkFactory, SinkKind, SinkRole};
use crate::writer::{
    self, store_with_retries, Backoff, BatchSource, Fallback, NoFallback, Retry, WriterStats,
};

/// What a shard needs from the process.
pub struct ShardSetup {
    pub(super) id: usize,
    pub(super) config: Arc<Config>,
    pub(super) socket: Socket,
    /// The admin listener's socket: shard 0 serves it when one is configured.
    pub(super) admin_socket: Option<Socket>,
    pub(super) shared: Shared,
    /// Where the shard's ring publishes its depth.
    pub(super) ring_load: Arc<RingLoad>,
    pub(super) writer: Arc<WriterStats>,
    pub(super) log_stats: Arc<LogStats>,
    pub(super) sinks: SinkFactory,
    /// The Kafka overflow's producer, shared by every shard, when configured.
    pub(super) producer: Option<Arc<OverflowProducer>>,
    /// Told once the shard is serving, or why it could not start.
    pub(super) started: std::sync::mpsc::Sender<Result<usize, String>>,
}

/// Runs the shard until shutdown has drained its ring into its sink.
pub async fn run(setup: ShardSetup) -> Result<(), SinkError> {
    let ShardSetup {
        id,
        config,
        socket,
        admin_socket,
        shared,
        ring_load,
        writer: writer_stats,
        log_stats,
        sinks,
        producer,
        started,
    } = setup;
    let policy = config.batch_policy();
    let ring = Rc::new(ShardRing::new(ring_load, policy));
    let mut sink = match sinks.open(SinkRole::Shard(id)).await {
        Ok(sink) => sink,
        Err(err) => {
            let _ = started.send(Err(format!("shard {id}: {err}")));
            return Err(err);
        }
    };
    let durable = match open_log(id, &config, &mut sink, log_stats).await {
        Ok(durable) => durable,
        Err(err) => {
            let _ = started.send(Err(format!("shard {id}: {err}")));
            return Err(SinkError::Io {
                path: config.spool.data_dir.clone(),
                source: std::io::Error::other(err.to_string()),
            });
        }
    };
    let (log, writer) = match durable {
        Some((log, segments, dir, keep_segments)) => {
            let committer =
                glommio::spawn_local(log::run_committer(log.clone(), segments, dir.clone()));
            let source = Rc::new(LoggedRing::new(
                ring.clone(),
                log.clone(),
                dir,
                keep_segments,
            ));
            // What the sink refuses at shutdown stays in the log, whatever the overflow.
            let writer = spawn_writer(id, &source, sink, &config, writer_stats, Some(LeaveInLog));
            (Some((log, committer, source)), writer)
        }
        None => {
            let writer = match producer.clone() {
                Some(producer) => {
                    spawn_writer(id, &ring, sink, &config, writer_stats, Some(producer))
                }
                None => spawn_writer(id, &ring, sink, &config, writer_stats, None::<NoFallback>),
            };
            (None, writer)
        }
    };

    let listener = ingress::adopt(socket);
    let ctx = Rc::new(IngressContext::new(
        id,
        config.http_limits(),
        BatchParser::new(config.batch_limits()),
        ring.clone(),
        shared,
        producer.map(|producer| ShardOverflow {
            producer,
            hot_keys: hot_keys(&config),
        }),
        log.as_ref().map(|(log, _, _)| log.clone()),
    ));
    let _ = started.send(Ok(id));
    let connections = config.connection_policy();
    let admin = async {
        if let Some(socket) = admin_socket {
            let admin_connections = ingress::ConnectionPolicy {
                routes: ingress::Routes::Admin,
                // Local scrapes: plaintext whatever the ingest listener speaks.
                tls: false,
                ..connections
            };
            ingress::serve(ctx.clone(), ingress::adopt(socket), admin_connections).await;
        }
    };
    futures_lite::future::zip(ingress::serve(ctx.clone(), listener, connections), admin).await;

    // No connection can push any more: let the writer drain the ring and close the sink.
    ring.close();
    let result = writer.await;
    if let Some((log, committer, source)) = log {
        log.close();
        committer.await;
        source.settle();
    }
    tracing::info!(shard = id, "shard drained and stopped");
    result
}

/// The opened log of a durable shard: the log, its segments, its directory, and whether
/// its segments are the store itself (the spool sink).
type OpenedLog = (Rc<ShardLog>, SegmentWriter, PathBuf, bool);

/// With durable acknowledgement, opens the shard's write-ahead log and replays into `sink`
/// what the sink had not stored when the last run ended; `None` in memory mode. With the
/// spool sink the log is the spool: nothing is replayed, nothing deleted.
async fn open_log(
    id: usize,
    config: &Config,
    sink: &mut AnySink,
    stats: Arc<LogStats>,
) -> Result<Option<OpenedLog>, LogError> {
    if !config.durability.is_durable() {
        return Ok(None);
    }
    let log_is_store = config.sink.kind == SinkKind::Spool;
    let dir = if log_is_store {
        spool::shard_dir(&config.spool.data_dir, id)
    } else {
        config
            .spool
            .data_dir
            .join("wal")
            .join(format!("shard-{id}"))
    };
    let (log, segments, recovered) = log::open(
        &dir,
        &config.durability,
        config.spool.segment_bytes,
        log_is_store,
        stats.clone(),
    )
    .await?;
    if !log_is_store && !recovered.records.is_empty() {
        let events = recovered.records.len();
        tracing::info!(
            shard = id,
            events,
            "replaying the write-ahead log into the sink"
        );
        for batch in recovered.records.chunks(config.batch.max_events) {
            let batch: EventBatch = batch.iter().cloned().collect();
            store_with_retries(
                sink,
                &batch,
                Backoff::new(Duration::from_millis(50), Duration::from_secs(5)),
                async |err: &SinkError| {
                    tracing::warn!(shard = id, error = %err, "replay: sink write failed; retrying");
                    Retry::After
                },
            )
            .await
            .map_err(|err| LogError::Unavailable(err.to_string()))?;
        }
        stats.replayed(events, 0);
    }
    log.all_stored();
    log::settle(&log, &dir, log_is_store);
    Ok(Some((log, segments, dir, log_is_store)))
}

/// This shard's hot-key buckets, when the limit is on.
fn hot_keys(config: &Config) -> Option<HotKeys> {
    let kafka = &config.kafka;
    (config.overflow_enabled() && kafka.hot_key_events_per_second > 0)
        .then(|| HotKeys::new(kafka.hot_key_events_per_second, kafka.hot_key_burst))
}

/// Spawns the writer into a task queue of its own.
///
/// Tasks within one glommio queue take turns; queues share the core by their shares. In the
/// connections' queue the writer would get one turn per round of every busy connection,
/// flushing one batch while each connection pushes a request: under load the ring filled
/// and clients got 503s while the disk idled. In its own queue with equal shares it gets
/// half the core whenever it has work.
fn spawn_writer<B: BatchSource + 'static, F: Fallback + 'static>(
    id: usize,
    ring: &Rc<B>,
    sink: AnySink,
    config: &Config,
    stats: Arc<WriterStats>,
    fallback: Option<F>,
) -> glommio::Task<Result<(), SinkError>> {
    let (ring, policy) = (ring.clone(), config.batch_policy());
    let queue = glommio::executor().create_task_queue(
        Shares::Static(WRITER_SHARES),
        Latency::Matters(WRITER_LATENCY),
        "writer",
    );
    glommio::spawn_local_into(writer::run(id, ring, sink, policy, stats, fallback), queue)
        .expect("the writer's task queue was just created on this executor")
}

/// The writer's shares, equal to those of the default queue the connections run in.
const WRITER_SHARES: usize = 1000;
/// How soon the writer must get the core back once its I/O completes.
const WRITER_LATENCY: std::time::Duration = std::time::Duration::from_millis(1);
