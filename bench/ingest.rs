//! Criterion benchmarks of the per-core hot path, in events/s and bytes/s.
//!
//! `cargo bench --bench ingest`. Figures from these are compared only within one run
//! (see bench/README.md): the machines are shared and absolute numbers drift.

use std::io::Write;

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tidegate::event::{Arrival, BatchParser, BodyFormat, EncodedBatch};
use tidegate::ingress::{decompress, ContentEncoding};
use tidegate::ring::{Ring, RingCapacity};
use tidegate::segment::append_record;

fn event(i: usize) -> String {
    format!(
        r#"{{"user_id":"user-{i:06}","event_type":"screen_view","event_time":"2024-05-01T12:00:{:02}.123Z","event_id":"0190a3c4-5b6e-7f00-8000-{i:012x}","payload":{{"screen":"home","app_version":"4.2.1","os":"android","session":{{"id":"s-{i}","n":{i}}},"flags":[true,false,null]}}}}"#,
        i % 60
    )
}

fn bodies() -> Vec<(&'static str, Vec<u8>, BodyFormat, usize)> {
    let array: Vec<String> = (0..100).map(event).collect();
    vec![
        ("single_event", event(1).into_bytes(), BodyFormat::Json, 1),
        (
            "array_100",
            format!("[{}]", array.join(",")).into_bytes(),
            BodyFormat::Json,
            100,
        ),
        (
            "ndjson_100",
            (array.join("\n") + "\n").into_bytes(),
            BodyFormat::Ndjson,
            100,
        ),
    ]
}

fn parse_validate(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_validate");
    let mut parser = BatchParser::new(Default::default());
    let mut out = BytesMut::with_capacity(1 << 20);
    let mut batch = EncodedBatch::default();
    for (name, body, format, events) in bodies() {
        group.throughput(Throughput::Elements(events as u64));
        group.bench_function(format!("{name}/events"), |b| {
            b.iter(|| {
                // The parser copies the body it parses, so the same body serves every
                // iteration.
                out.clear();
                parser
                    .parse(&body, format, Arrival::at(0), &mut out, &mut batch)
                    .unwrap();
                black_box(batch.len())
            })
        });
    }
    // Bytes/s on the 100-event array, and the gzip path (decompress + parse).
    let (_, body, format, _) = bodies().swap_remove(1);
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("array_100/bytes", |b| {
        b.iter(|| {
            out.clear();
            parser
                .parse(&body, format, Arrival::at(0), &mut out, &mut batch)
                .unwrap();
        })
    });
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&body).unwrap();
    let gz = enc.finish().unwrap();
    let mut inflated = Vec::with_capacity(body.len());
    group.throughput(Throughput::Elements(100));
    group.bench_function("gzip_array_100/events", |b| {
        b.iter(|| {
            inflated.clear();
            decompress(ContentEncoding::Gzip, &gz, 10 << 20, &mut inflated).unwrap();
            out.clear();
            parser
                .parse(&inflated, format, Arrival::at(0), &mut out, &mut batch)
                .unwrap();
        })
    });
    group.finish();
}

fn ring_push_pop(c: &mut Criterion) {
    let mut parser = BatchParser::new(Default::default());
    let (_, body, format, _) = bodies().swap_remove(1);
    let mut out = BytesMut::new();
    let mut batch = EncodedBatch::default();
    parser
        .parse(&body, format, Arrival::at(0), &mut out, &mut batch)
        .unwrap();
    let chunk: Bytes = out.freeze();
    let mut group = c.benchmark_group("ring");
    group.throughput(Throughput::Elements(100));
    let mut ring = Ring::new(RingCapacity {
        events: 100_000,
        bytes: 64 << 20,
    });
    let mut drained = tidegate::encoded::EventBatch::with_capacity(1000);
    group.bench_function("push_100_then_drain/events", |b| {
        b.iter(|| {
            ring.push_all(&chunk, &batch.ends).unwrap();
            ring.peek_batch(1000, 1 << 20, &mut drained);
            ring.consume(drained.len());
        })
    });
    group.finish();
}

fn spool_framing(c: &mut Criterion) {
    let mut parser = BatchParser::new(Default::default());
    let (_, body, format, _) = bodies().swap_remove(1);
    let mut out = BytesMut::new();
    let mut batch = EncodedBatch::default();
    parser
        .parse(&body, format, Arrival::at(0), &mut out, &mut batch)
        .unwrap();
    let chunk = out.freeze();
    let mut start = 0;
    let events: Vec<Bytes> = batch
        .ends
        .iter()
        .map(|&end| {
            let e = chunk.slice(start..end);
            start = end;
            e
        })
        .collect();
    let mut group = c.benchmark_group("spool");
    group.throughput(Throughput::Bytes(chunk.len() as u64));
    group.bench_function("frame_100_records/bytes", |b| {
        b.iter_batched_ref(
            || Vec::with_capacity(chunk.len() + 12 * 100),
            |buf| {
                for e in &events {
                    append_record(buf, e);
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// Token computation and batch building for the ScyllaDB sink: a drained batch of 10,000
/// events from 10,000 users, over 3 nodes x 4 shards.
fn scylla_batching(c: &mut Criterion) {
    use murmur3_token::murmur3_token;
    use tidegate::sink::scylla::{CqlBatchLimits, Grouper};

    let mut parser = BatchParser::new(Default::default());
    let mut out = BytesMut::new();
    let mut batch = EncodedBatch::default();
    let mut events = tidegate::encoded::EventBatch::default();
    for chunk in 0..100 {
        let array: Vec<String> = (0..100).map(|i| event(chunk * 100 + i)).collect();
        let body = format!("[{}]", array.join(",")).into_bytes();
        out.clear();
        parser
            .parse(
                &body,
                BodyFormat::Json,
                Arrival::at(0),
                &mut out,
                &mut batch,
            )
            .unwrap();
        events.push_buffer(out.split().freeze());
        let mut start = 0;
        for &end in &batch.ends {
            events.push_range(start..end);
            start = end;
        }
    }
    // Grouping alone, with a trivial locator standing in for the cluster's ring (3 nodes x
    // 4 shards); `live_locator` below measures the real driver's replica lookup.
    let locate = |token: i64| {
        let bits = token as u64;
        ((bits % 3) as usize, (bits >> 60) as u16 % 4)
    };

    let mut group = c.benchmark_group("scylla");
    group.throughput(Throughput::Elements(events.len() as u64));
    let keys: Vec<String> = (0..events.len()).map(|i| format!("user-{i:06}")).collect();
    group.bench_function("murmur3_token_10000/events", |b| {
        b.iter(|| {
            keys.iter()
                .map(|k| murmur3_token(k.as_bytes()))
                .fold(0i64, i64::wrapping_add)
        })
    });
    let mut grouper = Grouper::default();
    let mut batches = Vec::new();
    let mut unroutable = Vec::new();
    live_locator(&mut group, &events);
    group.bench_function("group_10000/events", |b| {
        b.iter(|| {
            batches.clear();
            grouper.group(
                &events,
                locate,
                CqlBatchLimits::default(),
                &mut batches,
                &mut unroutable,
            );
            black_box(batches.len())
        })
    });
    group.finish();
}

/// What the live sink does per drain: the same grouping, with tokens located by the real
/// driver's replica locator over a 3-node, 4-shard CQL test node's metadata.
fn live_locator(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    events: &tidegate::encoded::EventBatch,
) {
    use std::io::BufRead;
    use tidegate::sink::scylla::{locate_and_group, LocalTable};
    use tidegate::sink::scylla::{CqlBatchLimits, Grouper};

    // The fixture is a crate of its own: build it beside this benchmark's binary.
    let built = std::process::Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "-p", "cql-testnode"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo");
    assert!(built.success(), "cannot build the CQL test node");
    let exe = std::env::current_exe().unwrap();
    let testnode = exe.parent().unwrap().parent().unwrap().join("cql-testnode");
    let mut node = std::process::Command::new(testnode)
        .args(["--nodes", "3", "--shards", "4", "--port", "0"])
        .args(["--shard-aware-port", "0", "--control-port", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the CQL test node");
    let mut line = String::new();
    std::io::BufReader::new(node.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    let port = words[words.iter().position(|w| *w == "port").unwrap() + 1];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let schema = tidegate::sink::scylla::SchemaConfig {
        replication_factor: 1,
        ..Default::default()
    };
    let session = runtime.block_on(async {
        let session = scylla::client::session_builder::SessionBuilder::new()
            .known_node(format!("127.0.0.1:{port}"))
            .build()
            .await
            .unwrap();
        for statement in schema.statements() {
            session
                .query_unpaged(statement.as_str(), &[])
                .await
                .unwrap();
        }
        session.refresh_metadata().await.unwrap();
        session
    });
    let state = session.get_cluster_state();
    let target = LocalTable {
        keyspace: &schema.keyspace,
        table: &schema.table,
        local_datacenter: "datacenter1",
    };
    let (mut grouper, mut hosts, mut groups, mut unroutable) =
        (Grouper::default(), Vec::new(), Vec::new(), Vec::new());
    group.bench_function("live_locate_and_group_10000/events", |b| {
        b.iter(|| {
            let unknown = locate_and_group(
                &state,
                target,
                events,
                &mut grouper,
                CqlBatchLimits::default(),
                &mut hosts,
                &mut groups,
                &mut unroutable,
            );
            assert!(!unknown && hosts.len() == 3);
            black_box(groups.len())
        })
    });
    let _ = node.kill();
    let _ = node.wait();
}

/// The cost of handing a drained batch to the driver's tokio thread and getting the answer
/// back: one flume send, a wake of the current-thread runtime, one reply. The sender here is
/// a plain thread parked in `block_on`, as a glommio shard parks awaiting the reply; the
/// job moves by ownership, so its size should not matter.
fn driver_handoff(c: &mut Criterion) {
    type Job = (Vec<Bytes>, flume::Sender<usize>);
    let (jobs_tx, jobs_rx) = flume::unbounded::<Job>();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                while let Ok((events, reply)) = jobs_rx.recv_async().await {
                    let _ = reply.send(events.len());
                }
            })
    });
    let events: Vec<Bytes> = (0..10_000)
        .map(|i| Bytes::from(event(i).into_bytes()))
        .collect();
    let mut group = c.benchmark_group("handoff");
    for (name, job) in [("empty_job", Vec::new()), ("job_10000_events", events)] {
        group.bench_function(format!("{name}/round_trip"), |b| {
            b.iter_batched(
                || job.clone(),
                |job| {
                    let (reply_tx, reply_rx) = flume::bounded(1);
                    futures_lite::future::block_on(async {
                        jobs_tx.send_async((job, reply_tx)).await.unwrap();
                        reply_rx.recv_async().await.unwrap()
                    })
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    driver_handoff,
    parse_validate,
    ring_push_pop,
    spool_framing,
    scylla_batching
);
criterion_main!(benches);
