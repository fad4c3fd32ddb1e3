//! The wiring layer: the only part of tidegate that knows every stage.
//!
//! `cli` parses arguments and runs a subcommand; `config` merges the configuration layers
//! and hands each stage its own settings; `server` starts the process (sockets, the sink
//! factory, the overflow, metrics, readiness, one thread per shard, signals); `shard`
//! assembles one core's pipeline; `replay` is the `spool replay` tool. Stages never import
//! this module.

mod cli;
mod config;
mod replay;
mod server;
mod shard;

pub use cli::main;
pub use config::{Config, ConfigError, LogConfig, LogFormat, Override};
