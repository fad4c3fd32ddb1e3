//! Arbitrary input never takes the server down, and damaged spools are still readable.
//!
//! The body generator is a small deterministic mutator (seeded xorshift) over valid and
//! near-valid bodies: truncations, byte flips, splices of JSON fragments, deep nesting,
//! invalid UTF-8. Deterministic seeds make any failure reproducible.

mod support;

use std::io::Write;
use std::process::Command;

use support::{event, uuid, Server};
use tidegate::event::{Arrival, BatchParser, BodyFormat, EncodedBatch};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const FRAGMENTS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    "null",
    "true",
    "1e999",
    "-0",
    "\"user_id\"",
    "\"payload\"",
    "\"event_time\"",
    "\"event_id\"",
    "{\"a\":{\"a\":",
    "\u{1F600}",
    "\n",
    "\r\n",
    "18446744073709551616",
    "\"2024-02-29T00:00:00Z\"",
];

fn mutate(rng: &mut Rng, seed_bodies: &[Vec<u8>]) -> Vec<u8> {
    let mut body = seed_bodies[rng.below(seed_bodies.len())].clone();
    for _ in 0..=rng.below(4) {
        match rng.below(6) {
            0 if !body.is_empty() => {
                let at = rng.below(body.len());
                body.truncate(at);
            }
            1 if !body.is_empty() => {
                let at = rng.below(body.len());
                body[at] = rng.next() as u8;
            }
            2 => {
                let at = rng.below(body.len() + 1);
                let frag = FRAGMENTS[rng.below(FRAGMENTS.len())].as_bytes();
                body.splice(at..at, frag.iter().copied());
            }
            3 => {
                let depth = rng.below(100);
                let mut nested = "[".repeat(depth).into_bytes();
                nested.extend(body);
                nested.extend("]".repeat(rng.below(depth + 1)).into_bytes());
                body = nested;
            }
            4 if body.len() > 2 => {
                let a = rng.below(body.len());
                let b = rng.below(body.len());
                body.swap(a, b);
            }
            _ => body.extend_from_slice(&[0xff, 0xc0, 0x80]),
        }
    }
    body
}

fn seeds() -> Vec<Vec<u8>> {
    let one = event("fuzz", &uuid(40, 1));
    vec![
        one.clone().into_bytes(),
        format!("[{one},{one}]").into_bytes(),
        format!("{one}\n{one}\n").into_bytes(),
        br#"{"user_id":"u","event_type":"t","event_time":"2024-01-01T00:00:00Z","payload":{"a":[1,{"b":null}],"c":"\u00e9\n"}}"#.to_vec(),
        b"[]".to_vec(),
    ]
}

/// The parser itself, many thousands of times: never panics, and a refused body leaves
/// the output untouched.
#[test]
fn parser_never_panics_on_arbitrary_bodies() {
    let mut parser = BatchParser::new(Default::default());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let seeds = seeds();
    let mut out = Vec::new();
    let mut batch = EncodedBatch::default();
    let (mut ok, mut refused) = (0, 0);
    for i in 0..30_000 {
        let body = mutate(&mut rng, &seeds);
        let format = if i % 3 == 0 {
            BodyFormat::Ndjson
        } else {
            BodyFormat::Json
        };
        out.clear();
        match parser.parse(&body, format, Arrival::at(0), &mut out, &mut batch) {
            Ok(()) => {
                ok += 1;
                assert_eq!(*batch.ends.last().unwrap(), out.len());
            }
            Err(_) => {
                refused += 1;
                assert!(out.is_empty() && batch.is_empty());
            }
        }
    }
    assert!(ok > 100 && refused > 100, "ok {ok}, refused {refused}");
}

/// The same over TCP: every answer is a clean 202/400/413/415 and the server keeps serving.
#[test]
fn server_survives_arbitrary_bodies() {
    let server = Server::start(&["--shards", "1"]);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let seeds = seeds();
    for i in 0..1_500 {
        let body = mutate(&mut rng, &seeds);
        let content_type = if i % 3 == 0 {
            "application/x-ndjson"
        } else {
            "application/json"
        };
        let (body, encoding) = match i % 10 {
            0 => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(&body).unwrap();
                (enc.finish().unwrap(), "gzip")
            }
            1 => {
                let mut b = body.clone();
                b.truncate(b.len() / 2);
                (b, "zstd") // not zstd at all
            }
            _ => (body, "identity"),
        };
        let r = server.post(
            &body,
            &[
                ("content-type", content_type),
                ("content-encoding", encoding),
            ],
        );
        assert!(
            matches!(r.status, 202 | 400 | 413 | 415),
            "request {i}: {} {}",
            r.status,
            r.text()
        );
        let _ = r.json();
    }
    assert_eq!(server.get("/health").status, 200);
    // Every event the server parsed was counted exactly once.
    let accepted = server.metric("tidegate_events_accepted_total");
    assert!(accepted > 0);
}

#[test]
fn spool_cat_skips_torn_and_corrupt_records_and_keeps_going() {
    let mut server = Server::start(&["--shards", "1"]);
    for i in 0..30u64 {
        assert_eq!(server.post_json(&event("u", &uuid(50, i))).status, 202);
        // Separate requests arrive in separate batches often enough to give many records.
    }
    assert!(server.terminate().success());
    let segments: Vec<_> = walk(&server.data_dir);
    assert_eq!(segments.len(), 1, "{segments:?}");
    let path = &segments[0];
    let mut data = std::fs::read(path).unwrap();
    let record = data.len() / 30;
    // Flip a byte inside the 10th record's payload and tear the last record.
    data[record * 10 + 20] ^= 0x55;
    data.truncate(data.len() - 7);
    std::fs::write(path, &data).unwrap();

    let (events, report) = server.spool_cat();
    assert_eq!(events.len(), 28, "{report}");
    assert!(report.contains("checksum mismatch"), "{report}");
    assert!(report.contains("torn record"), "{report}");
    assert!(report.contains("28 events"), "{report}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn cli_config_print_and_invalid_values() {
    let bin = env!("CARGO_BIN_EXE_tidegate");
    let out = Command::new(bin)
        .args(["config", "print", "--shards", "3"])
        .env("TIDEGATE_LIMITS_MAX_BODY_BYTES", "2048")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("shards = 3"), "{text}");
    assert!(text.contains("max_body_bytes = 2048"), "{text}");

    let out = Command::new(bin)
        .args(["config", "print"])
        .env("TIDEGATE_RING_CAPACITY_EVENTS", "many")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("ring.capacity_events"), "{err}");

    let out = Command::new(bin).args(["--sink", "tape"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("tape"));

    let out = Command::new(bin).args(["--shards", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));

    // A misspelt variable must not leave the default silently in force.
    let out = Command::new(bin)
        .args(["config", "print"])
        .env("TIDEGATE_SPOOL_FSNYC", "never")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("TIDEGATE_SPOOL_FSNYC"), "{err}");

    let out = Command::new(bin).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in ["--listen", "--shards", "--sink", "--data-dir", "--config"] {
        assert!(help.contains(flag), "{flag} undocumented");
    }
}

#[test]
fn sigint_drains_like_sigterm() {
    let mut server = Server::start(&["--shards", "2"]);
    for i in 0..10u64 {
        assert_eq!(server.post_json(&event("u", &uuid(80, i))).status, 202);
    }
    assert!(server.stop_with("INT").success());
    assert_eq!(server.spool_cat().0.len(), 10);
}

/// An idle keep-alive connection does not hold the stop back for the grace period (30 s
/// by default): shutdown closes it at once. Its listener is registered when the connection
/// is first polled and not re-polled after, so this checks that registration.
#[test]
fn shutdown_closes_idle_keep_alive_connections_at_once() {
    let mut server = Server::start(&["--shards", "1"]);
    let mut idle = std::net::TcpStream::connect(server.addr).unwrap();
    for i in 0..3u64 {
        let body = event("idle", &uuid(81, i));
        let request = support::encode_request(
            "POST",
            "/v1/events",
            &[("content-type", "application/json")],
            body.as_bytes(),
        );
        idle.write_all(&request).unwrap();
        let mut reader = std::io::BufReader::new(&idle);
        assert_eq!(support::read_response(&mut reader).unwrap().status, 202);
    }
    let started = std::time::Instant::now();
    assert!(server.terminate().success());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the stop waited for the idle connection: {:?}",
        started.elapsed()
    );
    idle.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut rest = Vec::new();
    use std::io::Read;
    assert_eq!(
        idle.read_to_end(&mut rest).unwrap(),
        0,
        "closed, nothing more sent"
    );
    assert_eq!(server.spool_cat().0.len(), 3);
}

#[test]
fn json_logs_are_one_object_per_line() {
    let (status, logs) = support::logs_of_a_run(&["--shards", "1", "--log-format", "json"], None);
    assert!(status.success());
    let lines: Vec<&str> = logs.lines().collect();
    assert!(lines.len() >= 2, "{logs}");
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
    }
}
