//! tidegate: a thread-per-core HTTP event ingest edge.
//!
//! Modules are declared in the order data flows through them. Each core runs one shard:
//!
//! ```text
//!  POST /v1/events
//!        │
//!  ingress   (HTTP/1.1 over glommio: limits, decompression, routing)
//!        │ body
//!  event     (simd-json in place → validated, encoded events; all or nothing)
//!        │ encoded batch
//!  admission (does the whole request fit? if not: spill, or 503 + Retry-After)
//!        │                     └──▶ overflow (Kafka topic; drained back into the sink)
//!  ring      (per-core, bounded in events and bytes)
//!        │
//!  writer    (batches by count, bytes and delay; retries; never drops)
//!        │
//!  sink      (spool segment files, ScyllaDB, or blackhole)
//! ```

// 1. HTTP ingress
pub mod ingress;

// 2. Parsing and validation
pub mod event;

// 3. The 503 decision
pub mod admission;

// 3b. The Kafka overflow: spill, hot keys, drain
pub mod overflow;

// 4. The per-core ring
pub mod ring;

// 5. Batching writer
pub mod writer;

// 6. Sinks
pub mod sink;

// Wiring and cross-cutting concerns.
pub mod cli;
pub mod config;
pub mod observe;
pub mod server;
pub mod shard;
pub mod shutdown;
