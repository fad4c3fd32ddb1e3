//! The tokio side of the ScyllaDB sink: the driver session, and the execution of CQL batches.
//!
//! The scylla driver runs on tokio; tidegate's shards run on glommio. They meet here, once
//! per writer batch: a shard routes and groups its events on its own core and sends one
//! [`Job`] of ready-made shard batches over a channel; the driver's runtime executes them
//! concurrently, each pinned to the node and shard that own its rows, with a bounded number
//! in flight per target, retries transient failures with exponential backoff and jitter,
//! and answers once. Per-event work never crosses the thread boundary.
//!
//! The runtime has `scylla.driver_threads` workers (by default one per four shards) sharing
//! one session, so one set of connections: the driver's shard-aware pool keeps one
//! connection per shard of each node, whatever the number of tidegate shards or driver
//! threads. Jobs of different shards run side by side; a shard has one in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use scylla::client::session::Session;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::policies::load_balancing::{NodeIdentifier, SingleTargetLoadBalancingPolicy};
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::Consistency;
use scylla::value::{CqlTimestamp, MaybeUnset};
use thiserror::Error;
use uuid::Uuid;

use super::concurrency::{AdaptiveLimit, Outcome};
use crate::observe::{self, Collector, DescriptorEncoder, Histogram};

const ROWS_BOUNDS: [u64; 8] = [1, 2, 5, 10, 20, 50, 100, 200];
const BYTES_BOUNDS: [u64; 8] = [512, 1024, 4096, 16_384, 32_768, 65_536, 131_072, 1 << 20];

/// Rows per CQL batch.
#[derive(Debug)]
pub struct RowsHistogram(pub Histogram);
/// Event bytes per CQL batch.
#[derive(Debug)]
pub struct BytesHistogram(pub Histogram);

impl Default for RowsHistogram {
    fn default() -> Self {
        RowsHistogram(Histogram::with_bounds(&ROWS_BOUNDS))
    }
}

impl Default for BytesHistogram {
    fn default() -> Self {
        BytesHistogram(Histogram::with_bounds(&BYTES_BOUNDS))
    }
}

use super::schema::SchemaConfig;
use super::settings::ScyllaSettings;
use crate::encoded::EventView;

/// One CQL batch: rows that all belong to `shard` of the node `host_id`.
pub struct TargetedBatch {
    pub(super) host_id: Uuid,
    pub(super) shard: u16,
    pub(super) events: Vec<Bytes>,
}

/// A shard's request: execute every batch, then answer on `reply`.
pub struct Job {
    pub(super) batches: Vec<TargetedBatch>,
    pub(super) reply: flume::Sender<JobOutcome>,
}

/// What became of a job's batches.
#[derive(Default)]
pub struct JobOutcome {
    /// Batches that still failed transiently after the retries (the caller retries later).
    pub(super) transient_failures: usize,
    /// The last transient error, for the log.
    pub(super) last_error: Option<String>,
    /// Events refused for good, with the reason: they go to the dead-letter spool.
    pub(super) rejected: Vec<(Vec<Bytes>, String)>,
}

#[derive(Debug, Error)]
pub enum DispatchError {
    #[error(transparent)]
    Connect(#[from] super::session::ConnectError),
    #[error(
        "cannot prepare the insert statement: {0} (a table made by an older tidegate lacks \
         columns it now writes: `tidegate schema apply` adds them)"
    )]
    Prepare(#[source] scylla::errors::PrepareError),
    #[error("cannot start the driver's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Counters the dispatcher keeps, shared with `/metrics`.
#[derive(Debug, Default)]
pub struct DispatchStats {
    /// Per target shard: accepted CQL batches.
    batches_by_target: std::sync::Mutex<HashMap<(Uuid, u16), u64>>,
    /// Latency of accepted CQL batches (µs), rows and event bytes per batch.
    latency: Histogram,
    rows_per_batch: RowsHistogram,
    bytes_per_batch: BytesHistogram,
    /// The adaptive limit of every target shard seen so far.
    limits: std::sync::Mutex<HashMap<(Uuid, u16), Arc<AdaptiveLimit>>>,
    batches: AtomicU64,
    rows: AtomicU64,
    retries: AtomicU64,
    timeouts: AtomicU64,
    overloaded: AtomicU64,
    other_errors: AtomicU64,
    rejected_rows: AtomicU64,
}

/// The shards' handle on the driver.
#[derive(Clone)]
pub struct Dispatcher {
    pub(super) session: Arc<Session>,
    pub(super) jobs: flume::Sender<Job>,
    pub stats: Arc<DispatchStats>,
    pub(super) local_datacenter: String,
    pub(super) keyspace: String,
    pub(super) table: String,
}

/// How hard to try one batch before handing the failure back to the writer.
const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(20);

impl Dispatcher {
    /// Starts the driver's runtime, connects and prepares the insert; fails fast when the
    /// cluster cannot be reached at start-up.
    pub fn start(
        settings: &ScyllaSettings,
        schema: &SchemaConfig,
    ) -> Result<Dispatcher, DispatchError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (jobs_tx, jobs_rx) = flume::unbounded::<Job>();
        let (thread_settings, insert_cql) = (settings.clone(), schema.insert());
        let threads = settings.driver_threads.max(1);
        std::thread::Builder::new()
            .name("tidegate-scylla".into())
            .spawn(move || {
                // This thread only hands jobs to the runtime's workers, which run the
                // driver's connections and the batches.
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .thread_name("tidegate-scylla-driver")
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = ready_tx.send(Err(DispatchError::Runtime(err)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let settings = thread_settings;
                    let session = match super::session::connect(&settings).await {
                        Ok(session) => Arc::new(session),
                        Err(err) => {
                            let _ = ready_tx.send(Err(err.into()));
                            return;
                        }
                    };
                    let mut insert = match session.prepare(insert_cql).await {
                        Ok(insert) => insert,
                        Err(err) => {
                            let _ = ready_tx.send(Err(DispatchError::Prepare(err)));
                            return;
                        }
                    };
                    let consistency = Consistency::from(settings.consistency);
                    insert.set_consistency(consistency);
                    let stats = Arc::new(DispatchStats::default());
                    let _ = ready_tx.send(Ok((session.clone(), stats.clone())));
                    let executor = Executor {
                        session,
                        insert,
                        consistency,
                        timeout: Duration::from_millis(settings.request_timeout_ms),
                        stats,
                        floor: settings.concurrency_floor,
                        ceiling: settings.concurrency_ceiling,
                    };
                    Arc::new(executor).run(jobs_rx).await;
                });
            })
            .map_err(DispatchError::Runtime)?;
        let (session, stats) = ready_rx
            .recv()
            .map_err(|_| DispatchError::Runtime(std::io::Error::other("driver thread died")))??;
        Ok(Dispatcher {
            session,
            jobs: jobs_tx,
            stats,
            local_datacenter: settings.local_datacenter.clone(),
            keyspace: schema.keyspace.clone(),
            table: schema.table.clone(),
        })
    }
}

impl Collector for DispatchStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let counters = [
            (
                "tidegate_scylla_batches",
                "CQL batches ScyllaDB accepted.",
                &self.batches,
            ),
            (
                "tidegate_scylla_rows",
                "Rows in accepted CQL batches.",
                &self.rows,
            ),
            (
                "tidegate_scylla_retries",
                "CQL batch attempts after a failure.",
                &self.retries,
            ),
            (
                "tidegate_scylla_rejected_rows",
                "Rows refused for good (dead-lettered).",
                &self.rejected_rows,
            ),
        ];
        observe::unlabelled_counters(&mut encoder, &counters)?;
        observe::counter(
            &mut encoder,
            "tidegate_scylla_errors",
            "Failed CQL batch attempts by kind.",
            [
                ("timeout", &self.timeouts),
                ("overloaded", &self.overloaded),
                ("other", &self.other_errors),
            ]
            .map(|(kind, value)| (vec![("kind", kind.to_owned())], value.load(Relaxed))),
        )?;
        for (name, help, histogram, scale) in [
            (
                "tidegate_scylla_write_seconds",
                "Latency of accepted CQL batches.",
                &self.latency,
                1e6,
            ),
            (
                "tidegate_scylla_rows_per_batch",
                "Rows per accepted CQL batch.",
                &self.rows_per_batch.0,
                1.0,
            ),
            (
                "tidegate_scylla_bytes_per_batch",
                "Event bytes per accepted CQL batch.",
                &self.bytes_per_batch.0,
                1.0,
            ),
        ] {
            observe::histogram(&mut encoder, name, help, scale, [(Vec::new(), histogram)])?;
        }
        let target = |host: &Uuid, shard: &u16| {
            vec![("host_id", host.to_string()), ("shard", shard.to_string())]
        };
        let mut by_target: Vec<_> = self
            .batches_by_target
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        by_target.sort();
        observe::counter(
            &mut encoder,
            "tidegate_scylla_target_batches",
            "Accepted CQL batches by target node and shard.",
            by_target
                .iter()
                .map(|((host, shard), n)| (target(host, shard), *n)),
        )?;
        let limits = self.limits.lock().unwrap();
        let mut targets: Vec<_> = limits.iter().collect();
        targets.sort_by_key(|(key, _)| **key);
        for (name, help, get) in [
            (
                "tidegate_scylla_concurrency_limit",
                "Adaptive in-flight limit per target shard.",
                AdaptiveLimit::limit as fn(&AdaptiveLimit) -> usize,
            ),
            (
                "tidegate_scylla_in_flight",
                "CQL batches in flight per target shard.",
                AdaptiveLimit::in_flight,
            ),
        ] {
            observe::gauge(
                &mut encoder,
                name,
                help,
                targets
                    .iter()
                    .map(|((host, shard), limit)| (target(host, shard), get(limit) as i64)),
            )?;
        }
        Ok(())
    }
}

struct Executor {
    session: Arc<Session>,
    insert: PreparedStatement,
    consistency: Consistency,
    timeout: Duration,
    stats: Arc<DispatchStats>,
    floor: usize,
    ceiling: usize,
}

enum Failure {
    Transient(String),
    Permanent(String),
}

impl Executor {
    /// Runs every job as it arrives: each shard has one job in flight at a time, and the
    /// shards' jobs run side by side, so one shard's slow or stalled target never holds
    /// another shard's writes. Returns once the shards are gone and their jobs answered.
    async fn run(self: Arc<Self>, jobs: flume::Receiver<Job>) {
        let mut running = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                job = jobs.recv_async() => match job {
                    Ok(job) => {
                        running.spawn(self.clone().execute(job));
                    }
                    Err(_) => break,
                },
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
        while running.join_next().await.is_some() {}
    }

    /// Executes one job's batches concurrently and answers it once.
    async fn execute(self: Arc<Self>, job: Job) {
        let mut tasks = tokio::task::JoinSet::new();
        for batch in job.batches {
            let limit = self
                .stats
                .limits
                .lock()
                .unwrap()
                .entry((batch.host_id, batch.shard))
                .or_insert_with(|| Arc::new(AdaptiveLimit::new(self.floor, self.ceiling)))
                .clone();
            let executor = self.clone();
            tasks.spawn(async move {
                let result = execute_with_retries(
                    &executor.session,
                    &executor.insert,
                    executor.consistency,
                    executor.timeout,
                    &batch,
                    &executor.stats,
                    &limit,
                )
                .await;
                (batch.events, result)
            });
        }
        let mut outcome = JobOutcome::default();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((_, Ok(()))) => {}
                Ok((_, Err(Failure::Transient(error)))) => {
                    outcome.transient_failures += 1;
                    outcome.last_error = Some(error);
                }
                Ok((events, Err(Failure::Permanent(error)))) => {
                    self.stats
                        .rejected_rows
                        .fetch_add(events.len() as u64, Relaxed);
                    outcome.rejected.push((events, error));
                }
                Err(panic) => {
                    outcome.transient_failures += 1;
                    outcome.last_error = Some(format!("batch task failed: {panic}"));
                }
            }
        }
        let _ = job.reply.send(outcome);
    }
}

async fn execute_with_retries(
    session: &Session,
    insert: &PreparedStatement,
    consistency: Consistency,
    timeout: Duration,
    batch: &TargetedBatch,
    stats: &DispatchStats,
    limit: &AdaptiveLimit,
) -> Result<(), Failure> {
    let mut cql = Batch::new(BatchType::Unlogged);
    let mut values = Vec::with_capacity(batch.events.len());
    for event in &batch.events {
        let Ok(view) = EventView::decode(event) else {
            return Err(Failure::Permanent("not a tidegate event".into()));
        };
        cql.append_statement(insert.clone());
        values.push((
            view.user_id,
            CqlTimestamp(view.event_time_ms),
            view.event_id,
            view.event_type,
            // Unset, not null, when absent: a null writes a tombstone per row.
            view.payload.map_or(MaybeUnset::Unset, MaybeUnset::Set),
            CqlTimestamp(view.received_at_ms),
            if view.source.is_empty() {
                MaybeUnset::Unset
            } else {
                MaybeUnset::Set(view.source)
            },
        ));
    }
    cql.set_consistency(consistency);
    cql.set_is_idempotent(true);
    cql.set_request_timeout(Some(timeout));
    cql.set_load_balancing_policy(Some(SingleTargetLoadBalancingPolicy::new(
        NodeIdentifier::HostId(batch.host_id),
        Some(u32::from(batch.shard)),
    )));
    let mut backoff = FIRST_BACKOFF;
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            stats.retries.fetch_add(1, Relaxed);
            // Full jitter: a random wait up to the backoff, so retries from many batches
            // do not arrive in lockstep.
            let jittered = backoff.mul_f64(fastrand_unit());
            tokio::time::sleep(jittered).await;
            backoff *= 2;
        }
        // A slot is held for the request only, never across a backoff sleep.
        let slot = limit.acquire().await;
        let started = std::time::Instant::now();
        let result = session.batch(&cql, &values).await;
        match result {
            Ok(_) => {
                let elapsed = started.elapsed();
                limit.complete(slot, Outcome::Success(elapsed));
                stats.batches.fetch_add(1, Relaxed);
                stats.rows.fetch_add(values.len() as u64, Relaxed);
                stats.latency.observe(elapsed);
                stats.rows_per_batch.0.observe_value(values.len() as u64);
                let bytes: usize = batch.events.iter().map(Bytes::len).sum();
                stats.bytes_per_batch.0.observe_value(bytes as u64);
                *stats
                    .batches_by_target
                    .lock()
                    .unwrap()
                    .entry((batch.host_id, batch.shard))
                    .or_default() += 1;
                return Ok(());
            }
            Err(err) => {
                last = err.to_string();
                let kind = classify(&err);
                limit.complete(
                    slot,
                    match kind {
                        Kind::Timeout | Kind::Overloaded => Outcome::Backpressure,
                        Kind::Permanent | Kind::Other => Outcome::Neutral,
                    },
                );
                match kind {
                    Kind::Permanent => return Err(Failure::Permanent(last)),
                    Kind::Timeout => stats.timeouts.fetch_add(1, Relaxed),
                    Kind::Overloaded => stats.overloaded.fetch_add(1, Relaxed),
                    Kind::Other => stats.other_errors.fetch_add(1, Relaxed),
                };
            }
        }
    }
    Err(Failure::Transient(last))
}

/// A uniform number in [0, 1) without a random-number crate: the low bits of a clock.
fn fastrand_unit() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

enum Kind {
    Permanent,
    Timeout,
    Overloaded,
    Other,
}

/// Retry or give up: a request the cluster refuses for what it *is* (invalid, unauthorized,
/// unserializable) will never succeed; anything about *when* or *where* (timeouts,
/// overload, unavailable replicas, broken connections) may.
fn classify(err: &ExecutionError) -> Kind {
    match err {
        ExecutionError::BadQuery(_) => Kind::Permanent,
        ExecutionError::RequestTimeout(_) => Kind::Timeout,
        ExecutionError::LastAttemptError(attempt) => match attempt {
            RequestAttemptError::SerializationError(_)
            | RequestAttemptError::CqlRequestSerialization(_) => Kind::Permanent,
            RequestAttemptError::DbError(db, _) => match db {
                DbError::Invalid
                | DbError::SyntaxError
                | DbError::Unauthorized
                | DbError::ConfigError
                | DbError::AlreadyExists { .. } => Kind::Permanent,
                DbError::Overloaded | DbError::RateLimitReached { .. } => Kind::Overloaded,
                DbError::WriteTimeout { .. } | DbError::ReadTimeout { .. } => Kind::Timeout,
                _ => Kind::Other,
            },
            _ => Kind::Other,
        },
        _ => Kind::Other,
    }
}
