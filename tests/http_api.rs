//! Every status code of the HTTP API, over real TCP against the real binary.

mod support;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{encode_request, event, read_response, uuid, Server};

const JSON: (&str, &str) = ("content-type", "application/json");
const NDJSON: (&str, &str) = ("content-type", "application/x-ndjson");

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[test]
fn accepts_object_array_ndjson_gzip_and_zstd() {
    let server = Server::start(&["--shards", "1"]);
    let one = event("u1", &uuid(1, 1));
    let r = server.post_json(&one);
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"accepted": 1}));

    let array = format!(
        "[{},{}]",
        event("u1", &uuid(1, 2)),
        event("u2", &uuid(1, 3))
    );
    assert_eq!(server.post_json(&array).json()["accepted"], 2);

    let ndjson = format!(
        "{}\n{}\n",
        event("u3", &uuid(1, 4)),
        event("u3", &uuid(1, 5))
    );
    let r = server.post(ndjson.as_bytes(), &[NDJSON]);
    assert_eq!((r.status, r.json()["accepted"].as_u64()), (202, Some(2)));

    let r = server.post(
        &gzip(
            array
                .replace(&uuid(1, 2), &uuid(1, 6))
                .replace(&uuid(1, 3), &uuid(1, 7))
                .as_bytes(),
        ),
        &[JSON, ("content-encoding", "gzip")],
    );
    assert_eq!(r.status, 202, "{}", r.text());

    let zst = zstd::encode_all(event("u4", &uuid(1, 8)).as_bytes(), 3).unwrap();
    let r = server.post(&zst, &[JSON, ("content-encoding", "zstd")]);
    assert_eq!(r.status, 202, "{}", r.text());

    // RFC 3339 times, no payload, no event_id (generated).
    let r = server.post_json(
        r#"{"user_id":"u5","event_type":"t","event_time":"2024-03-01T10:00:00.5+02:00"}"#,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(server.metric("tidegate_events_accepted_total"), 9);
}

#[test]
fn bad_bodies_get_400_with_the_reason() {
    let server = Server::start(&["--shards", "1"]);
    let check = |body: &[u8], headers: &[(&str, &str)], code: &str| {
        let r = server.post(body, headers);
        assert_eq!(
            r.status,
            400,
            "{}: {}",
            String::from_utf8_lossy(body),
            r.text()
        );
        let json = r.json();
        assert_eq!(json["error"], code, "{json}");
        json
    };
    let malformed = check(
        br#"{"user_id": "u1", "event_type": }"#,
        &[JSON],
        "malformed_json",
    );
    let offset = malformed["offset"].as_u64().unwrap();
    assert!((25..=34).contains(&offset), "offset {offset}");

    let unknown = check(
        br#"{"user_id":"u","event_type":"t","event_time":1,"colour":"red"}"#,
        &[JSON],
        "invalid_events",
    );
    assert_eq!(unknown["errors"][0]["field"], "colour");
    assert_eq!(unknown["errors"][0]["index"], 0);

    let bad_utf8 = check(
        b"{\"user_id\":\"\xff\xfe\",\"event_type\":\"t\",\"event_time\":1}",
        &[JSON],
        "malformed_json",
    );
    assert!(bad_utf8["message"].as_str().unwrap().contains("UTF-8"));

    let dup = check(
        br#"{"user_id":"a","user_id":"b","event_type":"t","event_time":1}"#,
        &[JSON],
        "invalid_events",
    );
    assert_eq!(dup["errors"][0]["field"], "user_id");
    let dup_payload = check(
        br#"{"user_id":"a","event_type":"t","event_time":1,"payload":{"k":1,"k":2}}"#,
        &[JSON],
        "invalid_events",
    );
    assert_eq!(dup_payload["errors"][0]["field"], "payload");

    let deep = format!(
        r#"{{"user_id":"a","event_type":"t","event_time":1,"payload":{}1{}}}"#,
        r#"{"a":"#.repeat(33),
        "}".repeat(33)
    );
    let deep = check(deep.as_bytes(), &[JSON], "invalid_events");
    assert!(deep["errors"][0]["reason"].as_str().unwrap().contains("32"));
    let very_deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    check(very_deep.as_bytes(), &[JSON], "malformed_json");

    check(b"", &[JSON], "empty");
    check(b"[]", &[JSON], "empty");
    check(b"\n\n", &[NDJSON], "empty");
    check(b"\"just a string\"", &[JSON], "not_an_event");

    // Only some events bad: the whole request is refused, each bad one named by index.
    let mixed = format!(
        "[{},{{\"user_id\":\"\",\"event_type\":\"t\",\"event_time\":1}},{}]",
        event("u", &uuid(2, 1)),
        event("u", &uuid(2, 2))
    );
    let json = check(mixed.as_bytes(), &[JSON], "invalid_events");
    assert_eq!(
        (json["invalid"].as_u64(), json["valid"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(json["errors"][0]["index"], 1);

    let ndjson_bad = format!("{}\n{{nope\n", event("u", &uuid(2, 3)));
    let json = check(ndjson_bad.as_bytes(), &[NDJSON], "malformed_json");
    assert_eq!(json["line"], 2);

    // Reported errors are capped at 100 while the count stays exact.
    let many_bad = format!("[{}]", vec!["{}"; 150].join(","));
    let json = check(many_bad.as_bytes(), &[JSON], "invalid_events");
    assert_eq!(json["invalid"], 150);
    assert_eq!(json["errors"].as_array().unwrap().len(), 100);

    check(
        b"\x1f\x8bnot really gzip",
        &[JSON, ("content-encoding", "gzip")],
        "bad_encoding",
    );

    assert_eq!(server.metric("tidegate_events_accepted_total"), 0);
    assert_eq!(server.metric("tidegate_ring_events"), 0);
}

#[test]
fn limits_get_413_and_wrong_types_415() {
    let server = Server::start(&["--shards", "1"]);
    // Declared oversize: refused before the body is read.
    let big = vec![b' '; (1 << 20) + 1];
    let r = server.post(&big, &[JSON]);
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (413, Some("body_too_large"))
    );

    // Chunked, so no length is declared: refused while reading.
    let mut stream = TcpStream::connect(server.addr).unwrap();
    let mut req = encode_request(
        "POST",
        "/v1/events",
        &[JSON, ("transfer-encoding", "chunked")],
        b"",
    );
    for _ in 0..20 {
        req.extend_from_slice(format!("{:x}\r\n", 100_000).as_bytes());
        req.extend_from_slice(&vec![b' '; 100_000]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let _ = stream.write_all(&req);
    let r = read_response(&mut BufReader::new(stream)).unwrap();
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (413, Some("body_too_large"))
    );

    // A gzip bomb: 100 KB on the wire, 50 MB inflated.
    let bomb = gzip(&vec![b' '; 50 << 20]);
    assert!(bomb.len() < 1 << 20);
    let r = server.post(&bomb, &[JSON, ("content-encoding", "gzip")]);
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (413, Some("decompressed_too_large"))
    );

    let too_many = format!("[{}]", vec![event("u", &uuid(3, 0)); 10_001].join(","));
    let r = server.post(
        &gzip(too_many.as_bytes()),
        &[JSON, ("content-encoding", "gzip")],
    );
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (413, Some("too_many_events"))
    );

    let one = event("u", &uuid(3, 1));
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
    ] {
        let r = server.post(one.as_bytes(), &[("content-type", ct)]);
        assert_eq!(r.status, 415, "{ct}");
        assert_eq!(r.json()["error"], "unsupported_media_type");
    }
    let r = server.post(one.as_bytes(), &[JSON, ("content-encoding", "br")]);
    assert_eq!(r.status, 415);
    // Charset parameters are fine.
    let r = server.post(
        one.as_bytes(),
        &[("content-type", "application/json; charset=utf-8")],
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(server.metric("tidegate_events_accepted_total"), 1);
}

#[test]
fn routes_health_ready_metrics_404_405() {
    let server = Server::start(&["--shards", "2"]);
    assert_eq!(server.get("/health").status, 200);
    let ready = server.get("/ready");
    assert_eq!(
        (ready.status, ready.json()["ready"].as_bool()),
        (200, Some(true))
    );
    let r = server.get("/nope");
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (404, Some("not_found"))
    );
    let r = server.get("/v1/events");
    assert_eq!((r.status, r.header("allow")), (405, Some("OPTIONS, POST")));
    let r = support::request(server.addr, "DELETE", "/health", &[], b"");
    assert_eq!(r.status, 405);

    let metrics = server.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    let text = metrics.text();
    for family in [
        "tidegate_http_requests_total",
        "tidegate_events_accepted_total",
        "tidegate_events_rejected_total",
        "tidegate_ring_events",
        "tidegate_ring_capacity_events",
        "tidegate_sink_batches_total",
        "tidegate_sink_flush_seconds_bucket",
        "tidegate_unavailable_total",
    ] {
        assert!(text.contains(family), "missing {family}");
    }
    assert!(text.contains("route=\"other\",status=\"404\""), "{text}");
}

#[test]
fn keep_alive_and_pipelined_requests_are_answered_in_order() {
    let server = Server::start(&["--shards", "1"]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut pipelined = Vec::new();
    pipelined.extend(encode_request("GET", "/health", &[], b""));
    pipelined.extend(encode_request(
        "POST",
        "/v1/events",
        &[JSON],
        event("p", &uuid(4, 1)).as_bytes(),
    ));
    pipelined.extend(encode_request("GET", "/missing", &[], b""));
    pipelined.extend(encode_request("POST", "/v1/events", &[JSON], b"{"));
    pipelined.extend(encode_request(
        "POST",
        "/v1/events",
        &[JSON],
        format!("[{},{}]", event("p", &uuid(4, 2)), event("p", &uuid(4, 3))).as_bytes(),
    ));
    stream.write_all(&pipelined).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let statuses: Vec<u16> = (0..5)
        .map(|_| read_response(&mut reader).unwrap().status)
        .collect();
    assert_eq!(statuses, vec![200, 202, 404, 400, 202]);
    // The same connection keeps serving.
    stream
        .write_all(&encode_request("GET", "/ready", &[], b""))
        .unwrap();
    assert_eq!(read_response(&mut reader).unwrap().status, 200);
}

#[test]
fn slow_heads_and_idle_connections_are_closed() {
    let server = Server::start(&[
        "--shards",
        "1",
        "--config",
        &support_config("[server]\nheader_read_timeout_ms = 300\nidle_timeout_ms = 1000\n"),
    ]);
    // A head that never completes is answered 408 after the header-read timeout, then closed.
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.write_all(b"POST /v1/events HTTP/1.1\r\nhost: x\r\n")
        .unwrap();
    let started = Instant::now();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = BufReader::new(slow.try_clone().unwrap());
    let timed_out = read_response(&mut reader).expect("a 408, not a silent close");
    let waited = started.elapsed();
    assert_eq!(timed_out.status, 408);
    assert_eq!(timed_out.json()["error"], "request_timeout");
    let mut buf = [0u8; 64];
    assert_eq!(
        reader.read(&mut buf).unwrap_or(0),
        0,
        "closed after the 408"
    );
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(900),
        "{waited:?}"
    );

    // An idle keep-alive connection lives past the header timeout, until the idle timeout.
    let mut idle = TcpStream::connect(server.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    idle.write_all(&encode_request("GET", "/health", &[], b""))
        .unwrap();
    let mut reader = BufReader::new(idle.try_clone().unwrap());
    assert_eq!(read_response(&mut reader).unwrap().status, 200);
    std::thread::sleep(Duration::from_millis(500));
    idle.write_all(&encode_request("GET", "/health", &[], b""))
        .unwrap();
    assert_eq!(
        read_response(&mut reader).unwrap().status,
        200,
        "still open after 500 ms idle"
    );
    let started = Instant::now();
    assert!(read_response(&mut reader).is_none(), "closed when idle");
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn connections_over_the_limit_get_503_and_close() {
    let server = Server::start(&[
        "--shards",
        "1",
        "--config",
        &support_config("[server]\nmax_connections_per_shard = 2\n"),
    ]);
    let held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let r = server.post_json(&event("u", &uuid(5, 1)));
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["cause"], "connection_limit");
    drop(held);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(server.post_json(&event("u", &uuid(5, 2))).status, 202);
}

/// Writes a config file that lives as long as the test process (leaked on purpose).
fn support_config(toml: &str) -> String {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), toml).unwrap();
    let (_, path) = file.keep().unwrap();
    path.display().to_string()
}

/// Shards pin inside the CPU mask the server was started with (`taskset`, systemd's
/// `CPUAffinity`), never onto a CPU the operator kept for something else.
#[test]
fn shards_pin_inside_the_process_cpu_mask() {
    let allowed: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| {
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
            unsafe { libc::CPU_ISSET(cpu, &set) }
        })
        .collect();
    if allowed.len() < 2 {
        eprintln!("skipped: needs two CPUs, this process may use {allowed:?}");
        return;
    }
    let last = *allowed.last().unwrap();
    // A child inherits the mask of the thread that starts it.
    let server = std::thread::spawn(move || {
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        unsafe { libc::CPU_SET(last, &mut set) };
        let set_ok = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
        assert_eq!(set_ok, 0);
        Server::start(&["--shards", "2"])
    })
    .join()
    .unwrap();
    let mut shards = 0;
    // Each shard is an executor thread plus glommio's helper thread, both pinned.
    for task in std::fs::read_dir(format!("/proc/{}/task", server.pid())).unwrap() {
        let task = task.unwrap().path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap();
        if !name.starts_with("tidegate-shard") {
            continue;
        }
        shards += 1;
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        let cpus = status
            .lines()
            .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_owned();
        assert_eq!(cpus, last.to_string(), "{name} pinned outside the mask");
    }
    assert!(shards >= 2, "{shards} shard threads");
}

/// With `server.admin_listen` set, the metrics move to the admin address: the ingest port,
/// which faces clients, answers them 404, and the admin port takes no events.
#[test]
fn an_admin_listener_serves_the_metrics_and_the_ingest_port_no_longer_does() {
    let admin: std::net::SocketAddr = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap()
    };
    let server = Server::start_with_env(
        &["--shards", "2"],
        &[("TIDEGATE_SERVER_ADMIN_LISTEN", &admin.to_string())],
    );
    let body = event("u1", &uuid(9, 1));
    assert_eq!(server.post(body.as_bytes(), &[JSON]).status, 202);
    assert_eq!(server.get("/metrics").status, 404);
    assert_eq!(server.get("/health").status, 200);
    assert_eq!(server.get("/ready").status, 200);

    let get = |path| support::request(admin, "GET", path, &[], b"");
    let metrics = get("/metrics");
    assert_eq!(metrics.status, 200);
    assert_eq!(
        support::metric_sum(&metrics.text(), "tidegate_events_accepted_total"),
        1,
        "one scrape covers every shard"
    );
    assert_eq!(get("/health").status, 200);
    assert_eq!(get("/ready").status, 200);
    let post = support::request(admin, "POST", "/v1/events", &[JSON], body.as_bytes());
    assert_eq!(post.status, 404);
}

/// `navigator.sendBeacon` can only send `text/plain` without a preflight: refused (415,
/// nothing kept) unless `cors.accept_text_plain` is set, then read as JSON.
#[test]
fn text_plain_bodies_are_json_only_when_cors_accepts_text_plain() {
    let text_plain = ("content-type", "text/plain;charset=UTF-8");
    let refusing = Server::start(&["--shards", "1"]);
    let body = event("u1", &uuid(10, 1));
    let refused = refusing.post(body.as_bytes(), &[text_plain]);
    assert_eq!(refused.status, 415);
    assert!(
        refused.text().contains("cors.accept_text_plain"),
        "{}",
        refused.text()
    );
    assert_eq!(refusing.metric("tidegate_events_accepted_total"), 0);

    let accepting = Server::start_with_env(
        &["--shards", "1"],
        &[("TIDEGATE_CORS_ACCEPT_TEXT_PLAIN", "true")],
    );
    let batch = format!(
        "[{},{}]",
        event("u1", &uuid(10, 2)),
        event("u2", &uuid(10, 3))
    );
    assert_eq!(accepting.post(batch.as_bytes(), &[text_plain]).status, 202);
    assert_eq!(accepting.metric("tidegate_events_accepted_total"), 2);
    // Still JSON: a text/plain body that is not an event is a 400, not kept.
    assert_eq!(accepting.post(b"hello", &[text_plain]).status, 400);
    assert_eq!(accepting.metric("tidegate_events_accepted_total"), 2);
}

/// Pages on a listed origin may preflight and post, and read the answer; a page on any
/// other origin is refused with 403 whether or not a preflight guarded its request, and
/// nothing of it is kept; clients that send no Origin are not affected.
#[test]
fn cors_lets_listed_origins_post_and_refuses_the_rest() {
    let shop = "https://shop.example";
    let server = Server::start_with_env(
        &["--shards", "1"],
        &[(
            "TIDEGATE_CORS_ALLOWED_ORIGINS",
            "https://shop.example, http://localhost:5173",
        )],
    );
    let preflight = |origin: &str, method: &str| {
        support::request(
            server.addr,
            "OPTIONS",
            "/v1/events",
            &[
                ("origin", origin),
                ("access-control-request-method", method),
                ("access-control-request-headers", "content-type, x-api-key"),
            ],
            b"",
        )
    };
    let allowed = preflight(shop, "POST");
    assert_eq!(allowed.status, 204);
    assert_eq!(allowed.header("access-control-allow-origin"), Some(shop));
    assert_eq!(allowed.header("access-control-allow-methods"), Some("POST"));
    let allowed_headers = allowed.header("access-control-allow-headers").unwrap();
    assert!(allowed_headers.contains("content-type") && allowed_headers.contains("x-api-key"));
    for refused in [
        preflight("https://evil.example", "POST"),
        preflight(shop, "PUT"),
    ] {
        assert_eq!(refused.status, 403);
        assert_eq!(refused.header("access-control-allow-origin"), None);
    }

    let body = event("u1", &uuid(11, 1));
    let posted = server.post(body.as_bytes(), &[JSON, ("origin", shop)]);
    assert_eq!(posted.status, 202);
    assert_eq!(posted.header("access-control-allow-origin"), Some(shop));
    assert_eq!(posted.header("vary"), Some("origin"));
    // An error answer is readable by the page too.
    let bad = server.post(b"[1]", &[JSON, ("origin", shop)]);
    assert_eq!(bad.status, 400);
    assert_eq!(bad.header("access-control-allow-origin"), Some(shop));

    // A beacon-style simple request from an unlisted page: no preflight guarded it.
    let evil = server.post(
        event("u1", &uuid(11, 2)).as_bytes(),
        &[JSON, ("origin", "https://evil.example")],
    );
    assert_eq!(evil.status, 403);
    assert!(
        evil.text().contains("origin_not_allowed"),
        "{}",
        evil.text()
    );
    assert_eq!(evil.header("access-control-allow-origin"), None);
    // No Origin: an SDK or a server, not a page.
    assert_eq!(
        server
            .post(event("u2", &uuid(11, 3)).as_bytes(), &[JSON])
            .status,
        202
    );
    assert_eq!(server.metric("tidegate_events_accepted_total"), 2);
    let metrics = server.get("/metrics").text();
    let refusals = support::metric_with_label(
        &metrics,
        "tidegate_requests_rejected_total",
        "reason=\"origin_not_allowed\"",
    );
    assert_eq!(refusals, 2, "the refused preflight and the refused POST");
}

/// With no `cors.allowed_origins`, browsers get no cross-origin access: a preflight is
/// refused with a message naming the setting, and answers carry no CORS headers.
#[test]
fn cors_is_off_by_default() {
    let server = Server::start(&["--shards", "1"]);
    let refused = support::request(
        server.addr,
        "OPTIONS",
        "/v1/events",
        &[
            ("origin", "https://shop.example"),
            ("access-control-request-method", "POST"),
        ],
        b"",
    );
    assert_eq!(refused.status, 403);
    assert!(refused.text().contains("cors.allowed_origins"));
    let posted = server.post(
        event("u1", &uuid(12, 1)).as_bytes(),
        &[JSON, ("origin", "https://shop.example")],
    );
    assert_eq!(posted.status, 202);
    assert_eq!(posted.header("access-control-allow-origin"), None);
}

/// Shard 0 counts the admin listener's connections with its ingest ones: neither
/// listener's count overwrites the other's in `tidegate_connections_open`.
#[test]
fn open_connections_count_both_listeners_of_shard_zero() {
    let admin: std::net::SocketAddr = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap()
    };
    let server = Server::start_with_env(
        &["--shards", "1"],
        &[("TIDEGATE_SERVER_ADMIN_LISTEN", &admin.to_string())],
    );
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    // The scrape's own connection is open while it is answered: 3 ingest + 1 admin.
    let deadline = Instant::now() + Duration::from_secs(5);
    let open = loop {
        let scrape = support::request(admin, "GET", "/metrics", &[], b"");
        let open = support::metric_sum(&scrape.text(), "tidegate_connections_open");
        if open == 4 || Instant::now() > deadline {
            break open;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(open, 4);
    drop(held);
}

const IOS_KEY: &str = "tg_live_ios_3f9c2a0123456789";
const WEB_KEY: &str = "tg_live_web_77aa550123456789";

fn write_keys(path: &std::path::Path, entries: &[(&str, &str, &str)]) {
    let text: String = entries
        .iter()
        .map(|(name, key, extra)| format!("[[key]]\nname = \"{name}\"\nkey = \"{key}\"\n{extra}\n"))
        .collect();
    std::fs::write(path, text).unwrap();
}

/// With `auth.keys_file`, only requests with a known key that may write are kept: 401 with
/// WWW-Authenticate without one, 403 for a suspended key, 429 with Retry-After over a key's
/// rate, nothing kept from any of them; every refusal and each key's events counted.
#[test]
fn api_keys_decide_who_may_post_and_how_fast() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    write_keys(
        &keys,
        &[
            ("ios-app", IOS_KEY, ""),
            ("web", WEB_KEY, "events_per_second = 1\nburst = 3"),
            ("old", "tg_live_old_00000000000000", "write = false"),
        ],
    );
    let mut server = Server::start_with_env(
        &["--shards", "2"],
        &[("TIDEGATE_AUTH_KEYS_FILE", keys.to_str().unwrap())],
    );
    let body = event("u1", &uuid(13, 1));
    let missing = server.post(body.as_bytes(), &[JSON]);
    assert_eq!(missing.status, 401);
    assert!(missing
        .header("www-authenticate")
        .unwrap()
        .starts_with("Bearer"));
    let unknown = server.post(
        body.as_bytes(),
        &[JSON, ("x-api-key", "tg_live_ios_3f9c2a0123456780")],
    );
    assert_eq!(unknown.status, 401);
    assert!(!unknown.text().contains("3f9c2a"), "{}", unknown.text());
    let suspended = server.post(
        body.as_bytes(),
        &[JSON, ("x-api-key", "tg_live_old_00000000000000")],
    );
    assert_eq!(suspended.status, 403);
    assert_eq!(server.metric("tidegate_events_accepted_total"), 0);

    let bearer = format!("Bearer {IOS_KEY}");
    assert_eq!(
        server
            .post(body.as_bytes(), &[JSON, ("authorization", &bearer)])
            .status,
        202
    );
    let by_query = support::request(
        server.addr,
        "POST",
        &format!("/v1/events?api_key={IOS_KEY}"),
        &[JSON],
        event("u1", &uuid(13, 2)).as_bytes(),
    );
    assert_eq!(by_query.status, 202);

    // The web key: a burst of three events, then one a second.
    let three = support::json_array((3..6).map(|n| event("u2", &uuid(13, n))));
    let web = ("x-api-key", WEB_KEY);
    assert_eq!(server.post(three.as_bytes(), &[JSON, web]).status, 202);
    let limited = server.post(event("u2", &uuid(13, 6)).as_bytes(), &[JSON, web]);
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(limited.json()["error"], "rate_limited");
    std::thread::sleep(Duration::from_millis(1100));
    // A second later there is room for one event, not two: refused whole, nothing kept.
    let two = support::json_array((7..9).map(|n| event("u2", &uuid(13, n))));
    assert_eq!(server.post(two.as_bytes(), &[JSON, web]).status, 429);
    assert_eq!(
        server
            .post(event("u2", &uuid(13, 9)).as_bytes(), &[JSON, web])
            .status,
        202
    );

    assert_eq!(server.metric("tidegate_events_accepted_total"), 6);
    let metrics = server.get("/metrics").text();
    let rejected = |reason: &str| {
        support::metric_with_label(
            &metrics,
            "tidegate_requests_rejected_total",
            &format!("reason=\"{reason}\""),
        )
    };
    assert_eq!(rejected("unauthorized"), 2);
    assert_eq!(rejected("key_cannot_write"), 1);
    assert_eq!(rejected("rate_limited"), 2);
    assert_eq!(
        support::metric_with_label(
            &metrics,
            "tidegate_events_rejected_total",
            "reason=\"rate_limited\""
        ),
        2,
        "the two-event request's events, counted once; the first 429 was refused before its body"
    );
    assert_eq!(
        support::metric_with_label(
            &metrics,
            "tidegate_key_events_accepted_total",
            "key=\"ios-app\""
        ),
        2
    );
    assert_eq!(
        support::metric_with_label(
            &metrics,
            "tidegate_key_events_accepted_total",
            "key=\"web\""
        ),
        4
    );
    assert_eq!(
        support::metric_with_label(
            &metrics,
            "tidegate_key_rate_limited_requests_total",
            "key=\"web\""
        ),
        2
    );
    assert!(!metrics.contains(IOS_KEY) && !metrics.contains(WEB_KEY));

    // Each kept event carries the name of the key that posted it, never the key.
    assert!(server.terminate().success());
    let (events, _) = server.spool_cat();
    let sources: std::collections::BTreeMap<String, String> = events
        .iter()
        .map(|e| {
            (
                e["event_id"].as_str().unwrap().to_owned(),
                e["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: std::collections::BTreeMap<String, String> = [1, 2]
        .map(|n| (uuid(13, n), "ios-app".to_owned()))
        .into_iter()
        .chain([3, 4, 5, 9].map(|n| (uuid(13, n), "web".to_owned())))
        .collect();
    assert_eq!(sources, expected);
}

/// SIGHUP reloads the keys file: a revoked key is refused from the next request on, a new
/// one works, and a connection opened before the reload keeps being served.
#[test]
fn sighup_reloads_api_keys_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    write_keys(&keys, &[("ios-app", IOS_KEY, "")]);
    let server = Server::start_with_env(
        &["--shards", "1"],
        &[("TIDEGATE_AUTH_KEYS_FILE", keys.to_str().unwrap())],
    );
    let mut held = TcpStream::connect(server.addr).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut held_reader = std::io::BufReader::new(held.try_clone().unwrap());
    let mut post_on_held = |n: u64, key: &str| {
        let body = event("u1", &uuid(14, n));
        held.write_all(&support::encode_request(
            "POST",
            "/v1/events",
            &[JSON, ("x-api-key", key)],
            body.as_bytes(),
        ))
        .unwrap();
        support::read_response(&mut held_reader)
            .expect("an answer on the held connection")
            .status
    };
    assert_eq!(post_on_held(1, IOS_KEY), 202);

    write_keys(&keys, &[("web", WEB_KEY, "")]);
    support::signal(server.pid(), "HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while server
        .post(
            event("u2", &uuid(14, 2)).as_bytes(),
            &[JSON, ("x-api-key", WEB_KEY)],
        )
        .status
        != 202
    {
        assert!(Instant::now() < deadline, "the new key never took effect");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(post_on_held(3, IOS_KEY), 401, "the revoked key");
    // A 401 is given before the body is read, so it closes its connection: a new one.
    let mut again = TcpStream::connect(server.addr).unwrap();
    again
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = event("u2", &uuid(14, 4));
    again
        .write_all(&support::encode_request(
            "POST",
            "/v1/events",
            &[JSON, ("x-api-key", WEB_KEY)],
            body.as_bytes(),
        ))
        .unwrap();
    let answer = support::read_response(&mut std::io::BufReader::new(again)).unwrap();
    assert_eq!(answer.status, 202);

    // A file that does not load leaves the keys in force, and the server up.
    std::fs::write(&keys, "not toml [[").unwrap();
    support::signal(server.pid(), "HUP");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        server
            .post(
                event("u2", &uuid(14, 5)).as_bytes(),
                &[JSON, ("x-api-key", WEB_KEY)]
            )
            .status,
        202
    );
}
