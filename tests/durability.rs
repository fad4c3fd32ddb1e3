//! What reaches the spool: exactly the accepted events, through backpressure and shutdown.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{event, event_ids, uuid, Server};

#[test]
fn spool_holds_exactly_the_accepted_events() {
    let mut server = Server::start(&["--shards", "2"]);
    let mut accepted = BTreeSet::new();
    for i in 0..50u64 {
        // Accepted: arrays of three events with known ids and content.
        let ids: Vec<String> = (0..3).map(|k| uuid(10, i * 3 + k)).collect();
        let body = support::json_array(ids.iter().map(|id| event(&format!("user-{i}"), id)));
        assert_eq!(server.post_json(&body).status, 202);
        accepted.extend(ids);
        // Refused: a request with one bad event; its good events must not be stored.
        let bad = format!(
            "[{},{{\"user_id\":\"x\",\"event_type\":\"t\",\"event_time\":\"never\"}}]",
            event("rejected", &uuid(11, i))
        );
        assert_eq!(server.post_json(&bad).status, 400);
    }
    assert!(server.terminate().success());
    let (events, report) = server.spool_cat();
    assert_eq!(event_ids(&events), accepted);
    assert_eq!(events.len(), accepted.len(), "no duplicates");
    assert!(report.contains("0 damaged and 0 torn"), "{report}");
    let sample = events
        .iter()
        .find(|e| e["event_id"] == uuid(10, 4).as_str())
        .unwrap();
    assert_eq!(sample["user_id"], "user-1");
    assert_eq!(sample["event_type"], "test");
    assert_eq!(sample["event_time"], "2023-11-14T22:13:20.000Z");
    assert_eq!(sample["payload"], serde_json::json!({"n": 1}));
    assert!(sample["received_at"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn a_stalled_sink_fills_the_ring_then_503_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let stall = dir.path().join("stall");
    std::fs::write(&stall, "").unwrap();
    let config = dir.path().join("small-ring.toml");
    std::fs::write(
        &config,
        "[ring]\ncapacity_events = 2000\ncapacity_bytes = 400000\nhigh_water_percent = 50\n\
         [limits]\nmax_events_per_request = 100\n[server]\nretry_after_seconds = 3\n",
    )
    .unwrap();
    // The memory ring's back-pressure; with durable acknowledgement the log absorbs a
    // stalled sink instead (tests/durable_ack.rs).
    let mut server = Server::start(&[
        "--shards",
        "1",
        "--ack",
        "memory",
        "--config",
        config.to_str().unwrap(),
        "--test-stall-file",
        stall.to_str().unwrap(),
    ]);
    let rss_before = server.rss_kib();

    let mut accepted = BTreeSet::new();
    let mut refused = 0;
    for i in 0..400u64 {
        let ids: Vec<String> = (0..50).map(|k| uuid(20, i * 50 + k)).collect();
        let body = support::json_array(ids.iter().map(|id| event("hot-user", id)));
        let r = server.post_json(&body);
        match r.status {
            202 => accepted.extend(ids),
            503 => {
                refused += 1;
                assert_eq!(r.header("retry-after"), Some("3"));
                assert_eq!(r.json()["cause"], "ring_full");
            }
            other => panic!("unexpected {other}: {}", r.text()),
        }
    }
    assert!(refused > 0, "the stalled sink must push back");
    assert!(accepted.len() <= 2000, "never more than the ring holds");
    let ready = server.get("/ready");
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(ready.text().contains("high-water"), "{}", ready.text());
    // 20,000 events were offered; the ring holds at most 400 kB of them.
    let grown = server.rss_kib().saturating_sub(rss_before);
    assert!(grown < 16 * 1024, "RSS grew by {grown} KiB while refusing");
    assert_eq!(
        server.metric("tidegate_unavailable_total"),
        refused,
        "every 503 counted"
    );
    assert_eq!(
        server.metric("tidegate_events_accepted_total"),
        accepted.len() as u64
    );

    // Resume: everything accepted is flushed and readiness returns.
    std::fs::remove_file(&stall).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.metric("tidegate_ring_events") > 0 {
        assert!(Instant::now() < deadline, "ring never drained");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.get("/ready").status, 200);
    assert_eq!(
        server.metric("tidegate_sink_events_total"),
        accepted.len() as u64
    );
    assert_eq!(server.post_json(&event("after", &uuid(21, 0))).status, 202);
    accepted.insert(uuid(21, 0));

    assert!(server.terminate().success());
    let (events, _) = server.spool_cat();
    assert_eq!(event_ids(&events), accepted);
}

/// Once the ring cannot take even one event (and nothing else can), a request is refused
/// from its head: the 503 comes before the body is sent. The body is then read and dropped
/// and the connection carries the client's next request (as nginx discards a refused
/// request's body), instead of costing a new connection per refusal. A client that waits
/// for 100 Continue is not asked for its body: its connection closes.
#[test]
fn a_full_ring_refuses_a_request_before_its_body() {
    use std::io::{BufReader, Write};
    let dir = tempfile::tempdir().unwrap();
    let stall = dir.path().join("stall");
    std::fs::write(&stall, b"").unwrap();
    let server = Server::start_with_env(
        &[
            "--shards",
            "1",
            "--ack",
            "memory",
            "--test-stall-file",
            stall.to_str().unwrap(),
        ],
        &[
            ("TIDEGATE_RING_CAPACITY_EVENTS", "2"),
            ("TIDEGATE_LIMITS_MAX_EVENTS_PER_REQUEST", "2"),
        ],
    );
    for n in 0..2 {
        assert_eq!(server.post_json(&event("u", &uuid(21, n))).status, 202);
    }
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    // The head only: a server that read the body first would wait here until its body
    // timeout (10 s), past the client's 5 s.
    let body = format!("[{}]", vec![event("late", &uuid(21, 9)); 500].join(","));
    stream
        .write_all(
            format!(
                "POST /v1/events HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
    let answer = support::read_response(&mut reader).expect("an answer");
    assert_eq!(answer.status, 503);
    assert_eq!(answer.json()["cause"], "ring_full");
    assert_eq!(answer.header("connection"), None);
    assert!(answer.header("retry-after").is_some());
    // The body, sent late, is dropped; the same connection then carries the retry.
    stream.write_all(body.as_bytes()).unwrap();
    stream
        .write_all(&support::encode_request(
            "POST",
            "/v1/events",
            &[("content-type", "application/json")],
            event("retry", &uuid(21, 10)).as_bytes(),
        ))
        .unwrap();
    let retry = support::read_response(&mut reader).expect("the retry's answer");
    assert_eq!(retry.status, 503);
    assert_eq!(retry.json()["cause"], "ring_full");
    // A chunked body (no declared length) is dropped the same way.
    stream
        .write_all(
            b"POST /v1/events HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
              transfer-encoding: chunked\r\n\r\n",
        )
        .unwrap();
    let answer = support::read_response(&mut reader).expect("an answer");
    assert_eq!(answer.status, 503);
    assert_eq!(answer.header("connection"), None);
    for chunk in body.as_bytes().chunks(4000) {
        stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .unwrap();
        stream.write_all(chunk).unwrap();
        stream.write_all(b"\r\n").unwrap();
    }
    stream.write_all(b"0\r\n\r\n").unwrap();
    stream
        .write_all(&support::encode_request("GET", "/health", &[], b""))
        .unwrap();
    let health = support::read_response(&mut reader).expect("the next answer");
    assert_eq!(health.status, 200);
    assert_eq!(server.metric("tidegate_unavailable_total"), 3);
    assert_eq!(server.metric("tidegate_ring_events"), 2);

    // Expect: 100-continue: refused without asking for the body, and the connection closes.
    let mut waiting = std::net::TcpStream::connect(server.addr).unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    waiting
        .write_all(
            b"POST /v1/events HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
              expect: 100-continue\r\ncontent-length: 100000\r\n\r\n",
        )
        .unwrap();
    let answer = support::read_response(&mut BufReader::new(waiting)).expect("an answer");
    assert_eq!(answer.status, 503);
    assert_eq!(answer.header("connection"), Some("close"));
}

#[test]
fn sigterm_under_load_loses_no_accepted_event() {
    let mut server = Server::start(&["--shards", "2"]);
    let addr = server.addr;
    let accepted = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4u32)
        .map(|client| {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(30) {
                    let ids: Vec<String> = (0..10).map(|k| uuid(30 + client, n * 10 + k)).collect();
                    n += 1;
                    let body =
                        support::json_array(ids.iter().map(|id| event(&format!("c{client}"), id)));
                    // Connections refused or reset once the server stops accepting are fine:
                    // only a 202 is a promise.
                    let Some(r) = support::try_request(
                        addr,
                        "POST",
                        "/v1/events",
                        &[("content-type", "application/json")],
                        body.as_bytes(),
                    ) else {
                        break;
                    };
                    if r.status == 202 {
                        accepted.lock().unwrap().extend(ids);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let status = server.terminate();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    assert!(status.success(), "{status:?}");
    let accepted = accepted.lock().unwrap().clone();
    assert!(accepted.len() > 100, "load was applied: {}", accepted.len());
    let (events, _) = server.spool_cat();
    let stored = event_ids(&events);
    let lost: Vec<_> = accepted.difference(&stored).take(5).collect();
    assert!(lost.is_empty(), "accepted but not stored: {lost:?}");
}

#[test]
fn segments_rotate_by_size_and_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("small-segments.toml");
    std::fs::write(
        &config,
        // One request's five events per batch at most, so the number of rotations does not
        // depend on how many requests a busy machine lets coalesce into one drain.
        "[spool]\nsegment_bytes = 4096\nfsync = \"each-flush\"\n[batch]\nmax_delay_ms = 1\nmax_events = 5\n",
    )
    .unwrap();
    let mut server = Server::start(&["--shards", "1", "--config", config.to_str().unwrap()]);
    let mut accepted = BTreeSet::new();
    for i in 0..60u64 {
        let ids: Vec<String> = (0..5).map(|k| uuid(60, i * 5 + k)).collect();
        let body = support::json_array(ids.iter().map(|id| event("rotating", id)));
        assert_eq!(server.post_json(&body).status, 202);
        accepted.extend(ids);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(server.terminate().success());
    let shard_dir = server.data_dir.join("shard-0");
    let mut segments: Vec<_> = std::fs::read_dir(&shard_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    assert!(
        segments.len() > 3,
        "rotated into {} segments",
        segments.len()
    );
    for segment in &segments[..segments.len() - 1] {
        let len = std::fs::metadata(segment).unwrap().len();
        // A batch never splits across segments, so one may overshoot by at most a batch.
        assert!(
            len <= 4096 + 5 * 400,
            "{} is {len} bytes",
            segment.display()
        );
    }
    let (events, _) = server.spool_cat();
    assert_eq!(event_ids(&events), accepted);
    // Order is preserved across segments: ids were sent in increasing order.
    let order: Vec<String> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);

    // A restart appends new segments after the existing ones.
    let before = segments.len();
    let mut again = Server::start_in(&server.data_dir, &["--shards", "1"]);
    assert_eq!(again.post_json(&event("later", &uuid(61, 0))).status, 202);
    assert!(again.terminate().success());
    let after = std::fs::read_dir(&shard_dir).unwrap().count();
    assert_eq!(after, before + 1);
    let (events, _) = support::spool_cat(&server.data_dir);
    assert_eq!(events.len(), accepted.len() + 1);
    assert_eq!(events.last().unwrap()["event_id"], uuid(61, 0).as_str());
}

#[test]
fn a_failing_sink_is_retried_reported_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fail = dir.path().join("fail");
    std::fs::write(&fail, "").unwrap();
    // With durable acknowledgement the spool sink's writes are the log's, which this gate
    // does not reach, and a failing sink only degrades /ready: memory mode shows the retries.
    let mut server = Server::start(&[
        "--shards",
        "1",
        "--ack",
        "memory",
        "--test-fail-file",
        fail.to_str().unwrap(),
    ]);
    let mut accepted = BTreeSet::new();
    for i in 0..20u64 {
        assert_eq!(server.post_json(&event("u", &uuid(70, i))).status, 202);
        accepted.insert(uuid(70, i));
    }
    // The writer keeps retrying; /ready says why it is not ready.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric("tidegate_sink_errors_total") < 2 {
        assert!(Instant::now() < deadline, "no retries observed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ready = server.get("/ready");
    assert_eq!(ready.status, 503);
    assert!(
        ready.text().contains("sink writes failing"),
        "{}",
        ready.text()
    );
    assert_eq!(server.metric("tidegate_sink_healthy"), 0);
    assert_eq!(server.metric("tidegate_ring_events"), 20, "nothing dropped");

    std::fs::remove_file(&fail).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.metric("tidegate_ring_events") > 0 {
        assert!(Instant::now() < deadline, "never recovered");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.get("/ready").status, 200);
    assert_eq!(server.metric("tidegate_sink_healthy"), 1);
    assert!(server.terminate().success());
    let (events, _) = server.spool_cat();
    assert_eq!(event_ids(&events), accepted);
}
