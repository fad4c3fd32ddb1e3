//! Durable acknowledgement: a 202 means the events are on this node's disk, whatever
//! happens to the process next. Real processes, real files, `kill -9`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod support;

use support::testnode::TestNode;
use support::{event, event_ids, uuid, Server};

/// What the clients were told was kept: client-set event_ids, and the user_ids of events
/// sent without an event_id (each such event has a user_id of its own).
#[derive(Default)]
struct Acknowledged {
    ids: BTreeSet<String>,
    generated_users: BTreeSet<String>,
}

/// Runs `clients` threads against `addr` until `stop`: arrays of 10 events with client-set
/// ids, and single events whose id the server generates.
fn load(
    addr: SocketAddr,
    clients: u32,
    series: u32,
    stop: &Arc<AtomicBool>,
) -> (Arc<Mutex<Acknowledged>>, Vec<std::thread::JoinHandle<()>>) {
    let acknowledged = Arc::new(Mutex::new(Acknowledged::default()));
    let threads = (0..clients)
        .map(|client| {
            let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(30)
                {
                    n += 1;
                    let (body, ids, user) = if n.is_multiple_of(4) {
                        let user = format!("gen-{series}-{client}-{n}");
                        let body = format!(
                            r#"{{"user_id":"{user}","event_type":"t","event_time":"2024-05-01T12:00:00Z"}}"#
                        );
                        (body, Vec::new(), Some(user))
                    } else {
                        let ids: Vec<String> = (0..10)
                            .map(|k| uuid(series * 100 + client, n * 10 + k))
                            .collect();
                        let body = support::json_array(
                            ids.iter().map(|id| event(&format!("c{client}"), id)),
                        );
                        (body, ids, None)
                    };
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
                        let mut acknowledged = acknowledged.lock().unwrap();
                        acknowledged.ids.extend(ids);
                        acknowledged.generated_users.extend(user);
                    }
                }
            })
        })
        .collect();
    (acknowledged, threads)
}

/// Lets the load run for at least `at_least`, and on until more than 1,000 client-set ids
/// were acknowledged (bounded): on a machine busy with other tests a fixed time did not
/// always bring thousands of acknowledged events.
fn run_load_for(acknowledged: &Mutex<Acknowledged>, at_least: Duration) {
    std::thread::sleep(at_least);
    let deadline = Instant::now() + Duration::from_secs(30);
    while acknowledged.lock().unwrap().ids.len() <= 1000 {
        assert!(
            Instant::now() < deadline,
            "the load never got 1,000 events acknowledged"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn users(events: &[serde_json::Value]) -> BTreeSet<String> {
    events
        .iter()
        .map(|e| e["user_id"].as_str().unwrap().to_owned())
        .collect()
}

fn assert_all_stored(acknowledged: &Acknowledged, events: &[serde_json::Value], what: &str) {
    let stored = event_ids(events);
    let lost: Vec<_> = acknowledged.ids.difference(&stored).take(5).collect();
    assert!(
        lost.is_empty(),
        "{what}: acknowledged but not stored: {lost:?}"
    );
    let stored_users = users(events);
    let lost: Vec<_> = acknowledged
        .generated_users
        .difference(&stored_users)
        .take(5)
        .collect();
    assert!(
        lost.is_empty(),
        "{what}: acknowledged (generated id) but not stored: {lost:?}"
    );
}

#[test]
fn kill_9_under_load_loses_no_acknowledged_event() {
    for round in 0..6u32 {
        let shards = if round % 2 == 0 { "1" } else { "2" };
        let mut server = Server::start(&["--shards", shards]);
        let stop = Arc::new(AtomicBool::new(false));
        let (acknowledged, clients) = load(server.addr, 6, round, &stop);
        run_load_for(
            &acknowledged,
            Duration::from_millis(600 + 150 * u64::from(round)),
        );
        server.stop_with("KILL");
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.join().unwrap();
        }
        let acknowledged = acknowledged.lock().unwrap();
        let count = acknowledged.ids.len() + acknowledged.generated_users.len();
        assert!(count > 1000, "round {round}: load was applied: {count}");
        let (events, _) = server.spool_cat();
        assert_all_stored(
            &acknowledged,
            &events,
            &format!("round {round}, {shards} shards"),
        );

        // The next start cuts any torn tail and serves; nothing acknowledged goes missing.
        let mut restarted = Server::start_in(&server.data_dir, &["--shards", shards]);
        let r = restarted.post_json(&event("after", &uuid(99, u64::from(round))));
        assert_eq!(r.status, 202, "{}", r.text());
        restarted.terminate();
        let (events, _) = restarted.spool_cat();
        assert_all_stored(
            &acknowledged,
            &events,
            &format!("round {round} after restart"),
        );
    }
}

#[test]
fn memory_acknowledgement_is_still_there_for_those_who_choose_it() {
    let mut server = Server::start(&["--shards", "1", "--ack", "memory"]);
    let r = server.post_json(&event("m", &uuid(98, 1)));
    assert_eq!(r.status, 202);
    assert_eq!(
        server.metric("tidegate_log_syncs_total"),
        0,
        "no log in memory mode"
    );
    server.terminate();
    assert_eq!(event_ids(&server.spool_cat().0).len(), 1);
}

#[test]
fn a_failed_sync_is_503_log_unavailable_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fail = dir.path().join("fail-sync");
    let mut server = Server::start(&[
        "--shards",
        "1",
        "--test-fail-sync-file",
        fail.to_str().unwrap(),
    ]);
    let ok = uuid(97, 1);
    assert_eq!(server.post_json(&event("f", &ok)).status, 202);
    std::fs::write(&fail, b"").unwrap();
    let refused: Vec<String> = (2..6).map(|n| uuid(97, n)).collect();
    for id in &refused {
        let r = server.post_json(&event("f", id));
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.json()["cause"], "log_unavailable", "{}", r.text());
        assert!(r.header("retry-after").is_some());
    }
    assert_eq!(server.metric("tidegate_log_sync_failures_total"), 4);
    std::fs::remove_file(&fail).unwrap();
    let after = uuid(97, 9);
    assert_eq!(server.post_json(&event("f", &after)).status, 202);
    server.terminate();
    let stored = event_ids(&server.spool_cat().0);
    assert_eq!(
        stored,
        BTreeSet::from([ok, after]),
        "nothing of a request answered 503 is kept"
    );
}

/// With the ScyllaDB sink held back by `hook` (`--test-stall-file` or `--test-fail-file`),
/// posts `count` events (all 202: from the log alone), ends the server with `end`, checks
/// the sink stored nothing, and starts it again on the same data with the sink free.
fn hold_the_sink_end_and_restart(
    hook: &str,
    shards: &str,
    count: u64,
    series: u32,
    end: impl FnOnce(&mut Server),
) -> (TestNode, Server, Vec<String>) {
    let node = TestNode::start(1, 2);
    node.apply_schema();
    let contact = format!("127.0.0.1:{}", node.port);
    let env = [("TIDEGATE_SCYLLA_CONTACT_POINTS", contact.as_str())];
    let dir = tempfile::tempdir().unwrap();
    let held = dir.path().join("held");
    std::fs::write(&held, b"").unwrap();
    let mut server = Server::start_with_env(
        &[
            "--shards",
            shards,
            "--sink",
            "scylla",
            hook,
            held.to_str().unwrap(),
        ],
        &env,
    );
    let ids: Vec<String> = (0..count).map(|n| uuid(series, n)).collect();
    for chunk in ids.chunks(20) {
        let body = support::json_array(chunk.iter().map(|id| event("held", id)));
        assert_eq!(server.post_json(&body).status, 202);
    }
    end(&mut server);
    assert!(
        node.stored_event_ids().is_empty(),
        "the held sink stored nothing"
    );
    std::fs::remove_file(&held).unwrap();
    let restarted = Server::start_in_with_env(
        &server.data_dir,
        &["--shards", shards, "--sink", "scylla"],
        &env,
    );
    (node, restarted, ids)
}

#[test]
fn the_log_is_replayed_into_scylla_after_kill_9() {
    let (node, mut restarted, ids) =
        hold_the_sink_end_and_restart("--test-stall-file", "2", 300, 96, |server| {
            server.stop_with("KILL");
        });
    let stored = node.stored_event_ids();
    assert!(
        ids.iter().all(|id| stored.contains(id)),
        "replayed before serving"
    );
    assert_eq!(restarted.metric("tidegate_log_replayed_events_total"), 300);
    restarted.terminate();
}

#[test]
fn a_stop_with_the_sink_down_leaves_the_rest_in_the_log_for_the_next_start() {
    let (node, mut restarted, ids) =
        hold_the_sink_end_and_restart("--test-fail-file", "1", 200, 95, |server| {
            let started = Instant::now();
            assert!(server.terminate().success(), "the stop completes");
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "within the grace period: {:?}",
                started.elapsed()
            );
        });
    let stored = node.stored_event_ids();
    assert!(
        ids.iter().all(|id| stored.contains(id)),
        "the next start delivered everything"
    );
    restarted.terminate();
}

/// Cuts every shard's log back to the length it had at its last sync, as a power loss
/// would: the page cache's unsynced writes are gone, later segments never existed.
fn lose_unsynced_writes(data_dir: &std::path::Path) -> usize {
    let mut cut = 0;
    for shard in std::fs::read_dir(data_dir).unwrap() {
        let shard = shard.unwrap().path();
        let Ok(text) = std::fs::read_to_string(shard.join("synced-position")) else {
            continue;
        };
        let mut words = text.split_whitespace().map(|w| w.parse::<u64>().unwrap());
        let (sequence, length) = (words.next().unwrap(), words.next().unwrap());
        for segment in std::fs::read_dir(&shard).unwrap() {
            let segment = segment.unwrap().path();
            let Some(n) = segment
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let len = std::fs::metadata(&segment).unwrap().len();
            if n > sequence {
                cut += len as usize;
                std::fs::remove_file(&segment).unwrap();
            } else if n == sequence && len > length {
                cut += (len - length) as usize;
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&segment)
                    .unwrap();
                f.set_len(length).unwrap();
            }
        }
    }
    cut
}

#[test]
fn power_loss_after_the_last_sync_loses_nothing_acknowledged() {
    for round in 0..2u32 {
        let shards = if round == 0 { "1" } else { "2" };
        let mut server = Server::start(&["--shards", shards, "--test-record-synced"]);
        let stop = Arc::new(AtomicBool::new(false));
        let (acknowledged, clients) = load(server.addr, 6, 50 + round, &stop);
        run_load_for(&acknowledged, Duration::from_millis(700));
        server.stop_with("KILL");
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.join().unwrap();
        }
        lose_unsynced_writes(&server.data_dir);
        let acknowledged = acknowledged.lock().unwrap();
        assert!(acknowledged.ids.len() > 1000, "load was applied");
        let mut restarted = Server::start_in(&server.data_dir, &["--shards", shards]);
        restarted.terminate();
        let (events, _) = restarted.spool_cat();
        assert_all_stored(
            &acknowledged,
            &events,
            &format!("power loss, {shards} shards"),
        );
    }
}

/// Mounts a tmpfs of `bytes` at a fresh directory; `None` (with a message) where mounting
/// is not permitted.
fn small_tmpfs(bytes: u64) -> Option<(tempfile::TempDir, std::path::PathBuf)> {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("disk");
    std::fs::create_dir(&mount).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
        .arg(&mount)
        .status();
    match status {
        Ok(s) if s.success() => Some((dir, mount)),
        _ => {
            eprintln!("skipped: cannot mount a tmpfs here (needs root)");
            None
        }
    }
}

fn unmount(mount: &std::path::Path) {
    let _ = std::process::Command::new("umount").arg(mount).status();
}

#[test]
fn a_full_disk_is_503_never_202_and_recovers_when_space_returns() {
    let Some((_dir, mount)) = small_tmpfs(2 << 20) else {
        return;
    };
    let data = mount.join("data");
    // Most of the disk is taken by something else.
    let filler = mount.join("filler");
    std::fs::write(&filler, vec![0u8; 1900 * 1024]).unwrap();
    let mut server = Server::start_in(&data, &["--shards", "1"]);
    let mut acknowledged = BTreeSet::new();
    let mut refused = BTreeSet::new();
    let mut statuses = Vec::new();
    for n in 0..200u64 {
        let ids: Vec<String> = (0..20).map(|k| uuid(90, n * 20 + k)).collect();
        let body = support::json_array(ids.iter().map(|id| event("disk", id)));
        let r = server.post_json(&body);
        statuses.push(r.status);
        match r.status {
            202 => acknowledged.extend(ids),
            503 => {
                assert_eq!(r.json()["cause"], "log_unavailable", "{}", r.text());
                refused.extend(ids);
            }
            other => panic!("unexpected {other}: {}", r.text()),
        }
    }
    assert!(!refused.is_empty(), "the disk filled: {statuses:?}");
    assert!(!acknowledged.is_empty());
    // Space returns: the edge takes requests again.
    std::fs::remove_file(&filler).unwrap();
    let after = uuid(90, 99_999);
    let r = server.post_json(&event("disk", &after));
    assert_eq!(r.status, 202, "{}", r.text());
    acknowledged.insert(after);
    server.terminate();
    let stored = event_ids(&server.spool_cat().0);
    let lost: Vec<_> = acknowledged.difference(&stored).take(3).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    let kept: Vec<_> = refused.intersection(&stored).take(3).collect();
    assert!(kept.is_empty(), "answered 503 but stored: {kept:?}");
    drop(server);
    unmount(&mount);
}

#[test]
fn a_long_sink_outage_is_absorbed_by_the_log_then_delivered() {
    let node = TestNode::start(1, 2);
    node.apply_schema();
    let contact = format!("127.0.0.1:{}", node.port);
    let dir = tempfile::tempdir().unwrap();
    let stall = dir.path().join("stall");
    std::fs::write(&stall, b"").unwrap();
    let mut server = Server::start_with_env(
        &[
            "--shards",
            "1",
            "--sink",
            "scylla",
            "--test-stall-file",
            stall.to_str().unwrap(),
        ],
        &[
            ("TIDEGATE_SCYLLA_CONTACT_POINTS", contact.as_str()),
            ("TIDEGATE_RING_CAPACITY_EVENTS", "500"),
            ("TIDEGATE_LIMITS_MAX_EVENTS_PER_REQUEST", "100"),
        ],
    );
    // Ten times what the ring holds, while the sink takes nothing.
    let ids: Vec<String> = (0..5000).map(|n| uuid(94, n)).collect();
    for chunk in ids.chunks(100) {
        let body = support::json_array(chunk.iter().map(|id| event("outage", id)));
        let r = server.post_json(&body);
        assert_eq!(r.status, 202, "{}", r.text());
    }
    assert!(server.metric("tidegate_log_backlog_events") >= 4000);
    assert!(node.stored_event_ids().is_empty());
    std::fs::remove_file(&stall).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stored = node.stored_event_ids();
        if ids.iter().all(|id| stored.contains(id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of 5000 stored; the server's state:\n{}",
            stored.len(),
            server.state_for_failure()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(server.metric("tidegate_log_backlog_events"), 0);
    server.terminate();
}

#[test]
fn a_full_log_is_503_log_full_until_the_sink_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let stall = dir.path().join("stall");
    std::fs::write(&stall, b"").unwrap();
    let mut server = Server::start_with_env(
        &[
            "--shards",
            "1",
            "--sink",
            "blackhole",
            "--test-stall-file",
            stall.to_str().unwrap(),
        ],
        &[
            ("TIDEGATE_RING_CAPACITY_EVENTS", "100"),
            ("TIDEGATE_LIMITS_MAX_EVENTS_PER_REQUEST", "10"),
            ("TIDEGATE_DURABILITY_MAX_LOG_BYTES", "65536"),
        ],
    );
    let mut full = None;
    for n in 0..200u64 {
        let ids: Vec<String> = (0..10).map(|k| uuid(93, n * 10 + k)).collect();
        let body = support::json_array(ids.iter().map(|id| event("full", id)));
        let r = server.post_json(&body);
        if r.status == 503 {
            full = Some(r);
            break;
        }
        assert_eq!(r.status, 202, "{}", r.text());
    }
    let r = full.expect("the log filled");
    assert_eq!(r.json()["cause"], "log_full", "{}", r.text());
    assert!(r.header("retry-after").is_some());
    assert!(server.metric("tidegate_log_unstored_bytes") > 60_000);
    std::fs::remove_file(&stall).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = server.post_json(&event("full", &uuid(93, 99_999)));
        if r.status == 202 {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {}", r.text());
        std::thread::sleep(Duration::from_millis(50));
    }
    server.terminate();
}

/// Kept requests that read back damaged through the page cache (a block it kept from
/// before a direct write to it: the test hook makes every such read return zeros) are
/// read again past it, and every acknowledged event reaches the sink; none is skipped.
#[test]
fn a_stale_cached_read_of_the_backlog_is_read_again_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let stall = dir.path().join("stall");
    let stale = dir.path().join("stale");
    std::fs::write(&stall, b"").unwrap();
    std::fs::write(&stale, b"").unwrap();
    let mut server = Server::start_with_env(
        &[
            "--shards",
            "1",
            "--sink",
            "blackhole",
            "--test-stall-file",
            stall.to_str().unwrap(),
            "--test-stale-backlog-file",
            stale.to_str().unwrap(),
        ],
        &[
            ("TIDEGATE_RING_CAPACITY_EVENTS", "100"),
            ("TIDEGATE_LIMITS_MAX_EVENTS_PER_REQUEST", "50"),
        ],
    );
    for n in 0..20u64 {
        let ids: Vec<String> = (0..50).map(|k| uuid(92, n * 50 + k)).collect();
        let r = server.post_json(&support::json_array(
            ids.iter().map(|id| event("stale", id)),
        ));
        assert_eq!(r.status, 202, "{}", r.text());
    }
    assert!(server.metric("tidegate_log_backlog_events") >= 800);
    std::fs::remove_file(&stall).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.metric("tidegate_sink_events_total") < 1000
        || server.metric("tidegate_log_backlog_events") > 0
    {
        assert!(
            Instant::now() < deadline,
            "the backlog was not delivered; the server's state:\n{}",
            server.state_for_failure()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.metric("tidegate_sink_events_total"), 1000);
    assert_eq!(server.metric("tidegate_log_corrupt_records_total"), 0);
    server.terminate();
}

/// Segments the sink has stored are deleted while the shard serves (in the background,
/// off the shard's thread), so the log's disk use follows the checkpoint.
#[test]
fn stored_segments_are_deleted_while_serving() {
    let mut server = Server::start_with_env(
        &["--shards", "1", "--sink", "blackhole"],
        &[
            ("TIDEGATE_SPOOL_SEGMENT_BYTES", "4096"),
            ("TIDEGATE_BATCH_MAX_DELAY_MS", "1"),
        ],
    );
    let log_dir = server.data_dir.join("wal").join("shard-0");
    // (segments now, segments ever written: the highest sequence number + 1)
    let segments = || {
        let sequences: Vec<u64> = std::fs::read_dir(&log_dir)
            .unwrap()
            .filter_map(|entry| {
                let name = entry.unwrap().file_name();
                name.to_str()?.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        (sequences.len(), sequences.iter().max().map_or(0, |s| s + 1))
    };
    let mut n = 0;
    let mut most = 0;
    let started = Instant::now();
    // ~1 KiB per request: a new segment every few requests. The checkpoint is settled
    // about once a second, so keep posting for a few seconds.
    while started.elapsed() < Duration::from_secs(4) {
        n += 1;
        let body =
            support::json_array((0..8).map(|k| event(&format!("d{n}-{k}"), &uuid(91, n * 8 + k))));
        assert_eq!(server.post_json(&body).status, 202);
        most = most.max(segments().0);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(n > 100, "{n} requests");
    let written = segments().1 as usize;
    assert!(
        most < written / 2,
        "at most {most} segments at once of the ~{written} written"
    );
    let reported = server.metric("tidegate_log_segments");
    assert!(
        reported > 0 && reported <= most as u64,
        "{reported} reported"
    );
    assert!(server.terminate().success());
}

/// The binary's io_uring rings are set up with IORING_SETUP_COOP_TASKRUN (`src/main.rs`):
/// the link-time wrapper of liburing's set-up ran and the kernel took the flag, so a
/// client's bytes arriving while a shard works do not interrupt it. Without the wrapper
/// linked in, nothing reports the set-up.
#[test]
fn io_uring_rings_run_completion_work_cooperatively() {
    let (status, stderr) =
        support::logs_of_a_run(&["--shards", "2", "--sink", "blackhole"], Some("info"));
    assert!(status.success());
    if stderr.contains("refused IORING_SETUP_COOP_TASKRUN") {
        eprintln!("skipped: this kernel has no IORING_SETUP_COOP_TASKRUN (Linux 5.19)");
        return;
    }
    assert!(
        stderr.contains("io_uring rings run completion work cooperatively"),
        "no cooperative io_uring set-up reported:\n{stderr}"
    );
}
