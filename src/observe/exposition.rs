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

/// The registry in Prometheus' classic text format (0.0.4), for scrapers that do not ask
/// for OpenMetrics. The two differ where a parser notices: OpenMetrics names a counter's
/// family `x` and its sample `x_total`, the classic format names both `x_total` (else
/// `promtool check metrics` finds counters without help), and it has no `# UNIT` or
/// `# EOF` lines.
pub fn render_classic(registry: &prometheus_client::registry::Registry) -> String {
    let openmetrics = render(registry);
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let family = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
            .and_then(|rest| rest.split(' ').next())
            .filter(|name| counters.contains(name));
        match family {
            Some(name) => {
                let at = "# HELP ".len() + name.len();
                out.push_str(&line[..at]);
                out.push_str("_total");
                out.push_str(&line[at..]);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge;

    #[test]
    fn the_classic_format_names_counters_by_their_samples() {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("tidegate_things", "Things seen", Counter::<u64>::default());
        registry.register("tidegate_level", "A level", Gauge::<i64>::default());
        let classic = render_classic(&registry);
        assert!(
            classic.contains("# HELP tidegate_things_total Things seen.\n")
                && classic.contains("# TYPE tidegate_things_total counter\n")
                && classic.contains("\ntidegate_things_total 0\n"),
            "{classic}"
        );
        assert!(
            classic.contains("# TYPE tidegate_level gauge\n"),
            "{classic}"
        );
        assert!(!classic.contains("# EOF"), "{classic}");
        assert!(render(&registry).contains("# TYPE tidegate_things counter"));
    }
}
