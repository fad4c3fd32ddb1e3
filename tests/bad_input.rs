//! A corpus of hostile and malformed requests, sent as raw bytes over TCP to the real
//! binary: request lines, heads, framing (including CL/TE smuggling attempts), encodings,
//! numbers, strings, depth and timestamps.
//!
//! For every case: the exact status, a JSON body naming the error (every answer tidegate
//! sends names what is wrong), `/health` still answering, and — at the end — nothing of a
//! refused request stored: the spool holds exactly the events of the cases answered 202.

mod support;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::{read_response, uuid, Server};

/// One raw request and the status it must get.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    status: u16,
    /// Event ids stored when the case is answered 202.
    stores: Vec<String>,
}

fn post(headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST /v1/events HTTP/1.1\r\nHost: t\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn post_json(body: &str) -> Vec<u8> {
    post("Content-Type: application/json\r\n", body.as_bytes())
}

fn chunked(headers: &str, chunks: &str) -> Vec<u8> {
    format!(
        "POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{headers}\
         Transfer-Encoding: chunked\r\n\r\n{chunks}"
    )
    .into_bytes()
}

fn get(head: &str) -> Vec<u8> {
    head.as_bytes().to_vec()
}

/// A valid event with the given id and payload text.
fn event_with(id: &str, payload: &str) -> String {
    format!(
        r#"{{"user_id":"u","event_type":"t","event_time":"2024-05-01T12:00:00Z","event_id":"{id}","payload":{payload}}}"#
    )
}

/// A valid event with one field replaced by `field_json` (`"name":value`).
fn event_field(field_json: &str) -> String {
    format!(r#"{{"user_id":"u","event_type":"t","event_time":1700000000000,{field_json}}}"#)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut case = |name, bytes: Vec<u8>, status| {
        cases.push(Case {
            name,
            bytes,
            status,
            stores: Vec::new(),
        })
    };
    // Request lines.
    // RFC 9112 §2.2: empty lines before a request line are ignored.
    case(
        "empty lines before the request line",
        get("\r\n\r\nGET /health HTTP/1.1\r\nHost: t\r\n\r\n"),
        200,
    );
    case("garbage line", get("BAD\r\n\r\n"), 400);
    case("method only", get("GET\r\n\r\n"), 400);
    case(
        "extra token",
        get("GET / HTTP/1.1 x\r\nHost: t\r\n\r\n"),
        400,
    );
    case(
        "double space",
        get("GET  /health HTTP/1.1\r\nHost: t\r\n\r\n"),
        400,
    );
    case(
        "bad method byte",
        get("G@T / HTTP/1.1\r\nHost: t\r\n\r\n"),
        400,
    );
    case(
        "NUL in target",
        get("GET /\0 HTTP/1.1\r\nHost: t\r\n\r\n"),
        400,
    );
    case(
        "space in target",
        get("GET /a b HTTP/1.1\r\nHost: t\r\n\r\n"),
        400,
    );
    case("HTTP/2.0", get("GET / HTTP/2.0\r\nHost: t\r\n\r\n"), 505);
    case("HTTP/1.2", get("GET / HTTP/1.2\r\nHost: t\r\n\r\n"), 505);
    case("HTTP/3.0", get("GET / HTTP/3.0\r\nHost: t\r\n\r\n"), 505);
    case("h2 preface", get("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 505);
    case(
        "lowercase version",
        get("GET / http/1.1\r\nHost: t\r\n\r\n"),
        400,
    );
    case(
        "version without minor",
        get("GET / HTTP/2\r\nHost: t\r\n\r\n"),
        400,
    );
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(2000));
    case("target over max_uri_bytes", long_target.into_bytes(), 414);
    let long_query = format!(
        "GET /health?{} HTTP/1.1\r\nHost: t\r\n\r\n",
        "q".repeat(1500)
    );
    case("query over max_uri_bytes", long_query.into_bytes(), 414);

    // Heads.
    case("no Host", get("GET /health HTTP/1.1\r\n\r\n"), 400);
    case(
        "two Hosts",
        get("GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        400,
    );
    case(
        "HTTP/1.0 without Host",
        get("GET /health HTTP/1.0\r\n\r\n"),
        200,
    );
    case(
        "NUL in header value",
        get("GET /health HTTP/1.1\r\nHost: t\r\nX: a\0b\r\n\r\n"),
        400,
    );
    case(
        "bare CR in header value",
        get("GET /health HTTP/1.1\r\nHost: t\r\nX: a\rb\r\n\r\n"),
        400,
    );
    case(
        "obs-fold",
        get("GET /health HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n"),
        400,
    );
    case(
        "space in header name",
        get("GET /health HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n"),
        400,
    );
    case(
        "space before colon",
        get("GET /health HTTP/1.1\r\nHost : t\r\n\r\n"),
        400,
    );
    case(
        "header without colon",
        get("GET /health HTTP/1.1\r\nHost: t\r\nNoColon\r\n\r\n"),
        400,
    );
    let big_head = format!(
        "GET /health HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n",
        "h".repeat(9000)
    );
    case("head over max_header_bytes", big_head.into_bytes(), 431);
    let many = (0..120)
        .map(|i| format!("X-{i}: v\r\n"))
        .collect::<String>();
    let many_headers = format!("GET /health HTTP/1.1\r\nHost: t\r\n{many}\r\n");
    case("120 headers", many_headers.into_bytes(), 431);

    // Framing and smuggling attempts.
    let ev = event_with(&uuid(90, 0), "{}");
    case(
        "CL and TE together",
        get(
            "POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
             GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        ),
        400,
    );
    case(
        "two different Content-Lengths",
        post(
            "Content-Type: application/json\r\nContent-Length: 3\r\n",
            ev.as_bytes(),
        ),
        400,
    );
    for (name, value) in [
        ("negative Content-Length", "-1"),
        ("alphabetic Content-Length", "abc"),
        ("exponent Content-Length", "1e3"),
        ("signed Content-Length", "+5"),
        ("list Content-Length", "5, 5"),
    ] {
        case(
            name,
            format!("POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Length: {value}\r\n\r\n{{}}")
                .into_bytes(),
            400,
        );
    }
    case(
        "TE gzip not chunked",
        get("POST /v1/events HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n{}"),
        400,
    );
    case(
        "TE xchunked",
        get("POST /v1/events HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n{}"),
        400,
    );
    case("bad chunk size", chunked("", "zz\r\n{}\r\n0\r\n\r\n"), 400);
    case(
        "chunk size overflow",
        chunked("", "fffffffffffffffffff\r\n{}\r\n0\r\n\r\n"),
        400,
    );
    case(
        "chunked body over max_body_bytes",
        chunked(
            "",
            &format!("{:x}\r\n{}\r\n0\r\n\r\n", 70_000, "a".repeat(70_000)),
        ),
        413,
    );
    case(
        "Content-Length over max_body_bytes",
        get("POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999\r\n\r\n"),
        413,
    );

    // Media types and encodings.
    case(
        "text/html",
        post("Content-Type: text/html\r\n", ev.as_bytes()),
        415,
    );
    case(
        "duplicate Content-Type",
        post(
            "Content-Type: application/json\r\nContent-Type: application/json\r\n",
            ev.as_bytes(),
        ),
        400,
    );
    case(
        "Content-Encoding br",
        post(
            "Content-Type: application/json\r\nContent-Encoding: br\r\n",
            ev.as_bytes(),
        ),
        415,
    );
    case(
        "duplicate Content-Encoding",
        post(
            "Content-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Encoding: gzip\r\n",
            &gzip(ev.as_bytes()),
        ),
        400,
    );
    case(
        "gzip header, plain body",
        post(
            "Content-Type: application/json\r\nContent-Encoding: gzip\r\n",
            ev.as_bytes(),
        ),
        400,
    );
    case(
        "zstd header, garbage body",
        post(
            "Content-Type: application/json\r\nContent-Encoding: zstd\r\n",
            b"\x28\xb5\x2f\xfdgarbage",
        ),
        400,
    );
    case(
        "gzip bomb",
        post(
            "Content-Type: application/json\r\nContent-Encoding: gzip\r\n",
            &gzip(&vec![b' '; 2 << 20]),
        ),
        413,
    );
    case(
        "PUT on events",
        get("PUT /v1/events HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"),
        405,
    );
    case(
        "unknown route",
        get("GET /nope HTTP/1.1\r\nHost: t\r\n\r\n"),
        404,
    );

    // JSON framing.
    case("empty body", post_json(""), 400);
    case("empty array", post_json("[]"), 400);
    case("truncated object", post_json("{"), 400);
    case("bare literal", post_json("nul"), 400);
    case("top-level number", post_json("42"), 400);
    case("trailing comma", post_json(&format!("[{ev},]")), 400);
    case("two documents", post_json(&format!("{ev}{ev}")), 400);
    case(
        "invalid UTF-8",
        post(
            "Content-Type: application/json\r\n",
            b"{\"user_id\":\"\xff\xfe\",\"event_type\":\"t\",\"event_time\":1}",
        ),
        400,
    );
    case(
        "lone surrogate",
        post_json(&event_field(r#""payload":{"s":"\ud800"}"#)),
        400,
    );
    case(
        "raw control character",
        post_json(&event_field("\"payload\":{\"s\":\"a\u{1}b\"}")),
        400,
    );
    let deep = format!("{}1{}", "{\"a\":".repeat(100), "}".repeat(100));
    case(
        "payload 100 levels deep",
        post_json(&event_field(&format!("\"payload\":{deep}"))),
        400,
    );
    case(
        "duplicate top-level key",
        post_json(r#"{"user_id":"u","user_id":"v","event_type":"t","event_time":1}"#),
        400,
    );
    case(
        "duplicate payload key",
        post_json(&event_field(r#""payload":{"k":1,"k":2}"#)),
        400,
    );
    case(
        "unknown field",
        post_json(&event_field(r#""extra":1"#)),
        400,
    );
    case(
        "user_id a number",
        post_json(r#"{"user_id":5,"event_type":"t","event_time":1}"#),
        400,
    );
    case(
        "user_id empty",
        post_json(r#"{"user_id":"","event_type":"t","event_time":1}"#),
        400,
    );
    case(
        "user_id 300 bytes",
        post_json(&format!(
            r#"{{"user_id":"{}","event_type":"t","event_time":1}}"#,
            "u".repeat(300)
        )),
        400,
    );
    case(
        "missing event_type",
        post_json(r#"{"user_id":"u","event_time":1}"#),
        400,
    );
    case(
        "event_id not a UUID",
        post_json(&event_field(r#""event_id":"x""#)),
        400,
    );
    case(
        "payload an array",
        post_json(&event_field(r#""payload":[1]"#)),
        400,
    );

    // Numbers.
    for (name, number) in [
        ("leading zero", "01"),
        ("bare dot", "1."),
        ("leading dot", ".5"),
        ("plus sign", "+1"),
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("hex", "0x10"),
        ("empty exponent", "1e"),
    ] {
        case(
            name,
            post_json(&event_field(&format!("\"payload\":{{\"n\":{number}}}"))),
            400,
        );
    }
    case(
        "event_time beyond i64",
        post_json(r#"{"user_id":"u","event_type":"t","event_time":99999999999999999999}"#),
        400,
    );
    case(
        "event_time a float",
        post_json(r#"{"user_id":"u","event_type":"t","event_time":1.5}"#),
        400,
    );
    case(
        "event_time 1e400",
        post_json(r#"{"user_id":"u","event_type":"t","event_time":1e400}"#),
        400,
    );

    // Timestamps.
    for (name, time) in [
        ("month 13", "2024-13-01T00:00:00Z"),
        ("February 30", "2024-02-30T00:00:00Z"),
        ("leap second not at 23:59 UTC", "2016-12-31T23:58:60Z"),
        ("second 61", "2016-12-31T23:59:61Z"),
        ("no offset", "2024-05-01T12:00:00"),
        ("space separator", "2024-05-01 12:00:00Z"),
        ("year 10000", "10000-01-01T00:00:00Z"),
    ] {
        case(
            name,
            post_json(&format!(
                r#"{{"user_id":"u","event_type":"t","event_time":"{time}"}}"#
            )),
            400,
        );
    }
    case(
        "negative epoch",
        post_json(r#"{"user_id":"u","event_type":"t","event_time":-1}"#),
        400,
    );

    // All or nothing: one bad event refuses the valid ones beside it.
    case(
        "valid and invalid together",
        post_json(&format!(
            "[{},{}]",
            event_with(&uuid(91, 1), "{}"),
            event_field(r#""extra":1"#)
        )),
        400,
    );
    case(
        "NDJSON with one bad line",
        post(
            "Content-Type: application/x-ndjson\r\n",
            format!("{}\n{{\n", event_with(&uuid(91, 2), "{}")).as_bytes(),
        ),
        400,
    );
    let too_many = format!(
        "[{}]",
        (0..51)
            .map(|i| event_with(&uuid(91, 100 + i), "{}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    case("51 events over a limit of 50", post_json(&too_many), 413);

    // Controls: valid, if unusual, requests are kept.
    let mut keep = |name, bytes: Vec<u8>, ids: Vec<String>| {
        cases.push(Case {
            name,
            bytes,
            status: 202,
            stores: ids,
        })
    };
    let id = uuid(92, 1);
    keep(
        "numbers at the edges",
        post_json(&event_with(
            &id,
            r#"{"u":18446744073709551616,"tiny":1e-400,"huge":1E+400,"pi":3.141592653589793238}"#,
        )),
        vec![id],
    );
    let id = uuid(92, 2);
    keep(
        "leap second",
        post_json(&format!(
            r#"{{"user_id":"u","event_type":"t","event_time":"2016-12-31T23:59:60Z","event_id":"{id}"}}"#
        )),
        vec![id],
    );
    let id = uuid(92, 3);
    let ev = event_with(&id, r#"{"s":"\u0000\"\\"}"#);
    keep(
        "chunked",
        chunked("", &format!("{:x}\r\n{ev}\r\n0\r\n\r\n", ev.len())),
        vec![id],
    );
    let id = uuid(92, 4);
    let ev = event_with(&id, "{}");
    keep(
        "HTTP/1.0 with a body",
        format!(
            "POST /v1/events HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{ev}",
            ev.len()
        )
        .into_bytes(),
        vec![id],
    );
    let id = uuid(92, 5);
    keep(
        "head of exactly max_header_bytes",
        {
            let mut head = format!(
                "POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX: ",
                event_with(&id, "{}").len()
            );
            let pad = 8192 - head.len() - 4;
            head.push_str(&"p".repeat(pad));
            head.push_str("\r\n\r\n");
            assert_eq!(head.len(), 8192);
            let mut bytes = head.into_bytes();
            bytes.extend_from_slice(event_with(&id, "{}").as_bytes());
            bytes
        },
        vec![id],
    );
    cases
}

/// Sends `bytes` on a new connection and reads the one answer.
fn exchange(server: &Server, bytes: &[u8]) -> Option<support::Response> {
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut reader = BufReader::new(stream);
    read_response(&mut reader)
}

#[test]
fn every_hostile_request_gets_its_exact_answer_and_nothing_refused_is_kept() {
    let config = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(
        config.path(),
        "[server]\nmax_header_bytes = 8192\nmax_uri_bytes = 1024\n\
         [limits]\nmax_body_bytes = 65536\nmax_inflight_body_bytes = 1048576\n\
         max_decompressed_bytes = 1048576\nmax_events_per_request = 50\n",
    )
    .unwrap();
    let mut server = Server::start(&["--shards", "1", "--config", config.path().to_str().unwrap()]);
    let cases = cases();
    assert!(cases.len() >= 60, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    let mut expected_ids = std::collections::BTreeSet::new();
    for case in &cases {
        match exchange(&server, &case.bytes) {
            None => failures.push(format!("{}: no answer", case.name)),
            Some(r) => {
                if r.status != case.status {
                    failures.push(format!(
                        "{}: {} instead of {} ({})",
                        case.name,
                        r.status,
                        case.status,
                        r.text()
                    ));
                } else if r.status >= 400 {
                    let body = r.json();
                    if !body["error"].is_string() || !body["message"].is_string() {
                        failures.push(format!("{}: unnamed error {}", case.name, r.text()));
                    }
                }
            }
        }
        expected_ids.extend(case.stores.iter().cloned());
        let health = server.get("/health");
        assert_eq!(health.status, 200, "after {}", case.name);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    assert_eq!(
        server.metric("tidegate_events_accepted_total"),
        expected_ids.len() as u64
    );
    server.terminate();
    let (events, _) = server.spool_cat();
    assert_eq!(support::event_ids(&events), expected_ids);
}

#[test]
fn numbers_are_stored_exactly_as_sent() {
    let mut server = Server::start(&["--shards", "1"]);
    let id = uuid(93, 1);
    let payload = r#"{"pi":3.141592653589793238,"tiny":1e-400,"cents":1.10,"e":1e2,"u":18446744073709551616,"neg":-9223372036854775809,"huge":1E+400,"z":-0.0,"list":[0,1.0e-5]}"#;
    let r = server.post_json(&event_with(&id, payload));
    assert_eq!(r.status, 202, "{}", r.text());
    server.terminate();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(["spool", "cat"])
        .arg(&server.data_dir)
        .output()
        .unwrap();
    let mut text = String::new();
    out.stdout.as_slice().read_to_string(&mut text).unwrap();
    assert!(
        text.contains(&format!("\"payload\":{payload}")),
        "stored as sent: {text}"
    );
}
