//! Clients that try to make the server hold memory, hold connection slots, or lose an
//! answer, over raw TCP against the real binary. None of them sends `Expect: 100-continue`.

mod support;

use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use support::{encode_request, event, read_response, uuid, Server};

const JSON: (&str, &str) = ("content-type", "application/json");

fn config(toml: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), toml).unwrap();
    file
}

fn start_with(toml: &str) -> (Server, tempfile::NamedTempFile) {
    let file = config(toml);
    let server = Server::start(&["--shards", "1", "--config", file.path().to_str().unwrap()]);
    (server, file)
}

fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

#[test]
fn a_client_pipelining_without_reading_cannot_grow_memory() {
    let server = Server::start(&["--shards", "1"]);
    let before = server.rss_kib();
    let mut stream = connect(&server);
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let burst = encode_request("GET", "/health", &[], b"").repeat(1000);
    // Without back-pressure the server keeps reading, and 64 MB of requests became
    // hundreds of MB of queued responses.
    let sent = support::write_until_refused(&mut stream, &burst, 64 << 20);
    let grown_kib = server.rss_kib().saturating_sub(before);
    assert!(sent < 64 << 20, "the server never stopped reading");
    assert!(grown_kib < 16 * 1024, "RSS grew {grown_kib} KiB");
    assert_eq!(server.get("/health").status, 200);
}

#[test]
fn a_good_request_followed_by_garbage_gets_its_202_then_a_400() {
    let server = Server::start(&["--shards", "1"]);
    let mut stream = connect(&server);
    let mut bytes = encode_request(
        "POST",
        "/v1/events",
        &[JSON],
        event("g", &uuid(80, 1)).as_bytes(),
    );
    bytes.extend_from_slice(b"GARBAGE\r\n\r\n");
    stream.write_all(&bytes).unwrap();
    let mut reader = BufReader::new(stream);
    let first = read_response(&mut reader).expect("the 202 is delivered");
    assert_eq!(first.status, 202);
    let second = read_response(&mut reader).expect("the garbage is answered");
    assert_eq!(second.status, 400);
    assert_eq!(second.json()["error"], "bad_request");
    assert_eq!(server.metric("tidegate_events_accepted_total"), 1);
}

#[test]
fn answers_are_delivered_before_any_close() {
    let server = Server::start(&[
        "--shards",
        "1",
        "--config",
        config("[server]\nmax_connections_per_shard = 1\n")
            .path()
            .to_str()
            .unwrap(),
    ]);
    // Connection: close with more bytes behind it: the answer, then the close.
    let mut stream = connect(&server);
    let mut bytes = encode_request("GET", "/health", &[("connection", "close")], b"");
    bytes.extend(encode_request("GET", "/health", &[], b"").repeat(200));
    stream.write_all(&bytes).unwrap();
    let mut reader = BufReader::new(stream);
    assert_eq!(read_response(&mut reader).unwrap().status, 200);
    assert!(read_response(&mut reader).is_none(), "closed after it");
    // The slot is free once this side closes too (the server lingers until then).
    drop(reader);
    std::thread::sleep(Duration::from_millis(100));

    // A CL+TE request followed by a smuggled one: one 400, nothing smuggled through.
    let mut stream = connect(&server);
    stream
        .write_all(
            b"POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\
              Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /health HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        .unwrap();
    let mut reader = BufReader::new(stream);
    assert_eq!(read_response(&mut reader).unwrap().status, 400);
    assert!(read_response(&mut reader).is_none());
    drop(reader);
    std::thread::sleep(Duration::from_millis(100));

    // Over the connection limit, a client pipelining two requests reads its 503.
    let _held = connect(&server);
    std::thread::sleep(Duration::from_millis(100));
    let mut stream = connect(&server);
    let mut two = encode_request(
        "POST",
        "/v1/events",
        &[JSON],
        event("l", &uuid(80, 2)).as_bytes(),
    );
    two.extend(encode_request(
        "POST",
        "/v1/events",
        &[JSON],
        event("l", &uuid(80, 3)).as_bytes(),
    ));
    stream.write_all(&two).unwrap();
    let mut reader = BufReader::new(stream);
    let refused = read_response(&mut reader).expect("the 503 arrives");
    assert_eq!(refused.status, 503);
    assert_eq!(refused.json()["cause"], "connection_limit");
}

/// Sends a whole over-limit body the way Python's http.client and many mobile stacks do
/// (no Expect: the body follows the head at once), then reads the answer.
fn oversized_post(server: &Server, body: &[u8]) -> Option<u16> {
    let mut stream = connect(server);
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    read_response(&mut BufReader::new(stream)).map(|r| r.status)
}

#[test]
fn an_early_413_reaches_a_client_that_keeps_sending() {
    let server = Server::start(&["--shards", "1"]);
    let body = vec![b' '; 1_600_000];
    let answered = (0..20)
        .filter(|_| oversized_post(&server, &body) == Some(413))
        .count();
    // Closing without reading what the client still sends resets the connection, and the
    // reset destroyed the answer in about half the tries.
    assert_eq!(answered, 20, "every try reads its 413");
}

#[test]
fn a_trickled_body_gets_408_while_a_slow_steady_upload_completes() {
    let (server, _config) =
        start_with("[server]\nbody_read_timeout_ms = 1000\nbody_min_bytes_per_second = 2000\n");
    // One byte every 100 ms earns 0.5 ms a byte: the body's deadline stays near 1 s.
    let mut trickle = connect(&server);
    trickle
        .write_all(
            b"POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\n\r\n",
        )
        .unwrap();
    let started = Instant::now();
    let mut reader = BufReader::new(trickle.try_clone().unwrap());
    let sender = std::thread::spawn(move || {
        for _ in 0..100 {
            if trickle.write_all(b" ").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let answer = read_response(&mut reader).expect("a 408, not a silent close");
    let waited = started.elapsed();
    assert_eq!(answer.status, 408);
    assert_eq!(answer.json()["error"], "request_timeout");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    sender.join().unwrap();

    // 12 KB at about 6 KB/s takes 2 s, twice the initial second, and earns 6 s on its way.
    let events: Vec<String> = (0..80).map(|i| event("s", &uuid(81, i))).collect();
    let body = support::json_array(events).into_bytes();
    let mut steady = connect(&server);
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    steady.write_all(head.as_bytes()).unwrap();
    let started = Instant::now();
    for piece in body.chunks(body.len() / 20 + 1) {
        steady.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let answer = read_response(&mut BufReader::new(steady)).unwrap();
    assert!(started.elapsed() > Duration::from_millis(1500));
    assert_eq!(answer.status, 202, "{}", answer.text());
}

#[test]
fn hundreds_of_hostile_connections_stay_within_the_memory_formula() {
    // The README's formula, per shard: max_connections × (2 × max(max_header_bytes, 8 KiB)
    // + 16 KiB) + max_inflight_body_bytes + max_decompressed_bytes + pooled buffers, above
    // an idle server. Here: 400 × 48 KiB + 8 MiB (+ 1 MiB, nothing pooled yet) ≈ 28 MiB.
    let (server, _config) = start_with(
        "[server]\nmax_header_bytes = 16384\nbody_read_timeout_ms = 60000\n\
         [limits]\nmax_body_bytes = 1048576\nmax_inflight_body_bytes = 8388608\n\
         max_decompressed_bytes = 1048576\n",
    );
    let before = server.rss_kib();
    let part = vec![b' '; 512 * 1024];
    let mut held = Vec::new();
    for _ in 0..400 {
        let mut stream = connect(&server);
        let head = "POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
                    Content-Length: 1048576\r\n\r\n";
        stream.write_all(head.as_bytes()).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // Half a body each, then silence; a refused one is drained and closed.
        let _ = stream.write_all(&part);
        held.push(stream);
    }
    std::thread::sleep(Duration::from_millis(500));
    let grown_mib = server.rss_kib().saturating_sub(before) / 1024;
    // Before the budget, each such connection cost ~2.2 MB: 400 of them, ~880 MB.
    assert!(grown_mib <= 28, "RSS grew {grown_mib} MiB");
    let refused = server.metric("tidegate_unavailable_total");
    assert!(refused >= 380, "{refused} refused with body_memory");
    // The refused ones read their 503.
    let stream = held.pop().unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let answer = read_response(&mut BufReader::new(stream)).unwrap();
    assert_eq!(answer.status, 503);
    assert_eq!(answer.json()["cause"], "body_memory");
    drop(held);
    assert_eq!(server.get("/health").status, 200);
}

#[test]
fn error_answers_stay_small_whatever_the_request() {
    let server = Server::start(&["--shards", "1"]);
    // Every event carries an unknown field with a 4 KB name: gzip shrinks the request to
    // a few KB, and echoing every name made a reply hundreds of times its size.
    let name = "k".repeat(4096);
    let events: Vec<String> = (0..2000)
        .map(|i| format!(r#"{{"user_id":"u{i}","event_type":"t","event_time":1,"{name}":1}}"#))
        .collect();
    let body = support::json_array(events);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(body.as_bytes()).unwrap();
    let compressed = gz.finish().unwrap();
    let r = server.post(&compressed, &[JSON, ("content-encoding", "gzip")]);
    assert_eq!(r.status, 400);
    assert!(r.body.len() <= 16 * 1024, "{} bytes", r.body.len());
    let body = r.json();
    assert_eq!(body["invalid"], 2000);
    let field = body["errors"][0]["field"].as_str().unwrap();
    assert!(
        field.len() < 100,
        "the field name is clipped: {}",
        field.len()
    );
}
