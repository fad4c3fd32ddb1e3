//! Metrics plumbing shared by every stage: a lock-free histogram, and the helpers that
//! expose stage-owned counters through `prometheus-client`.
//!
//! Each stage keeps its own counters as relaxed atomics, written on its own core without
//! contention, and implements [`Collector`] to read them at scrape time; the wiring layer
//! registers every collector in one [`Registry`], which `/metrics` encodes. No module writes
//! exposition text by hand, and the request path pays only for its atomic increments.

mod exposition;
mod histogram;

pub use exposition::{
    counter, gauge, histogram, per_shard, render, render_classic, shard_labels,
    unlabelled_counters, Labels,
};
pub use histogram::Histogram;
pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::DescriptorEncoder;
pub use prometheus_client::registry::Registry;

/// The Content-Type of what [`render`] returns.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
