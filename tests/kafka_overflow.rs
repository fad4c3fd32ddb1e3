//! The Kafka overflow against a real Kafka-compatible broker (tansu, installed by
//! `scripts/install-tansu.sh`): spilling while the sink is stalled, 503 while the broker
//! is down, no loss across a broker restart, the hot-key limit, and the drain writing every
//! spilled event back — to the CQL test node, matched by event_id.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

mod support;

use support::broker::Broker;
use support::testnode::{wait_drained, TestNode};
use support::Server;

/// Posts `requests` requests of `per_request` events (users from `user`), and sorts the
/// event_ids by the answer: (accepted, refused). Panics on anything but 202 or 503.
fn post_batches(
    server: &Server,
    series: u32,
    requests: u64,
    per_request: u64,
    user: impl Fn(u64, u64) -> String,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut accepted, mut refused) = (BTreeSet::new(), BTreeSet::new());
    for r in 0..requests {
        let ids: Vec<String> = (0..per_request)
            .map(|k| support::uuid(series, r * per_request + k))
            .collect();
        let body = support::json_array(
            ids.iter()
                .enumerate()
                .map(|(k, id)| support::event(&user(r, k as u64), id)),
        );
        let response = server.post_json(&body);
        match response.status {
            202 => accepted.extend(ids),
            503 => {
                assert!(response.header("retry-after").is_some());
                refused.extend(ids)
            }
            other => panic!("unexpected {other}: {}", response.text()),
        }
    }
    (accepted, refused)
}

/// Waits (bounded) until `metric` reaches `at_least`.
fn wait_metric(server: &Server, metric: &str, at_least: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let value = server.metric(metric);
        if value >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{metric} stayed at {value}, expected at least {at_least}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The accounting identity of the overflow: accepted = flushed + spilled + in rings (+
/// with durable acknowledgement, kept on disk only: waiting, or stored by the spool-log).
fn assert_outcomes_add_up(server: &Server) {
    let metrics = server.get("/metrics").text();
    let sum = |name| support::metric_sum(&metrics, name);
    assert_eq!(
        sum("tidegate_events_accepted_total"),
        sum("tidegate_sink_events_total")
            + sum("tidegate_kafka_spilled_events_total")
            + sum("tidegate_ring_events")
            + sum("tidegate_log_backlog_events")
            + sum("tidegate_log_stored_events_total"),
        "{metrics}"
    );
}

#[test]
fn a_stalled_cluster_spills_and_the_drain_writes_every_event_back() {
    let broker = Broker::start();
    let node = TestNode::start(1, 2);
    node.apply_schema();
    let contact = format!("127.0.0.1:{}", node.port);
    let server = Server::start_with_env(
        &["--shards", "1", "--sink", "scylla"],
        &[
            ("TIDEGATE_SCYLLA_CONTACT_POINTS", &contact),
            ("TIDEGATE_SCYLLA_REQUEST_TIMEOUT_MS", "300"),
            ("TIDEGATE_RING_CAPACITY_EVENTS", "50"),
            ("TIDEGATE_LIMITS_MAX_EVENTS_PER_REQUEST", "10"),
            // The ring alone holds 50 events, so the rest spills: memory acknowledgement
            // (with durable acknowledgement the log would keep the requests first).
            ("TIDEGATE_DURABILITY_ACK", "memory"),
            ("TIDEGATE_KAFKA_BROKERS", &broker.address()),
            ("TIDEGATE_KAFKA_PARTITIONS", "3"),
            ("TIDEGATE_KAFKA_ACK_DEADLINE_MS", "10000"),
            ("TIDEGATE_KAFKA_DRAIN", "true"),
        ],
    );
    node.control("fault 0 stall on");

    let (accepted, refused) = post_batches(&server, 60, 30, 10, |r, k| format!("u{r}-{k}"));
    assert!(
        refused.is_empty(),
        "with the overflow up, a stalled sink costs no 503s ({} refused)",
        refused.len()
    );
    let spilled = server.metric("tidegate_kafka_spilled_events_total");
    assert!(
        spilled >= 250,
        "the ring holds 50 events; the rest must have spilled ({spilled})"
    );
    assert_eq!(
        server.metric("tidegate_events_rejected_total"),
        0,
        "no event refused"
    );
    let ready = server.get("/ready");
    assert_eq!(ready.status, 200, "spilling is degraded, not unready");
    assert!(
        ready.json()["degraded"]
            .as_array()
            .is_some_and(|d| !d.is_empty()),
        "{}",
        ready.text()
    );
    assert_eq!(
        server.metric("tidegate_kafka_drain_paused"),
        1,
        "the drain leaves a struggling sink alone"
    );
    assert_outcomes_add_up(&server);

    node.control("clear");
    wait_drained(&server);
    wait_metric(
        &server,
        "tidegate_kafka_drained_events_total",
        spilled,
        Duration::from_secs(60),
    );
    assert_outcomes_add_up(&server);
    assert!(server.metric("tidegate_kafka_drain_pauses_total") >= 1);
    // librdkafka reports the consumer's lag once a second: one series per partition,
    // zero once everything is drained and committed.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = server.get("/metrics").text();
        let lags: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("tidegate_kafka_drain_lag_messages{"))
            .collect();
        if lags.len() == 3 && lags.iter().all(|l| l.ends_with(" 0")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "drain lag never settled: {lags:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let stored = node.stored_event_ids();
    assert_eq!(
        stored, accepted,
        "every accepted event, from the ring or through the overflow, is stored"
    );
}

#[test]
fn a_stopped_broker_means_503_and_a_restart_loses_nothing_acknowledged() {
    let mut broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let stall = dir.path().join("stall");
    std::fs::write(&stall, b"").unwrap();
    let mut server = Server::start_with_env(
        &[
            "--shards",
            "1",
            "--test-stall-file",
            stall.to_str().unwrap(),
        ],
        &[
            // The spool sink stalls: ring full means spill only with memory acknowledgement
            // (with durable acknowledgement the spool-log would keep the requests).
            ("TIDEGATE_DURABILITY_ACK", "memory"),
            ("TIDEGATE_RING_CAPACITY_EVENTS", "40"),
            ("TIDEGATE_LIMITS_MAX_EVENTS_PER_REQUEST", "10"),
            ("TIDEGATE_KAFKA_BROKERS", &broker.address()),
            ("TIDEGATE_KAFKA_PARTITIONS", "2"),
            ("TIDEGATE_KAFKA_ACK_DEADLINE_MS", "1500"),
            ("TIDEGATE_KAFKA_DRAIN", "true"),
            // tansu 0.6.0's SQLite engine panics on the epoch bump an idempotent producer
            // makes after an outage, and then fails every produce (README, "tansu").
            ("TIDEGATE_KAFKA_IDEMPOTENCE", "false"),
        ],
    );

    // Spill while the broker is up: everything accepted.
    let (mut accepted, refused) = post_batches(&server, 61, 12, 10, |r, _| format!("u{r}"));
    assert!(refused.is_empty());
    assert!(server.metric("tidegate_kafka_spilled_events_total") >= 80);

    // Broker gone: the ring is full and the spill cannot be acknowledged.
    broker.stop();
    let (none, mut refused) = post_batches(&server, 62, 3, 10, |r, _| format!("v{r}"));
    assert!(none.is_empty(), "nothing can be accepted: {none:?}");
    assert_eq!(refused.len(), 30);
    let response = server.post_json(&support::json_array([support::event(
        "w",
        &support::uuid(63, 0),
    )]));
    assert_eq!(response.status, 503);
    assert_eq!(response.json()["cause"], "overflow_unavailable");
    refused.insert(support::uuid(63, 0));
    assert_eq!(
        server.get("/ready").status,
        503,
        "a refusing spill is unready"
    );
    let metrics = server.get("/metrics").text();
    assert!(
        metrics.contains("tidegate_kafka_produce_errors_total{kind=\"deadline\"} 4"),
        "{metrics}"
    );

    // Back on its own data: spilling resumes (librdkafka reconnects within seconds).
    broker.resume();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut series = 64;
    loop {
        let (more, failed) = post_batches(&server, series, 2, 10, |r, _| format!("x{r}"));
        accepted.extend(more);
        refused.extend(failed.iter().cloned());
        if failed.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "spilling never resumed");
        series += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_outcomes_add_up(&server);

    // The sink recovers: the ring drains, the drain resumes and writes the topic into
    // DATA_DIR/drained. Everything answered 202 is stored, before and after the restart.
    std::fs::remove_file(&stall).unwrap();
    let spilled = server.metric("tidegate_kafka_spilled_events_total");
    wait_metric(
        &server,
        "tidegate_kafka_drained_events_total",
        spilled,
        Duration::from_secs(60),
    );
    assert!(server.terminate().success());
    let (events, damage) = server.spool_cat();
    assert!(damage.contains(" 0 damaged and 0 torn"), "{damage}");
    let stored = support::event_ids(&events);
    let missing: Vec<_> = accepted.difference(&stored).collect();
    assert!(missing.is_empty(), "lost after 202: {missing:?}");
    // Events of refused requests may still arrive (the broker can take an event after its
    // deadline); nothing else may.
    let extra: BTreeSet<_> = stored.difference(&accepted).cloned().collect();
    assert!(extra.is_subset(&refused), "{extra:?}");
}

#[test]
fn a_hot_user_goes_to_the_overflow_while_others_use_the_ring() {
    let broker = Broker::start();
    let server = Server::start_with_env(
        &["--shards", "1"],
        &[
            ("TIDEGATE_KAFKA_BROKERS", &broker.address()),
            ("TIDEGATE_KAFKA_PARTITIONS", "2"),
            ("TIDEGATE_KAFKA_HOT_KEY_EVENTS_PER_SECOND", "5"),
            ("TIDEGATE_KAFKA_HOT_KEY_BURST", "20"),
            ("TIDEGATE_KAFKA_DRAIN", "true"),
        ],
    );
    // Each request: 10 events of one hot user and 10 of ten calm users.
    let (accepted, refused) = post_batches(&server, 70, 10, 20, |r, k| {
        if k < 10 {
            "hot".to_owned()
        } else {
            format!("calm-{r}-{k}")
        }
    });
    assert!(refused.is_empty());
    let hot = server.metric("tidegate_kafka_hot_key_events_total");
    // 100 hot events against a burst of 20 and 5/s: at least 70 over the limit.
    assert!((70..=100).contains(&hot), "hot-key events spilled: {hot}");
    assert_eq!(
        server.metric("tidegate_kafka_spilled_events_total"),
        hot,
        "only the hot user's excess is spilled: the ring had room"
    );
    wait_metric(
        &server,
        "tidegate_kafka_drained_events_total",
        hot,
        Duration::from_secs(60),
    );
    assert_outcomes_add_up(&server);
    let mut server = server;
    assert!(server.terminate().success());
    let (events, _) = server.spool_cat();
    assert_eq!(support::event_ids(&events), accepted);
}

/// The producer's queue bounds what a spill may hold: a request that cannot fit is refused
/// at once, without waiting for any broker (none is reachable here).
#[test]
fn a_full_producer_queue_means_503_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let stall = dir.path().join("stall");
    std::fs::write(&stall, b"").unwrap();
    let server = Server::start_with_env(
        &[
            "--shards",
            "1",
            "--test-stall-file",
            stall.to_str().unwrap(),
        ],
        &[
            // The spool sink stalls: ring full means spill only with memory acknowledgement
            // (with durable acknowledgement the spool-log would keep the requests).
            ("TIDEGATE_DURABILITY_ACK", "memory"),
            ("TIDEGATE_RING_CAPACITY_EVENTS", "10"),
            ("TIDEGATE_LIMITS_MAX_EVENTS_PER_REQUEST", "10"),
            // Nothing listens on port 1.
            ("TIDEGATE_KAFKA_BROKERS", "127.0.0.1:1"),
            ("TIDEGATE_KAFKA_CREATE_TOPIC", "false"),
            ("TIDEGATE_KAFKA_QUEUE_MAX_MESSAGES", "5"),
        ],
    );
    let (accepted, _) = post_batches(&server, 80, 1, 10, |_, k| format!("u{k}"));
    assert_eq!(accepted.len(), 10, "the ring takes the first request");
    let started = Instant::now();
    let response = server.post_json(&support::json_array(
        (0..10).map(|k| support::event("u", &support::uuid(81, k))),
    ));
    assert_eq!(response.status, 503, "{}", response.text());
    assert_eq!(response.json()["cause"], "overflow_saturated");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused without waiting on a broker"
    );
    let metrics = server.get("/metrics").text();
    assert!(metrics.contains("tidegate_kafka_produce_errors_total{kind=\"queue_full\"} 1"));
    assert_eq!(
        support::metric_sum(&metrics, "tidegate_events_accepted_total"),
        10
    );
}

/// `tidegate drain` as a process of its own: a server spills (no in-process drain), and the
/// standalone drain writes every spilled event into its sink, then stops on SIGTERM.
#[test]
fn the_standalone_drain_writes_what_a_server_spilled() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let stall = dir.path().join("stall");
    std::fs::write(&stall, b"").unwrap();
    let server = Server::start_with_env(
        &[
            "--shards",
            "1",
            "--test-stall-file",
            stall.to_str().unwrap(),
        ],
        &[
            // The spool sink stalls: ring full means spill only with memory acknowledgement
            // (with durable acknowledgement the spool-log would keep the requests).
            ("TIDEGATE_DURABILITY_ACK", "memory"),
            ("TIDEGATE_RING_CAPACITY_EVENTS", "10"),
            ("TIDEGATE_LIMITS_MAX_EVENTS_PER_REQUEST", "10"),
            ("TIDEGATE_KAFKA_BROKERS", &broker.address()),
            ("TIDEGATE_KAFKA_PARTITIONS", "2"),
        ],
    );
    let (accepted, refused) = post_batches(&server, 90, 8, 10, |r, k| format!("s{r}-{k}"));
    assert!(refused.is_empty());
    let spilled = server.metric("tidegate_kafka_spilled_events_total");
    assert_eq!(spilled, 70, "all but the ring's 10 events spilled");

    let (drained, stderr) = drain_standalone(&broker, &dir.path().join("drain-data"), 70);
    assert!(drained.is_subset(&accepted));
    assert!(stderr.contains("70 events written"), "{stderr}");
}

/// Runs `tidegate drain` (spool sink into `data_dir`) until it has written at least
/// `expected` events, then stops it with SIGTERM; returns the drained event_ids and its
/// stderr, having checked that it exited cleanly.
fn drain_standalone(
    broker: &Broker,
    data_dir: &std::path::Path,
    expected: usize,
) -> (BTreeSet<String>, String) {
    let mut drain = std::process::Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(["drain", "--kafka-brokers", &broker.address(), "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let drained = loop {
        let ids = if data_dir.join("drained").exists() {
            support::event_ids(&support::spool_cat(&data_dir.join("drained")).0)
        } else {
            BTreeSet::new()
        };
        if ids.len() >= expected {
            break ids;
        }
        assert!(Instant::now() < deadline, "drained only {}", ids.len());
        std::thread::sleep(Duration::from_millis(100));
    };
    support::signal(drain.id(), "TERM");
    let status = support::wait_timeout(&mut drain, Duration::from_secs(30)).expect("drain exits");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut drain.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    (drained, stderr)
}

/// A stop while the sink fails for good, with memory acknowledgement: without an
/// overflow the writer would retry forever; with one, each batch the sink refuses is
/// spilled, the server exits, and the drain delivers every accepted event later. (With
/// durable acknowledgement those events stay in the log instead: tests/durable_ack.rs.)
#[test]
fn a_stop_with_a_failing_sink_hands_the_ring_to_the_overflow() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let fail = dir.path().join("fail");
    std::fs::write(&fail, b"").unwrap();
    let mut server = Server::start_with_env(
        &[
            "--shards",
            "1",
            "--ack",
            "memory",
            "--test-fail-file",
            fail.to_str().unwrap(),
        ],
        &[
            ("TIDEGATE_KAFKA_BROKERS", &broker.address()),
            ("TIDEGATE_KAFKA_PARTITIONS", "2"),
        ],
    );
    let (accepted, refused) = post_batches(&server, 95, 5, 10, |r, k| format!("f{r}-{k}"));
    assert!(refused.is_empty());
    assert_eq!(
        server.metric("tidegate_kafka_spilled_events_total"),
        0,
        "the ring had room: nothing spilled while serving"
    );
    let started = Instant::now();
    assert!(server.terminate().success(), "the stop completes");
    assert!(started.elapsed() < Duration::from_secs(30));
    let (events, _) = server.spool_cat();
    assert!(events.is_empty(), "the failing sink stored nothing");

    let (drained, _) = drain_standalone(&broker, &dir.path().join("drain-data"), 50);
    assert_eq!(
        drained, accepted,
        "every accepted event reached the overflow"
    );
}
