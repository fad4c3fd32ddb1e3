//! One shard: a core's whole pipeline, from its listening socket to its sink.
//!
//! This is where the stages are wired together, once per core, on that core's glommio
//! executor: the HTTP ingress pushes into the shard's ring, the shard's writer drains the
//! ring into the shard's sink. Nothing here is shared with other shards except what the
//! process hands in: the metrics blocks (each written by one shard), readiness state, the
//! shutdown request, the sink factory and the overflow's producer.

use std::rc::Rc;
use std::sync::Arc;

use glommio::{Latency, Shares};
use socket2::Socket;

use super::config::Config;
use crate::event::BatchParser;
use crate::ingress::{self, IngressContext, Shared};
use crate::overflow::{HotKeys, OverflowProducer, ShardOverflow};
use crate::ring::{RingLoad, ShardRing};
use crate::sink::{AnySink, SinkError, SinkFactory, SinkRole};
use crate::writer::{self, NoFallback, WriterStats};

/// What a shard needs from the process.
pub struct ShardSetup {
    pub(super) id: usize,
    pub(super) config: Arc<Config>,
    pub(super) socket: Socket,
    pub(super) shared: Shared,
    /// Where the shard's ring publishes its depth.
    pub(super) ring_load: Arc<RingLoad>,
    pub(super) writer: Arc<WriterStats>,
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
        shared,
        ring_load,
        writer: writer_stats,
        sinks,
        producer,
        started,
    } = setup;
    let policy = config.batch_policy();
    let ring = Rc::new(ShardRing::new(ring_load, policy));
    let sink = match sinks.open(SinkRole::Shard(id)).await {
        Ok(sink) => sink,
        Err(err) => {
            let _ = started.send(Err(format!("shard {id}: {err}")));
            return Err(err);
        }
    };
    let writer = spawn_writer(id, &ring, sink, &config, writer_stats, producer.clone());

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
    ));
    let _ = started.send(Ok(id));
    ingress::serve(ctx, listener, config.connection_policy()).await;

    // No connection can push any more: let the writer drain the ring and close the sink.
    ring.close();
    let result = writer.await;
    tracing::info!(shard = id, "shard drained and stopped");
    result
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
fn spawn_writer(
    id: usize,
    ring: &Rc<ShardRing>,
    sink: AnySink,
    config: &Config,
    stats: Arc<WriterStats>,
    overflow: Option<Arc<OverflowProducer>>,
) -> glommio::Task<Result<(), SinkError>> {
    let (ring, policy) = (ring.clone(), config.batch_policy());
    let queue = glommio::executor().create_task_queue(
        Shares::Static(WRITER_SHARES),
        Latency::Matters(WRITER_LATENCY),
        "writer",
    );
    let spawned = match overflow {
        Some(producer) => glommio::spawn_local_into(
            writer::run(id, ring, sink, policy, stats, Some(producer)),
            queue,
        ),
        None => glommio::spawn_local_into(
            writer::run(id, ring, sink, policy, stats, None::<NoFallback>),
            queue,
        ),
    };
    spawned.expect("the writer's task queue was just created on this executor")
}

/// The writer's shares, equal to those of the default queue the connections run in.
const WRITER_SHARES: usize = 1000;
/// How soon the writer must get the core back once its I/O completes.
const WRITER_LATENCY: std::time::Duration = std::time::Duration::from_millis(1);
