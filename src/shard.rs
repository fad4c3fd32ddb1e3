//! One shard: a core's whole pipeline, from its listening socket to its sink.
//!
//! This is where the stages are wired together, once per core, on that core's glommio
//! executor: the HTTP ingress pushes into the shard's ring, the shard's writer drains the
//! ring into the shard's sink. Nothing here is shared with other shards except the
//! metrics (written per shard) and the shutdown request.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use glommio::{Latency, Shares};
use socket2::Socket;

use crate::config::Config;
use crate::event::BatchParser;
use crate::ingress::{self, listener, IngressContext};
use crate::observe::metrics::Metrics;
use crate::overflow::hot_keys::HotKeys;
use crate::overflow::spill::Spill;
use crate::overflow::ShardOverflow;
use crate::ring::ShardRing;
use crate::shutdown::Shutdown;
use crate::sink::blackhole::Blackhole;
use crate::sink::gate::{Gate, GateFiles};
use crate::sink::scylla::dispatch::Dispatcher;
use crate::sink::scylla::sink::ScyllaSink;
use crate::sink::spool::{SpoolConfig, SpoolSink};
use crate::sink::{Sink, SinkError, SinkKind};
use crate::writer;

/// What a shard needs from the process.
pub struct ShardSetup {
    pub id: usize,
    pub config: Arc<Config>,
    pub socket: Socket,
    pub metrics: Arc<Metrics>,
    pub shutdown: Arc<Shutdown>,
    /// Test-only: stall or fail the sink while these files exist.
    pub gate_files: GateFiles,
    /// The driver's handle, when the sink is ScyllaDB.
    pub dispatcher: Option<Dispatcher>,
    /// The Kafka overflow's producer, shared by every shard, when configured.
    pub spill: Option<Arc<Spill>>,
    /// Told once the shard is serving, or why it could not start.
    pub started: std::sync::mpsc::Sender<Result<usize, String>>,
}

/// Runs the shard until shutdown has drained its ring into its sink.
pub async fn run(setup: ShardSetup) -> Result<(), SinkError> {
    let ShardSetup {
        id,
        config,
        socket,
        metrics,
        shutdown,
        gate_files,
        dispatcher,
        spill,
        started,
    } = setup;
    let capacity = config.ring_capacity();
    let m = metrics.shard(id);
    m.ring_capacity_events
        .store(capacity.events as u64, Relaxed);
    m.ring_capacity_bytes.store(capacity.bytes as u64, Relaxed);
    let high_water = |cap: usize| (cap as u64 * u64::from(config.ring.high_water_percent)) / 100;
    m.ring_high_water_events
        .store(high_water(capacity.events), Relaxed);
    m.ring_high_water_bytes
        .store(high_water(capacity.bytes), Relaxed);

    let policy = config.batch_policy();
    let ring = Rc::new(ShardRing::new(
        capacity,
        policy.max_events,
        policy.max_bytes,
    ));
    let writer = match config.sink.kind {
        SinkKind::Spool => match SpoolSink::open(config.spool_config(), id).await {
            Ok(sink) => spawn_writer(
                id,
                &ring,
                sink,
                &config,
                &metrics,
                gate_files,
                spill.clone(),
            ),
            Err(err) => {
                let _ = started.send(Err(format!("shard {id}: {err}")));
                return Err(err);
            }
        },
        SinkKind::Blackhole => spawn_writer(
            id,
            &ring,
            Blackhole,
            &config,
            &metrics,
            gate_files,
            spill.clone(),
        ),
        SinkKind::Scylla => {
            let dispatcher = dispatcher.expect("the server starts the driver for the scylla sink");
            let dead_letter = SpoolConfig {
                dir: ScyllaSink::dead_letter_dir(&config.spool.data_dir),
                ..config.spool_config()
            };
            match ScyllaSink::open(id, dispatcher, dead_letter).await {
                Ok(sink) => spawn_writer(
                    id,
                    &ring,
                    sink,
                    &config,
                    &metrics,
                    gate_files,
                    spill.clone(),
                ),
                Err(err) => {
                    let _ = started.send(Err(format!("shard {id}: {err}")));
                    return Err(err);
                }
            }
        }
    };

    let listener = listener::adopt(socket);
    let ctx = Rc::new(IngressContext::new(
        id,
        config.http_limits(),
        BatchParser::new(config.batch_limits()),
        ring.clone(),
        metrics.clone(),
        shutdown,
        spill.map(|spill| ShardOverflow {
            spill,
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
fn spawn_writer<S: Sink + 'static>(
    id: usize,
    ring: &Rc<ShardRing>,
    sink: S,
    config: &Config,
    metrics: &Arc<Metrics>,
    gate_files: GateFiles,
    overflow: Option<Arc<Spill>>,
) -> glommio::Task<Result<(), SinkError>> {
    let (ring, policy, metrics) = (ring.clone(), config.batch_policy(), metrics.clone());
    let queue = glommio::executor().create_task_queue(
        Shares::Static(WRITER_SHARES),
        Latency::Matters(WRITER_LATENCY),
        "writer",
    );
    let spawned = if gate_files.is_empty() {
        glommio::spawn_local_into(
            writer::run(id, ring, sink, policy, metrics, overflow),
            queue,
        )
    } else {
        glommio::spawn_local_into(
            writer::run(
                id,
                ring,
                Gate::new(sink, gate_files),
                policy,
                metrics,
                overflow,
            ),
            queue,
        )
    };
    spawned.expect("the writer's task queue was just created on this executor")
}

/// The writer's shares, equal to those of the default queue the connections run in.
const WRITER_SHARES: usize = 1000;
/// How soon the writer must get the core back once its I/O completes.
const WRITER_LATENCY: std::time::Duration = std::time::Duration::from_millis(1);
