//! Encoding stage-owned values as metric families, one call per family.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::Histogram;

/// A sample's labels, e.g. `[("shard", "0".into()), ("cause", "ring_full".into())]`.
pub type Labels = Vec<(&'static str, String)>;

/// The labels of shard `id`'s sample.
pub fn shard_labels(id: usize) -> Labels {
    vec![("shard", id.to_string())]
}

/// One sample per shard of what `get` reads from that shard's stats.
pub fn per_shard<'a, T>(
    stats: &'a [std::sync::Arc<T>],
    get: impl Fn(&T) -> u64 + 'a,
) -> impl Iterator<Item = (Labels, u64)> + 'a {
    stats
        .iter()
        .enumerate()
        .map(move |(id, s)| (shard_labels(id), get(s)))
}

/// A counter family: `name` gets the `_total` suffix in the exposition.
pub fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, u64)>,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        family
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
    }
    Ok(())
}

/// One unlabelled counter family per `(name, help, value)`.
pub fn unlabelled_counters(
    encoder: &mut DescriptorEncoder,
    counters: &[(&str, &str, &AtomicU64)],
) -> std::fmt::Result {
    for (name, help, value) in counters {
        counter(encoder, name, help, [(Vec::new(), value.load(Relaxed))])?;
    }
    Ok(())
}

pub fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, i64)>,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        family.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

/// A histogram family; bounds and sum are divided by `scale` (1e6 turns microseconds into
/// seconds).
pub fn histogram<'h>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    scale: f64,
    samples: impl IntoIterator<Item = (Labels, &'h Histogram)>,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, histogram) in samples {
        let (buckets, count, sum) = histogram.snapshot(scale);
        family
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
    }
    Ok(())
}

/// The registry in the OpenMetrics text format.
pub fn render(registry: &prometheus_client::registry::Registry) -> String {
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}
