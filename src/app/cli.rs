//! The command line: parsing arguments, setting up logging, and running each subcommand.
//!
//! Errors are reported here, at the edge, with context; configuration errors exit with
//! status 2 (as clap does for bad flags), runtime failures with 1.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use super::config::{Config, LogFormat, Override};
use crate::sink::spool;

#[derive(Debug, Parser)]
#[command(
    name = "tidegate",
    version,
    about = "Thread-per-core HTTP event ingest edge",
    long_about = "Thread-per-core HTTP event ingest edge.\n\n\
        Configuration layers, lowest to highest: built-in defaults, the TOML file given \
        with --config, TIDEGATE_<SECTION>_<KEY> environment variables (for example \
        TIDEGATE_LIMITS_MAX_BODY_BYTES), and the flags below. `tidegate config print` shows \
        every key and its effective value."
)]
pub struct Cli {
    #[command(flatten)]
    options: Options,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Args)]
pub struct Options {
    /// TOML configuration file.
    #[arg(long, global = true, env = "TIDEGATE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address every shard listens on, e.g. 0.0.0.0:8080 (server.listen).
    #[arg(long, global = true, env = "TIDEGATE_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// Number of shards, one pinned thread per core; 0 = every online core (server.shards).
    #[arg(long, global = true, env = "TIDEGATE_SHARDS", value_name = "N")]
    shards: Option<usize>,
    /// Where events go: spool (local segment files), scylla or blackhole (sink.kind).
    #[arg(long, global = true, env = "TIDEGATE_SINK", value_name = "SINK")]
    sink: Option<String>,
    /// Directory of the spool's segment files (spool.data_dir).
    #[arg(long, global = true, env = "TIDEGATE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Kafka brokers of the overflow topic, comma-separated; none = no overflow
    /// (kafka.brokers).
    #[arg(long, global = true, value_name = "HOST:PORT,...")]
    kafka_brokers: Option<String>,
    /// What a 202 promises: durable (on this node's disk) or memory (durability.ack).
    #[arg(long, global = true, value_name = "durable|memory")]
    ack: Option<String>,
    /// Log format: text or json (log.format).
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Log filter, e.g. info or tidegate=debug (log.level).
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    /// Test-only: the sink stalls while this file exists.
    #[cfg(feature = "test-hooks")]
    #[arg(long, hide = true, value_name = "FILE")]
    test_stall_file: Option<PathBuf>,
    /// Test-only: sink writes fail while this file exists.
    #[cfg(feature = "test-hooks")]
    #[arg(long, hide = true, value_name = "FILE")]
    test_fail_file: Option<PathBuf>,
    /// Test-only: write-ahead log syncs fail while this file exists.
    #[cfg(feature = "test-hooks")]
    #[arg(long, hide = true, value_name = "FILE")]
    test_fail_sync_file: Option<PathBuf>,
    /// Test-only: backlog reads through the page cache return zeros while this file exists.
    #[cfg(feature = "test-hooks")]
    #[arg(long, hide = true, value_name = "FILE")]
    test_stale_backlog_file: Option<PathBuf>,
    /// Test-only: record the log's synced length after every sync.
    #[cfg(feature = "test-hooks")]
    #[arg(long, hide = true)]
    test_record_synced: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Read a spool directory.
    Spool {
        #[command(subcommand)]
        command: SpoolCommand,
    },
    /// The ScyllaDB keyspace and table.
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
    /// Drain the Kafka overflow topic into the configured sink, as a process of its own,
    /// until SIGTERM or SIGINT (`kafka.drain = true` runs the same drain in the server).
    Drain,
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum SpoolCommand {
    /// Print every stored event as one JSON object per line; report damage on stderr.
    Cat {
        /// A data directory, one shard's directory, or one segment file.
        dir: PathBuf,
    },
    /// Write every intact event of a spool (or dead-letter spool) into the configured
    /// ScyllaDB cluster; safe to repeat (writes are idempotent).
    Replay {
        /// A data directory, one shard's directory, or one segment file.
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Print the CQL that creates the keyspace and table.
    Print,
    /// Create the keyspace and table in the configured cluster (idempotent).
    Apply,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration as TOML.
    Print,
}

impl Options {
    fn overrides(&self) -> Vec<Override> {
        let mut flags = Vec::new();
        let mut add = |key, value: Option<String>| {
            if let Some(value) = value {
                flags.push((key, value));
            }
        };
        add("server.listen", self.listen.clone());
        add("server.shards", self.shards.map(|n| n.to_string()));
        add("sink.kind", self.sink.clone());
        add(
            "spool.data_dir",
            self.data_dir.as_ref().map(|d| d.display().to_string()),
        );
        add("kafka.brokers", self.kafka_brokers.clone());
        add("durability.ack", self.ack.clone());
        add("log.format", self.log_format.clone());
        add("log.level", self.log_level.clone());
        flags
    }
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(
        cli.options.config.as_deref(),
        std::env::vars(),
        &cli.options.overrides(),
    ) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("tidegate: invalid configuration: {err}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            init_logging(&config);
            #[allow(unused_mut)] // test hooks add to it
            let mut sinks = config.sink_settings();
            #[cfg(feature = "test-hooks")]
            {
                sinks.gate = crate::sink::GateFiles {
                    stall: cli.options.test_stall_file,
                    fail: cli.options.test_fail_file,
                };
                if let Some(file) = cli.options.test_fail_sync_file {
                    let _ = crate::log::FAIL_SYNC_FILE.set(file);
                }
                if let Some(file) = cli.options.test_stale_backlog_file {
                    let _ = crate::log::STALE_BACKLOG_FILE.set(file);
                }
                let _ = crate::log::RECORD_SYNCED.set(cli.options.test_record_synced);
            }
            super::server::run(config, sinks).context("server failed")
        }
        Command::Spool {
            command: SpoolCommand::Cat { dir },
        } => spool_cat(&dir),
        Command::Spool {
            command: SpoolCommand::Replay { dir },
        } => spool_replay(&config, &dir),
        Command::Schema {
            command: SchemaCommand::Print,
        } => {
            for statement in config.schema.statements() {
                println!("{statement};");
            }
            println!(
                "-- A table made by an older tidegate needs what it lacks of these \
                 (`schema apply` checks and runs them):"
            );
            for (_, migration) in config.schema.migrations() {
                println!("-- {migration};");
            }
            Ok(())
        }
        Command::Schema {
            command: SchemaCommand::Apply,
        } => schema_apply(&config),
        Command::Drain => drain(config),
        Command::Config {
            command: ConfigCommand::Print,
        } => {
            print!("{}", config.to_toml());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tidegate: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level))
        // glommio::reactor's one message is the polled-I/O probe failing on the log's
        // write-only segments, which is intended (see segment::writer): not an error here.
        .add_directive("glommio::reactor=off".parse().expect("a valid directive"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_thread_names(true)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if config.log.format == LogFormat::Json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn schema_apply(config: &Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime for the driver")?;
    runtime.block_on(async {
        let session = crate::sink::scylla::connect(&config.scylla).await?;
        for statement in config.schema.statements() {
            session
                .query_unpaged(statement.as_str(), &[])
                .await
                .with_context(|| format!("applying: {statement}"))?;
            println!("applied: {statement}");
        }
        // CREATE … IF NOT EXISTS leaves an older table as it was: add what it lacks.
        session
            .refresh_metadata()
            .await
            .context("cannot read the table's columns")?;
        let state = session.get_cluster_state();
        let table = state
            .get_keyspace(&config.schema.keyspace)
            .and_then(|keyspace| keyspace.tables.get(&config.schema.table))
            .context("the table is not in the cluster's schema after creating it")?;
        for (column, migration) in config.schema.migrations() {
            if table.columns.contains_key(column) {
                continue;
            }
            session
                .query_unpaged(migration.as_str(), &[])
                .await
                .with_context(|| format!("applying: {migration}"))?;
            println!("applied: {migration}");
        }
        Ok(())
    })
}

fn spool_replay(config: &Config, dir: &Path) -> anyhow::Result<()> {
    init_logging(config);
    let summary = super::replay::replay(
        config.sink_settings(),
        config.batch.max_events,
        dir,
        |line| eprintln!("tidegate spool replay: {line}"),
    )
    .with_context(|| format!("cannot replay {}", dir.display()))?;
    eprintln!(
        "tidegate spool replay: {} events from {} segments written; {} damaged records skipped",
        summary.events, summary.segments, summary.damaged
    );
    Ok(())
}

fn drain(config: Config) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    init_logging(&config);
    if !config.overflow_enabled() {
        anyhow::bail!("nothing to drain: kafka.brokers is empty");
    }
    let sinks =
        crate::sink::SinkFactory::start(config.sink_settings()).context("cannot start the sink")?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .context("cannot install signal handlers")?;
    let on_signal = stop.clone();
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            on_signal.store(true, Ordering::Relaxed);
        }
    });
    let (topic, sink) = (config.kafka.topic.clone(), config.sink.kind);
    let stats = Arc::new(crate::overflow::OverflowStats::default());
    // Alone, the drain cannot see an edge's rings: it backs off only on its sink's errors.
    let handle =
        crate::overflow::spawn_drain(config.kafka.clone(), sinks, stats, Box::new(|| None), stop)?;
    println!("tidegate drain: draining topic {topic} into the {sink} sink");
    let summary = handle
        .join()
        .map_err(|e| anyhow::anyhow!("drain thread failed: {e}"))??;
    eprintln!(
        "tidegate drain: {} events written in {} batches",
        summary.events, summary.batches
    );
    Ok(())
}

fn spool_cat(dir: &Path) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, stdout.lock());
    let stderr = std::io::stderr();
    let summary = spool::cat(dir, &mut out, &mut stderr.lock())
        .with_context(|| format!("cannot read spool {}", dir.display()))?;
    out.flush().context("cannot write to stdout")?;
    eprintln!(
        "tidegate spool cat: {} events from {} segments; {} damaged and {} torn records skipped",
        summary.events, summary.segments, summary.damaged, summary.torn
    );
    Ok(())
}
