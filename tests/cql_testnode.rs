//! The CQL test node, driven by the real `scylla` driver.
//!
//! These tests prove the fixture is good enough to test tidegate's ScyllaDB sink against:
//! the driver connects, sees the simulated topology with shard information, creates the
//! schema, and its token- and shard-aware routing lands every write on the node and shard
//! that own its rows, as the test node's own records confirm.

use std::process::Command;

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::batch::{Batch, BatchType};

mod support;

use support::testnode::{wait_drained, TestNode};

const SCHEMA: [&str; 2] = [
    "CREATE KEYSPACE IF NOT EXISTS tidegate WITH replication = \
     {'class': 'NetworkTopologyStrategy', 'datacenter1': '1'}",
    "CREATE TABLE IF NOT EXISTS tidegate.events (user_id text, event_time timestamp, \
     event_id uuid, event_type text, payload text, received_at timestamp, \
     PRIMARY KEY ((user_id), event_time, event_id))",
];

async fn connect(node: &TestNode) -> Session {
    SessionBuilder::new()
        .known_node(format!("127.0.0.1:{}", node.port))
        .build()
        .await
        .expect("the driver connects to the test node")
}

#[tokio::test]
async fn the_driver_discovers_a_sharded_three_node_cluster() {
    let node = TestNode::start(3, 4);
    let session = connect(&node).await;
    let state = session.get_cluster_state();
    let nodes = state.get_nodes_info();
    assert_eq!(nodes.len(), 3);
    for n in nodes {
        let sharder = n.sharder().expect("the node announced its sharding");
        assert_eq!(sharder.nr_shards.get(), 4);
    }
    let mut addresses: Vec<String> = nodes.iter().map(|n| n.address.ip().to_string()).collect();
    addresses.sort();
    assert_eq!(addresses, vec!["127.0.0.1", "127.0.0.2", "127.0.0.3"]);
}

#[tokio::test]
async fn token_aware_writes_land_on_the_owning_shard() {
    let node = TestNode::start(3, 4);
    let session = connect(&node).await;
    for ddl in SCHEMA {
        session.query_unpaged(ddl, &[]).await.unwrap();
    }
    session.refresh_metadata().await.unwrap();
    let insert = session
        .prepare(
            "INSERT INTO tidegate.events (user_id, event_time, event_id, event_type, payload, received_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .await
        .unwrap();
    let write_round = |first: u32, count: u32| {
        let (session, insert) = (&session, &insert);
        async move {
            for i in first..first + count {
                let user = format!("user-{i}");
                let mut batch = Batch::new(BatchType::Unlogged);
                let mut values = Vec::new();
                for k in 0..3u32 {
                    batch.append_statement(insert.clone());
                    values.push((
                        user.clone(),
                        scylla::value::CqlTimestamp(1_700_000_000_000 + i64::from(k)),
                        uuid::Uuid::from_u128(u128::from(i) << 8 | u128::from(k)),
                        "test".to_owned(),
                        Some("{}".to_owned()),
                        scylla::value::CqlTimestamp(1_700_000_000_999),
                    ));
                }
                session.batch(&batch, values).await.unwrap();
            }
        }
    };
    // The driver opens its per-shard connections in the background after connecting; until
    // they exist it sends over whatever connection it has. Warm up until one round of
    // writes is entirely shard-correct (bounded), then measure from a clean record.
    let mut converged = false;
    for round in 0..40u32 {
        node.control("forget-writes");
        write_round(100_000 + round * 30, 30).await;
        if node.control("summary")[0]["misrouted_writes"] == 0 {
            converged = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(converged, "shard-aware routing never converged");
    node.control("forget-writes");
    let rows_before = node.control("summary")[0]["rows"].as_u64().unwrap();
    write_round(0, 200).await;

    let summary = &node.control("summary")[0];
    assert_eq!(summary["rows"].as_u64().unwrap() - rows_before, 600);
    assert_eq!(summary["writes"], 200);
    assert_eq!(summary["misrouted_writes"], 0, "{summary}");
    // The writes really were spread over every node and shard.
    let writes = node.control("writes");
    let targets: std::collections::BTreeSet<(u64, u64)> = writes
        .iter()
        .map(|w| (w["node"].as_u64().unwrap(), w["shard"].as_u64().unwrap()))
        .collect();
    assert_eq!(targets.len(), 12, "{targets:?}");
    let rows = node.control("rows");
    assert_eq!(rows[0]["table"], "events");
    assert!(rows.iter().any(|r| r["user_id"] == "user-7"));
}

#[tokio::test]
async fn tidegate_schema_apply_is_idempotent() {
    let node = TestNode::start(3, 2);
    for _ in 0..2 {
        assert!(node.apply_schema().contains("applied: CREATE TABLE"));
    }
    let session = connect(&node).await;
    session.refresh_metadata().await.unwrap();
    let state = session.get_cluster_state();
    let keyspace = state.get_keyspace("tidegate").expect("keyspace created");
    let table = keyspace.tables.get("events").expect("table created");
    assert_eq!(table.partition_key, vec!["user_id".to_owned()]);
    assert_eq!(
        table.clustering_key,
        vec!["event_time".to_owned(), "event_id".to_owned()]
    );

    let printed = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(["schema", "print"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&printed.stdout).contains("tablets = {'enabled': false}"));
}

/// HTTP to tidegate to the test node: every accepted event is stored, and every write
/// request the node receives holds only rows owned by the receiving node and shard.
#[test]
fn tidegate_writes_every_accepted_event_to_its_owning_shard() {
    let node = TestNode::start(3, 4);
    let contact = format!("127.0.0.1:{}", node.port);
    node.apply_schema();
    let mut server = support::Server::start_with_env(
        &["--shards", "2", "--sink", "scylla"],
        &[("TIDEGATE_SCYLLA_CONTACT_POINTS", &contact)],
    );

    let mut accepted = std::collections::BTreeSet::new();
    let mut post = |series: u32, first: u64, requests: u64| {
        for r in first..first + requests {
            let ids: Vec<String> = (0..10).map(|k| support::uuid(series, r * 10 + k)).collect();
            let body = support::json_array(
                ids.iter()
                    .enumerate()
                    .map(|(k, id)| support::event(&format!("user-{r}-{k}"), id)),
            );
            let response = server.post_json(&body);
            assert_eq!(response.status, 202, "{}", response.text());
            accepted.extend(ids);
        }
    };
    // Warm up until the driver's per-shard connections are open (bounded), then measure.
    let mut converged = false;
    for round in 0..40u64 {
        node.control("forget-writes");
        post(90, round * 5, 5);
        wait_drained(&server);
        if node.control("summary")[0]["misrouted_writes"] == 0 {
            converged = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(converged, "shard-aware routing never converged");
    node.control("forget-writes");
    post(91, 0, 100);
    wait_drained(&server);
    let metrics = server.get("/metrics").text();
    assert!(support::metric_sum(&metrics, "tidegate_scylla_batches_total") > 0);
    assert_eq!(
        support::metric_sum(&metrics, "tidegate_scylla_rows_total"),
        accepted.len() as u64,
        "every accepted event is one row in an accepted CQL batch"
    );
    let limits = metrics
        .lines()
        .filter(|l| l.starts_with("tidegate_scylla_concurrency_limit{"))
        .count();
    assert_eq!(limits, 12, "an adaptive limit per target shard");
    let targets = metrics
        .lines()
        .filter(|l| l.starts_with("tidegate_scylla_target_batches_total{"))
        .count();
    assert_eq!(targets, 12, "batches counted per target shard");
    let rows = support::metric_sum(&metrics, "tidegate_scylla_rows_per_batch_sum");
    let batches = support::metric_sum(&metrics, "tidegate_scylla_rows_per_batch_count");
    assert!(
        batches > 0 && rows > batches,
        "{rows} rows in {batches} batches: events are batched"
    );
    assert!(support::metric_sum(&metrics, "tidegate_scylla_write_seconds_count") > 0);
    assert!(
        server.terminate().success(),
        "SIGTERM drains the rings into ScyllaDB"
    );

    let stored = node.stored_event_ids();
    assert_eq!(
        stored, accepted,
        "every accepted event stored, nothing else"
    );
    let summary = &node.control("summary")[0];
    assert_eq!(summary["misrouted_writes"], 0, "{summary}");
    assert!(summary["writes"].as_u64().unwrap() > 0);
}

/// Overloaded nodes push back into the ring and then into 503s; nothing accepted is lost,
/// and everything is written once the cluster recovers.
#[test]
fn an_overloaded_cluster_means_503_then_full_recovery() {
    let node = TestNode::start(3, 2);
    let contact = format!("127.0.0.1:{}", node.port);
    node.apply_schema();
    let mut server = support::Server::start_with_env(
        &["--shards", "1", "--sink", "scylla"],
        &[
            ("TIDEGATE_SCYLLA_CONTACT_POINTS", &contact),
            // Back-pressure through the memory ring; with durable acknowledgement the
            // log absorbs the outage instead (tests/durable_ack.rs).
            ("TIDEGATE_DURABILITY_ACK", "memory"),
            ("TIDEGATE_RING_CAPACITY_EVENTS", "500"),
            ("TIDEGATE_LIMITS_MAX_EVENTS_PER_REQUEST", "100"),
        ],
    );
    for n in 0..3 {
        node.control(&format!("fault {n} overloaded on"));
    }
    let mut accepted = std::collections::BTreeSet::new();
    let mut refused = 0;
    for r in 0..40u64 {
        let ids: Vec<String> = (0..25).map(|k| support::uuid(95, r * 25 + k)).collect();
        let body = support::json_array(ids.iter().map(|id| support::event(&format!("u{r}"), id)));
        match server.post_json(&body).status {
            202 => accepted.extend(ids),
            503 => refused += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        refused > 0,
        "a cluster that refuses every write must push back"
    );
    assert!(accepted.len() <= 500);
    let ready = server.get("/ready");
    assert_eq!(ready.status, 503, "{}", ready.text());
    // The sink retries inside each attempt before reporting; the failure surfaces shortly.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server.metric("tidegate_sink_errors_total") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "sink errors never reported"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(server.metric("tidegate_sink_healthy"), 0);

    node.control("clear");
    wait_drained(&server);
    assert_eq!(server.get("/ready").status, 200);
    assert!(server.terminate().success());
    let stored = node.stored_event_ids();
    assert_eq!(stored, accepted);
}

#[test]
fn spool_replay_writes_a_spool_into_the_cluster() {
    // Events accepted into the spool by a tidegate without ScyllaDB...
    let mut server = support::Server::start(&["--shards", "2"]);
    let mut accepted = std::collections::BTreeSet::new();
    for r in 0..30u64 {
        let ids: Vec<String> = (0..10).map(|k| support::uuid(97, r * 10 + k)).collect();
        let body = support::json_array(
            ids.iter()
                .enumerate()
                .map(|(k, id)| support::event(&format!("replayed-{r}-{k}"), id)),
        );
        assert_eq!(server.post_json(&body).status, 202);
        accepted.extend(ids);
    }
    assert!(server.terminate().success());
    // ...with one record damaged on disk...
    let shard0 = server.data_dir.join("shard-0");
    let segment = std::fs::read_dir(&shard0)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut data = std::fs::read(&segment).unwrap();
    let damaged_at = data.len() / 2;
    data[damaged_at] ^= 0xff;
    std::fs::write(&segment, &data).unwrap();
    let intact: std::collections::BTreeSet<String> = support::event_ids(&server.spool_cat().0);
    assert!(intact.len() < accepted.len() && intact.len() + 3 > accepted.len());

    // ...are replayed into the cluster: every intact one, and again without harm.
    let node = TestNode::start(3, 2);
    let contact = format!("127.0.0.1:{}", node.port);
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
            .args(args)
            .env("TIDEGATE_SCYLLA_CONTACT_POINTS", &contact)
            .env("TIDEGATE_SCHEMA_REPLICATION_FACTOR", "1")
            .env(
                "TIDEGATE_SPOOL_DATA_DIR",
                server.data_dir.join("replay-work"),
            )
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    run(&["schema", "apply"]);
    let data_dir = server.data_dir.to_str().unwrap().to_owned();
    let report = run(&["spool", "replay", &data_dir]);
    assert!(report.contains("damaged records skipped"), "{report}");
    assert!(report.contains("skipped Damaged"), "{report}");
    let stored = node.stored_event_ids();
    assert_eq!(stored, intact);
    run(&["spool", "replay", &data_dir]);
    assert_eq!(node.control("summary")[0]["rows"], 2 * intact.len());
}

/// A stalled node and a slow node: writes owned by them time out or crawl, the ring fills,
/// clients get 503; once the node recovers every accepted event is written.
#[test]
fn a_stalled_node_means_503_and_nothing_lost() {
    let node = TestNode::start(3, 2);
    let contact = format!("127.0.0.1:{}", node.port);
    node.apply_schema();
    let mut server = support::Server::start_with_env(
        &["--shards", "1", "--sink", "scylla"],
        &[
            ("TIDEGATE_SCYLLA_CONTACT_POINTS", &contact),
            // Back-pressure through the memory ring; with durable acknowledgement the
            // log absorbs the outage instead (tests/durable_ack.rs).
            ("TIDEGATE_DURABILITY_ACK", "memory"),
            ("TIDEGATE_SCYLLA_REQUEST_TIMEOUT_MS", "300"),
            ("TIDEGATE_RING_CAPACITY_EVENTS", "500"),
            ("TIDEGATE_LIMITS_MAX_EVENTS_PER_REQUEST", "100"),
        ],
    );
    node.control("fault 0 stall on");
    node.control("fault 1 latency 100");
    let mut accepted = std::collections::BTreeSet::new();
    let mut refused = 0;
    for r in 0..40u64 {
        let ids: Vec<String> = (0..25).map(|k| support::uuid(98, r * 25 + k)).collect();
        let body = support::json_array(
            ids.iter()
                .enumerate()
                .map(|(k, id)| support::event(&format!("s{r}-{k}"), id)),
        );
        match server.post_json(&body).status {
            202 => accepted.extend(ids),
            503 => refused += 1,
            other => panic!("unexpected {other}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(refused > 0, "a stalled owner must push back");
    assert_eq!(server.get("/ready").status, 503);

    node.control("clear");
    wait_drained(&server);
    assert!(server.terminate().success());
    let stored = node.stored_event_ids();
    // Every accepted event is stored and nothing else: rows only come from the ring. A
    // write that timed out may also have landed late (the stalled node answered after its
    // stall), so rows can repeat; the primary key makes a repeat the same row.
    assert_eq!(stored, accepted);
    let rows = node.control("summary")[0]["rows"].as_u64().unwrap();
    assert!(rows >= accepted.len() as u64);
}

/// Injected latency: the adaptive limit falls, the ring fills, clients get 503; after the
/// fault clears, everything accepted is written.
#[test]
fn latency_lowers_the_adaptive_limit_and_backs_up_into_503() {
    let node = TestNode::start(1, 1);
    let contact = format!("127.0.0.1:{}", node.port);
    node.apply_schema();
    let mut server = support::Server::start_with_env(
        &["--shards", "1", "--sink", "scylla"],
        &[
            ("TIDEGATE_SCYLLA_CONTACT_POINTS", &contact),
            // Back-pressure through the memory ring; with durable acknowledgement the
            // log absorbs the outage instead (tests/durable_ack.rs).
            ("TIDEGATE_DURABILITY_ACK", "memory"),
            ("TIDEGATE_RING_CAPACITY_EVENTS", "3000"),
            ("TIDEGATE_LIMITS_MAX_EVENTS_PER_REQUEST", "100"),
        ],
    );
    let limit = |server: &support::Server| {
        support::metric_sum(
            &server.get("/metrics").text(),
            "tidegate_scylla_concurrency_limit",
        )
    };
    let mut accepted = std::collections::BTreeSet::new();
    let mut request = 0u64;
    let mut post = |server: &support::Server| {
        request += 1;
        let ids: Vec<String> = (0..100)
            .map(|k| support::uuid(96, request * 100 + k))
            .collect();
        let body = support::json_array(
            ids.iter()
                .enumerate()
                .map(|(k, id)| support::event(&format!("l{request}-{k}"), id)),
        );
        let status = server.post_json(&body).status;
        if status == 202 {
            accepted.extend(ids);
        }
        status
    };
    // Healthy: the limit grows with successful batches. On a busy test machine the small
    // ring can still fill now and then; a client retries a 503, and so does this one.
    let mut healthy_accepted = 0;
    let started = std::time::Instant::now();
    while healthy_accepted < 100 {
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
        if post(&server) == 202 {
            healthy_accepted += 1;
        } else {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    wait_drained(&server);
    let healthy = limit(&server);
    assert!(healthy > 3, "limit grew to {healthy}");

    // Slow: every request takes 30 ms more.
    // The small ring can fill before the first slow batches have come back and lowered
    // the limit, so keep the load on until both have been seen.
    node.control("fault 0 latency 30");
    let started = std::time::Instant::now();
    let mut refused = 0;
    let mut slow = healthy;
    while (refused == 0 || slow >= healthy)
        && started.elapsed() < std::time::Duration::from_secs(20)
    {
        if post(&server) == 503 {
            refused += 1;
            slow = limit(&server);
        }
    }
    assert!(refused > 0, "a slow cluster must push back");
    assert!(slow < healthy, "limit {healthy} -> {slow} under latency");

    node.control("clear");
    wait_drained(&server);
    assert_eq!(server.get("/ready").status, 200);
    assert!(server.terminate().success());
    let stored = node.stored_event_ids();
    assert_eq!(stored, accepted);
}

/// A node goes down and comes back: tidegate answers 503 for what it cannot place,
/// follows the node's return without a restart, and loses nothing.
#[test]
fn a_node_that_goes_down_and_comes_back_is_followed() {
    let node = TestNode::start(3, 2);
    node.apply_schema();
    let contact = format!("127.0.0.1:{}", node.port);
    let mut server = support::Server::start_with_env(
        &["--shards", "1", "--sink", "scylla"],
        &[
            ("TIDEGATE_SCYLLA_CONTACT_POINTS", &contact),
            // Back-pressure through the memory ring; with durable acknowledgement the
            // log absorbs the outage instead (tests/durable_ack.rs).
            ("TIDEGATE_DURABILITY_ACK", "memory"),
            ("TIDEGATE_SCYLLA_REQUEST_TIMEOUT_MS", "500"),
            ("TIDEGATE_RING_CAPACITY_EVENTS", "500"),
            ("TIDEGATE_LIMITS_MAX_EVENTS_PER_REQUEST", "100"),
        ],
    );
    let mut accepted = std::collections::BTreeSet::new();
    let mut refused = 0;
    let mut send = |server: &support::Server, r: u64, refused: &mut u32| {
        let ids: Vec<String> = (0..25).map(|k| support::uuid(94, r * 25 + k)).collect();
        let body = support::json_array(
            ids.iter()
                .enumerate()
                .map(|(k, id)| support::event(&format!("d{r}-{k}"), id)),
        );
        match server.post_json(&body).status {
            202 => accepted.extend(ids),
            503 => *refused += 1,
            other => panic!("unexpected {other}"),
        }
    };
    for r in 0..10 {
        send(&server, r, &mut refused);
    }
    wait_drained(&server);
    node.control("fault 2 down on");
    for r in 10..60 {
        send(&server, r, &mut refused);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        refused > 0,
        "rows owned by a down node cannot be written: 503"
    );
    node.control("fault 2 down off");
    wait_drained(&server);
    let refused_while_down = refused;
    for r in 60..70 {
        send(&server, r, &mut refused);
    }
    assert_eq!(
        refused, refused_while_down,
        "after its return every request is accepted"
    );
    wait_drained(&server);
    assert!(server.terminate().success());
    assert_eq!(node.stored_event_ids(), accepted);
}

/// A batch the cluster refuses for good (Invalid) is not retried forever: its events go to
/// the dead-letter spool, and the error that refused them to `reasons.ndjson` beside it.
#[test]
fn a_batch_refused_for_good_is_dead_lettered_with_its_error() {
    let node = TestNode::start(1, 2);
    let contact = format!("127.0.0.1:{}", node.port);
    node.apply_schema();
    node.control("fault 0 invalid on");
    let mut server = support::Server::start_with_env(
        &["--shards", "1", "--sink", "scylla"],
        &[("TIDEGATE_SCYLLA_CONTACT_POINTS", &contact)],
    );
    let mut accepted = std::collections::BTreeSet::new();
    for r in 0..3u64 {
        let ids: Vec<String> = (0..5).map(|k| support::uuid(97, r * 5 + k)).collect();
        let body = support::json_array(
            ids.iter()
                .enumerate()
                .map(|(k, id)| support::event(&format!("d{r}-{k}"), id)),
        );
        assert_eq!(server.post_json(&body).status, 202);
        accepted.extend(ids);
    }
    wait_drained(&server);
    assert_eq!(server.metric("tidegate_scylla_rejected_rows_total"), 15);
    assert!(server.terminate().success());
    assert!(
        node.stored_event_ids().is_empty(),
        "the node refused every row"
    );

    let dead_letter = server.data_dir.join("dead-letter");
    let (events, damage) = support::spool_cat(&dead_letter);
    assert!(damage.contains(" 0 damaged and 0 torn"), "{damage}");
    assert_eq!(
        support::event_ids(&events),
        accepted,
        "every refused event kept"
    );
    let reasons = std::fs::read_to_string(dead_letter.join("shard-0/reasons.ndjson")).unwrap();
    let mut explained = std::collections::BTreeSet::new();
    for line in reasons.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            record["reason"]
                .as_str()
                .unwrap()
                .contains("injected: invalid row"),
            "{line}"
        );
        assert!(record["at"].as_str().unwrap().ends_with('Z'));
        for id in record["event_ids"].as_array().unwrap() {
            explained.insert(id.as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        explained, accepted,
        "every dead-lettered event has its reason"
    );
}

/// A node joining and a node leaving the ring are followed without restarting tidegate:
/// the test node pushes TOPOLOGY_CHANGE events, as ScyllaDB does, and once the driver has
/// re-read the topology every write lands on the new owner's shard,
/// the new node takes its share, the departed one gets nothing, and nothing is lost.
#[test]
fn a_node_joining_and_a_node_leaving_are_followed() {
    let node = TestNode::start_with_standby(3, 1, 2);
    let contact = format!("127.0.0.1:{}", node.port);
    node.apply_schema();
    let mut server = support::Server::start_with_env(
        &["--shards", "1", "--sink", "scylla"],
        &[
            ("TIDEGATE_SCYLLA_CONTACT_POINTS", &contact),
            ("TIDEGATE_SCYLLA_REQUEST_TIMEOUT_MS", "1000"),
        ],
    );
    let mut accepted = std::collections::BTreeSet::new();
    let mut series = 120;
    // Posts rounds of events until a whole round is routed right and `settled` holds for
    // the writes the node recorded in it (bounded).
    let received_by =
        |writes: &[serde_json::Value], n: u64| writes.iter().filter(|w| w["node"] == n).count();
    let mut converge = |what: &str, settled: &dyn Fn(&[serde_json::Value]) -> bool| {
        let mut last = String::new();
        for _ in 0..60 {
            node.control("forget-writes");
            for r in 0..5u64 {
                let ids: Vec<String> = (0..20).map(|k| support::uuid(series, r * 20 + k)).collect();
                let body = support::json_array(
                    ids.iter()
                        .enumerate()
                        .map(|(k, id)| support::event(&format!("t{series}-{r}-{k}"), id)),
                );
                let response = server.post_json(&body);
                assert_eq!(response.status, 202, "{}", response.text());
                accepted.extend(ids);
            }
            series += 1;
            wait_drained(&server);
            let writes = node.control("writes");
            let per_node: Vec<usize> = (0..4).map(|n| received_by(&writes, n)).collect();
            last = format!(
                "{} writes per node {per_node:?}",
                node.control("summary")[0]
            );
            if node.control("summary")[0]["misrouted_writes"] == 0 && settled(&writes) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("routing never settled after {what}: {last}");
    };

    converge("start-up", &|writes| received_by(writes, 3) == 0);
    assert_eq!(node.control("join 3").len(), 0);
    converge("node 3 joined", &|writes| received_by(writes, 3) > 0);
    assert_eq!(node.control("leave 0").len(), 0);
    converge("node 0 left", &|writes| received_by(writes, 0) == 0);

    assert!(server.terminate().success());
    assert_eq!(
        node.stored_event_ids(),
        accepted,
        "every accepted event stored across both changes"
    );
}

/// A table made by a tidegate from before the `source` column: the server refuses to start
/// against it and says what to run; `schema apply` adds the column, once; then each event
/// posted with an API key is stored with the key's name.
#[test]
fn an_older_table_gets_the_source_column_and_keyed_events_fill_it() {
    let node = TestNode::start(1, 2);
    let contact = format!("127.0.0.1:{}", node.port);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let session = connect(&node).await;
            for ddl in SCHEMA {
                session.query_unpaged(ddl, &[]).await.unwrap();
            }
        });

    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        "[[key]]\nname = \"ios-app\"\nkey = \"tg_live_ios_0123456789abcdef\"\n",
    )
    .unwrap();
    let env = [
        ("TIDEGATE_SCYLLA_CONTACT_POINTS", contact.as_str()),
        ("TIDEGATE_AUTH_KEYS_FILE", keys.to_str().unwrap()),
    ];
    let mut refused = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "1",
            "--sink",
            "scylla",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .envs(env)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = support::wait_timeout(&mut refused, std::time::Duration::from_secs(60));
    if status.is_none() {
        refused.kill().unwrap();
    }
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut refused.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        status.is_some_and(|s| !s.success()),
        "started against a table without source: {stderr}"
    );
    assert!(stderr.contains("schema apply"), "{stderr}");

    let applied = node.apply_schema();
    assert!(
        applied.contains("applied: ALTER TABLE tidegate.events ADD source text"),
        "{applied}"
    );
    assert!(!node.apply_schema().contains("ALTER"), "added once");

    let server = support::Server::start_with_env(&["--shards", "1", "--sink", "scylla"], &env);
    let id = support::uuid(95, 1);
    let posted = server.post(
        support::event("user-1", &id).as_bytes(),
        &[
            ("content-type", "application/json"),
            ("x-api-key", "tg_live_ios_0123456789abcdef"),
        ],
    );
    assert_eq!(posted.status, 202, "{}", posted.text());
    wait_drained(&server);
    let rows = node.control("rows");
    let row = rows
        .iter()
        .find(|row| row["event_id"] == id.as_str())
        .expect("the event is stored");
    assert_eq!(row["source"], "ios-app", "{row}");

    // What an event lacks is bound unset, never null: on ScyllaDB a null is a tombstone.
    let server = support::Server::start_with_env(
        &["--shards", "1", "--sink", "scylla"],
        &[("TIDEGATE_SCYLLA_CONTACT_POINTS", contact.as_str())],
    );
    let bare = support::uuid(95, 2);
    let body = format!(
        r#"{{"user_id":"user-2","event_type":"open","event_time":1700000000000,"event_id":"{bare}"}}"#
    );
    assert_eq!(server.post_json(&body).status, 202);
    wait_drained(&server);
    let rows = node.control("rows");
    let row = rows
        .iter()
        .find(|row| row["event_id"] == bare.as_str())
        .unwrap();
    assert!(row["payload"].is_null() && row["source"].is_null(), "{row}");
    assert_eq!(node.control("summary")[0]["null_values"], 0);
}

/// A keep-alive connection to tidegate, and the shard that serves it.
struct ShardConnection {
    stream: std::net::TcpStream,
    reader: std::io::BufReader<std::net::TcpStream>,
}

impl ShardConnection {
    fn post(&mut self, body: &str) -> u16 {
        use std::io::Write as _;
        let headers = [("content-type", "application/json")];
        self.stream
            .write_all(&support::encode_request(
                "POST",
                "/v1/events",
                &headers,
                body.as_bytes(),
            ))
            .unwrap();
        support::read_response(&mut self.reader)
            .expect("a response")
            .status
    }
}

/// One keep-alive connection served by each of the server's two shards (SO_REUSEPORT picks
/// the shard; connections are opened until both are covered), each with one event posted.
fn one_connection_per_shard(
    server: &support::Server,
    event: impl Fn(u64) -> String,
) -> [ShardConnection; 2] {
    let accepted = |shard: usize| {
        let text = server.get("/metrics").text();
        support::metric_with_label(
            &text,
            "tidegate_events_accepted_total",
            &format!("shard=\"{shard}\""),
        )
    };
    let mut found: [Option<ShardConnection>; 2] = [None, None];
    for attempt in 0..200 {
        if found.iter().all(Option::is_some) {
            break;
        }
        let stream = std::net::TcpStream::connect(server.addr).unwrap();
        let reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut connection = ShardConnection { stream, reader };
        let before = [accepted(0), accepted(1)];
        assert_eq!(connection.post(&event(attempt)), 202);
        let shard = usize::from(accepted(1) > before[1]);
        if found[shard].is_none() {
            found[shard] = Some(connection);
        }
    }
    found.map(|c| c.expect("a connection on each shard"))
}

/// One shard's writes waiting on a stalled node do not hold another shard's writes to a
/// healthy node: the driver runs the shards' jobs side by side. (It used to run one job at
/// a time for every shard, so a job waiting on a stalled node held all writes until it
/// timed out.)
#[test]
fn a_stalled_node_holds_only_the_writes_it_owns() {
    let node = TestNode::start(2, 1);
    let contact = format!("127.0.0.1:{}", node.port);
    node.apply_schema();
    let server = support::Server::start_with_env(
        &["--shards", "2", "--sink", "scylla"],
        &[
            ("TIDEGATE_SCYLLA_CONTACT_POINTS", &contact),
            ("TIDEGATE_DURABILITY_ACK", "memory"),
            ("TIDEGATE_SCYLLA_REQUEST_TIMEOUT_MS", "60000"),
        ],
    );
    // Which node owns which user: from the write the node records for one event.
    let mut owned_by: [Option<String>; 2] = [None, None];
    for i in 0..100u64 {
        if owned_by.iter().all(Option::is_some) {
            break;
        }
        let user = format!("owner-{i}");
        node.control("forget-writes");
        let body = support::event(&user, &support::uuid(70, i));
        assert_eq!(server.post_json(&body).status, 202);
        wait_drained(&server);
        let writes = node.control("writes");
        let owner = writes[0]["rows"][0]["node"].as_u64().unwrap() as usize;
        owned_by[owner].get_or_insert(user);
    }
    let [on_node_0, on_node_1] = owned_by.map(|u| u.expect("users owned by each node"));
    let mut shards = one_connection_per_shard(&server, |n| {
        support::event(&on_node_1, &support::uuid(71, n))
    });
    wait_drained(&server);

    node.control("fault 0 stall on");
    let held = support::uuid(72, 0);
    assert_eq!(shards[0].post(&support::event(&on_node_0, &held)), 202);
    // Shard 0's writer hands that event to the driver within its batch delay (10 ms); the
    // driver's write to node 0 then waits on the stall.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let free = support::uuid(72, 1);
    assert_eq!(shards[1].post(&support::event(&on_node_1, &free)), 202);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !node.stored_event_ids().contains(&free) {
        assert!(
            std::time::Instant::now() < deadline,
            "shard 1's write to the healthy node waited behind shard 0's stalled one"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!node.stored_event_ids().contains(&held));

    node.control("clear");
    wait_drained(&server);
    assert!(node.stored_event_ids().contains(&held));
}
