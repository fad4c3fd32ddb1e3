//! tidegate: a thread-per-core HTTP event ingest edge.
//!
//! # Layout
//!
//! Modules are declared in the order data flows through them. Each core runs one shard:
//!
//! ```text
//!  POST /v1/events
//!        │
//!  ingress    HTTP/1.1 over glommio: limits, timeouts, decompression, routing, answers
//!        │ body
//!  event      simd-json → validated events, all or nothing
//!        │ encoded batch
//!  admission  does the whole request fit? if not: spill, or 503 + Retry-After; /ready
//!        │                     └──▶ overflow   Kafka topic: spill, hot keys, drain back
//!  log        write-ahead log: group commit; a 202 waits for the sync (durable ack)
//!        │
//!  ring       per-core buffer, bounded in events and bytes
//!        │
//!  writer     batches by count, bytes and delay; the one retry loop; never drops
//!        │
//!  sink       spool segment files, ScyllaDB or blackhole, opened by one factory
//! ```
//!
//! A stage imports only the stages after it (downstream) and the shared modules below;
//! `tests/layering.rs` checks this. Shared by every stage, importing none:
//!
//! - `encoded`: the binary form of an accepted event, which every stage after `event`
//!   carries, and the batches of them the writer hands to sinks;
//! - `segment`: checksummed, append-only segment files on disk (the spool's and, next, the
//!   write-ahead log's);
//! - `observe`: metrics plumbing over `prometheus-client`;
//! - `shutdown`: the process-wide stop request.
//!
//! Above the stages, `app` wires them: configuration, the command line, the server and its
//! shards, and the drain and replay tools. It is the only module that knows every stage.

// The wiring layer.
pub mod app;

// The stages, in data-flow order (kept apart so that rustfmt keeps the order).
pub mod ingress;

pub mod event;

pub mod admission;

pub mod overflow;

pub mod log;

pub mod ring;

pub mod writer;

pub mod sink;

// Shared by the stages.
pub mod encoded;
pub mod observe;
pub mod segment;
pub mod shutdown;
