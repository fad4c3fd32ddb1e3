//! The process: sockets, one pinned thread per shard, signals, and orderly exit.

use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use glommio::{LocalExecutorBuilder, Placement};
use sd_notify::NotifyState;
use thiserror::Error;

use super::config::Config;
use super::shard::{self, ShardSetup};
use crate::admission::EdgeState;
use crate::ingress::{self, ApiKeys, IngressMetrics, ServerTls, Shared};
use crate::log::{LogStats, LogsCollector};
use crate::observe::Registry;
use crate::overflow::{self, OverflowProducer, OverflowStats};
use crate::ring::{RingLoad, RingsCollector};
use crate::shutdown::Shutdown;
use crate::sink::{SinkFactory, SinkSettings};
use crate::writer::{WriterStats, WritersCollector};

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start shard {shard}: {message}")]
    Start { shard: usize, message: String },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkStartError),
    #[error("cannot start the Kafka overflow: {0}")]
    Overflow(#[from] crate::overflow::OverflowError),
    #[error("cannot start the drain: {0}")]
    Drain(#[from] crate::overflow::DrainError),
    #[error(transparent)]
    Keys(#[from] ingress::KeysError),
    #[error("cannot start TLS: {0}")]
    Tls(#[from] ingress::TlsError),
    #[error("shard {shard} failed: {message}")]
    Shard { shard: usize, message: String },
}

/// Runs the server until SIGTERM or SIGINT has been handled and every ring drained.
pub fn run(config: Config, sink_settings: SinkSettings) -> Result<(), ServerError> {
    let config = Arc::new(config);
    let shards = config.shard_count();
    let addr = config.listen_addr().expect("validated");
    let (sockets, bound) = ingress::bind_reuseport(addr, shards, config.server.backlog)
        .map_err(|source| ServerError::Listen { addr, source })?;
    let mut admin = match config.admin_listen_addr().expect("validated") {
        Some(addr) => {
            let (mut sockets, bound) = ingress::bind_reuseport(addr, 1, config.server.backlog)
                .map_err(|source| ServerError::Listen { addr, source })?;
            Some((sockets.remove(0), bound))
        }
        None => None,
    };
    let admin_bound = admin.as_ref().map(|(_, bound)| *bound);
    let sinks = SinkFactory::start(sink_settings)?;
    let mut registry = Registry::default();
    let ingress_metrics = Arc::new(IngressMetrics::new(shards));
    registry.register_collector(Box::new(ingress_metrics.clone()));
    let ring_loads: Vec<Arc<RingLoad>> = (0..shards)
        .map(|_| {
            Arc::new(RingLoad::new(
                config.ring_capacity(),
                config.ring.high_water_percent,
            ))
        })
        .collect();
    registry.register_collector(Box::new(RingsCollector(ring_loads.clone())));
    let writers: Vec<Arc<WriterStats>> = (0..shards).map(|_| Arc::default()).collect();
    registry.register_collector(Box::new(WritersCollector(writers.clone())));
    let logs: Vec<Arc<LogStats>> = (0..shards).map(|_| Arc::default()).collect();
    if config.durability.is_durable() {
        registry.register_collector(Box::new(LogsCollector(logs.clone())));
    }
    if let Some(dispatcher) = sinks.dispatcher() {
        registry.register_collector(Box::new(dispatcher.stats.clone()));
    }
    let producer = if config.overflow_enabled() {
        let producer = start_overflow(&config)?;
        registry.register_collector(Box::new(producer.stats.clone()));
        Some(producer)
    } else {
        None
    };
    let shutdown = Arc::new(Shutdown::default());
    let cors = Arc::new(config.cors_policy().expect("validated"));
    let keys = match config.auth.keys_file.as_str() {
        "" => {
            if !addr.ip().is_loopback() {
                tracing::warn!(
                    listen = %addr,
                    "no auth.keys_file: any client that reaches this address can post events"
                );
            }
            None
        }
        path => {
            let keys = Arc::new(ApiKeys::load(std::path::Path::new(path))?);
            tracing::info!(
                keys_file = path,
                keys = keys.keys().len(),
                "API keys required"
            );
            registry.register_collector(Box::new(keys.clone()));
            Some(keys)
        }
    };
    let tls = if config.tls_settings().is_on() {
        let tls = Arc::new(ServerTls::load(&config.tls_settings())?);
        tracing::info!(
            cert_file = %tls.cert_path().display(),
            not_after = tls.not_after(),
            "TLS on the ingest listener"
        );
        registry.register_collector(Box::new(tls.clone()));
        Some(tls)
    } else {
        None
    };
    let edge = Arc::new(EdgeState {
        shutdown: shutdown.clone(),
        shards: ring_loads
            .iter()
            .cloned()
            .zip(writers.iter().cloned())
            .collect(),
        overflow: producer.as_ref().map(|producer| producer.stats.clone()),
        logs: if config.durability.is_durable() {
            logs.clone()
        } else {
            Vec::new()
        },
    });
    let registry = Arc::new(registry);
    watch_signals(
        shutdown.clone(),
        Reloadable {
            keys: keys.clone(),
            tls: tls.clone(),
        },
    )?;
    let stop_drain = Arc::new(AtomicBool::new(false));
    let drain = match &producer {
        Some(producer) if config.kafka.drain => {
            let pressure = edge.clone();
            Some(overflow::spawn_drain(
                config.kafka.clone(),
                sinks.clone(),
                producer.stats.clone(),
                Box::new(move || pressure.drain_pressure()),
                stop_drain.clone(),
            )?)
        }
        _ => None,
    };

    let cpus = if config.server.pin_cores {
        allowed_cpus()
    } else {
        Vec::new()
    };
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let mut handles = Vec::with_capacity(shards);
    for (id, socket) in sockets.into_iter().enumerate() {
        let placement = match shard_cpu(&cpus, id) {
            Some(cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        let setup = ShardSetup {
            id,
            config: config.clone(),
            socket,
            admin_socket: if id == 0 {
                admin.take().map(|(socket, _)| socket)
            } else {
                None
            },
            shared: Shared {
                metrics: ingress_metrics.clone(),
                registry: registry.clone(),
                edge: edge.clone(),
                cors: cors.clone(),
                keys: keys.clone(),
                tls: tls.clone(),
            },
            ring_load: ring_loads[id].clone(),
            writer: writers[id].clone(),
            log_stats: logs[id].clone(),
            sinks: sinks.clone(),
            producer: producer.clone(),
            started: started_tx.clone(),
        };
        let mut builder =
            LocalExecutorBuilder::new(placement).name(&format!("tidegate-shard-{id}"));
        if config.server.spin_before_park_us > 0 {
            builder = builder.spin_before_park(std::time::Duration::from_micros(
                config.server.spin_before_park_us,
            ));
        }
        let handle = builder
            .spawn(move || shard::run(setup))
            .map_err(|e| ServerError::Start {
                shard: id,
                message: e.to_string(),
            })?;
        handles.push(handle);
    }
    drop(started_tx);

    let mut startup_error = None;
    for _ in 0..shards {
        match started_rx.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(message)) => {
                startup_error.get_or_insert(ServerError::Start { shard: 0, message });
            }
            Err(_) => break,
        }
    }
    if startup_error.is_some() {
        shutdown.request();
    } else {
        // A stable first line on stdout: scripts and tests read the bound address from it.
        // The admin address follows in the same write (formatted first: `println!` writes
        // each piece as it comes, a line at a time), and a failed write is ignored: a
        // reader that took the first line and closed the pipe must not stop the server.
        let admin_line = admin_bound.map_or(String::new(), |admin| {
            format!("tidegate: admin (metrics, health, ready) on http://{admin}\n")
        });
        let scheme = if tls.is_some() { "https" } else { "http" };
        let announcement = format!(
            "tidegate: listening on {scheme}://{bound} ({shards} shards, sink {})\n{admin_line}",
            config.sink.kind
        );
        let mut stdout = std::io::stdout().lock();
        let _ = stdout
            .write_all(announcement.as_bytes())
            .and_then(|()| stdout.flush());
        tracing::info!(%bound, shards, sink = %config.sink.kind, admin = ?admin_bound, "serving");
        // systemd (Type=notify) starts what depends on us only now that every shard listens.
        tell_systemd(&[
            NotifyState::Ready,
            NotifyState::Status(&format!("serving on {bound}, {shards} shards")),
        ]);
    }

    let mut first_error = startup_error;
    for (id, handle) in handles.into_iter().enumerate() {
        let failure = match handle.join() {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(err.to_string()),
            Err(err) => Some(err.to_string()),
        };
        if let Some(message) = failure {
            tracing::error!(shard = id, %message, "shard failed");
            first_error.get_or_insert(ServerError::Shard { shard: id, message });
        }
    }
    if let Some(drain) = drain {
        stop_drain.store(true, Relaxed);
        match drain.join() {
            Ok(Ok(summary)) => tracing::info!(events = summary.events, "drain stopped"),
            Ok(Err(err)) => tracing::error!(error = %err, "drain failed"),
            Err(err) => tracing::error!(error = %err, "drain thread failed"),
        }
    }
    if let Some(producer) = &producer {
        // Every 202 was acknowledged already; this only settles orphans of refused requests.
        producer.flush(std::time::Duration::from_secs(5));
    }
    let accepted = ingress_metrics.events_accepted();
    let flushed: u64 = writers.iter().map(|w| w.events_flushed()).sum();
    let in_rings: u64 = ring_loads.iter().map(|r| r.events()).sum();
    tracing::info!(accepted, flushed, in_rings, "stopped");
    first_error.map_or(Ok(()), Err)
}

/// Creates the overflow topic if needed and the shared producer. A broker that cannot be
/// reached at start-up does not stop the server: requests that need the producer get 503
/// until it is back, as they would without an overflow.
fn start_overflow(config: &Config) -> Result<Arc<OverflowProducer>, ServerError> {
    let kafka = &config.kafka;
    if kafka.create_topic {
        match overflow::ensure_topic(kafka) {
            Ok(true) => tracing::info!(topic = %kafka.topic, "created the overflow topic"),
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(error = %err, "overflow topic not verified; spills will fail until it exists")
            }
        }
    }
    let stats = Arc::new(OverflowStats::default());
    Ok(Arc::new(OverflowProducer::connect(kafka, stats)?))
}

/// SIGTERM or SIGINT starts a graceful shutdown; a second one is logged and ignored, since
/// exiting then could lose accepted events. SIGHUP reloads the API keys and the TLS
/// certificate.
fn watch_signals(shutdown: Arc<Shutdown>, reloadable: Reloadable) -> Result<(), ServerError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(ServerError::Signals)?;
    std::thread::Builder::new()
        .name("tidegate-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGHUP {
                    match NotifyState::monotonic_usec_now() {
                        Ok(now) => tell_systemd(&[NotifyState::Reloading, now]),
                        Err(_) => tell_systemd(&[NotifyState::Reloading]),
                    }
                    reloadable.reload();
                    tell_systemd(&[NotifyState::Ready]);
                } else if shutdown.is_requested() {
                    tracing::warn!(signal, "already draining; waiting for rings to empty");
                } else {
                    tracing::info!(signal, "shutting down: draining rings into the sink");
                    tell_systemd(&[NotifyState::Stopping]);
                    shutdown.request();
                }
            }
        })
        .map_err(ServerError::Signals)?;
    Ok(())
}

/// Sends `state` to systemd's notification socket; nothing when not run by systemd
/// (`NOTIFY_SOCKET` unset). A failure is logged, never fatal: serving matters more.
fn tell_systemd(state: &[NotifyState]) {
    if let Err(err) = sd_notify::notify(false, state) {
        tracing::warn!(error = %err, "cannot notify systemd");
    }
}

/// What SIGHUP reloads: what can change without a restart takes effect for the next
/// request (keys) or connection (certificate); open connections stay. A file that does not
/// load leaves what was in force.
struct Reloadable {
    keys: Option<Arc<ApiKeys>>,
    tls: Option<Arc<ServerTls>>,
}

impl Reloadable {
    fn reload(&self) {
        if self.keys.is_none() && self.tls.is_none() {
            tracing::info!("SIGHUP: nothing to reload (no auth.keys_file, no TLS)");
        }
        if let Some(keys) = &self.keys {
            match keys.reload() {
                Ok(count) => {
                    tracing::info!(keys_file = %keys.path().display(), keys = count, "SIGHUP: API keys reloaded")
                }
                Err(err) => {
                    tracing::error!(error = %err, "SIGHUP: API keys not reloaded; the previous keys stay in force")
                }
            }
        }
        if let Some(tls) = &self.tls {
            match tls.reload() {
                Ok(validity) => {
                    tracing::info!(cert_file = %tls.cert_path().display(), not_after = validity.not_after, "SIGHUP: TLS certificate reloaded")
                }
                Err(err) => {
                    tracing::error!(error = %err, "SIGHUP: TLS certificate not reloaded; the previous one stays in force")
                }
            }
        }
    }
}

/// The CPUs this process may run on (its affinity mask, as `taskset` or systemd's
/// `CPUAffinity` set it), lowest first. Empty if the mask cannot be read.
///
/// Not glommio's `CpuSet::online()`: that lists every online CPU in no fixed order, so a
/// server started under `taskset -c 0` pinned its one shard to CPU 0 in some runs and to
/// CPU 1, beside the load generator, in others (issue 12's bimodal throughput).
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let read = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if read != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: cpu is below CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// The CPU shard `id` is pinned to: the allowed CPUs in order, wrapping when there are
/// more shards than CPUs; none (unpinned) when no CPU is known.
fn shard_cpu(allowed: &[usize], id: usize) -> Option<usize> {
    (!allowed.is_empty()).then(|| allowed[id % allowed.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_take_the_allowed_cpus_in_order_and_wrap() {
        let allowed = [2, 5, 7];
        let placed: Vec<_> = (0..5).map(|id| shard_cpu(&allowed, id)).collect();
        assert_eq!(placed, [Some(2), Some(5), Some(7), Some(2), Some(5)]);
        assert_eq!(shard_cpu(&[], 0), None);
    }

    #[test]
    fn the_allowed_cpus_are_this_process_mask_in_order() {
        let allowed = allowed_cpus();
        assert!(!allowed.is_empty());
        assert!(allowed.windows(2).all(|pair| pair[0] < pair[1]));
        let parallelism = std::thread::available_parallelism().unwrap().get();
        assert_eq!(allowed.len(), parallelism);
    }
}
