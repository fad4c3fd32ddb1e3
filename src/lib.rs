//! tidegate: a thread-per-core HTTP event ingest edge.
//!
//! Modules are listed in the order data flows through them: HTTP ingress accepts a body,
//! `event` parses and validates it, `admission` decides whether the shard can take it
//! (this is where a 503 is decided), `ring` holds accepted events per core, `writer` drains
//! the ring in batches, and `sink` stores them.

pub mod event;
pub mod admission;
pub mod ring;
pub mod writer;
pub mod sink;
pub mod observe;
