//! Open-loop load: a fixed request rate, latency measured from each request's intended send
//! time, as wrk2 does.
//!
//! A closed-loop generator (plain wrk) sends the next request only after the previous answer,
//! so a server stall also stalls the measurement and the tail is under-reported
//! (coordinated omission). Here every connection has a schedule: request k is due at
//! `start + k * interval`. If the connection is still waiting for an earlier answer, the
//! request goes out late, and its latency still counts from when it was due.
//!
//! ```text
//! openloop ADDR RATE SECONDS [CONNECTIONS] [single|batch100]
//! ```
//! prints sent, answered, non-2xx, errors, achieved rate and latency percentiles (µs).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn body(scenario: &str) -> String {
    let event = |i: usize| {
        format!(
            r#"{{"user_id":"user-{i:06}","event_type":"screen_view","event_time":"2024-05-01T12:00:{:02}.123Z","payload":{{"screen":"home","app_version":"4.2.1","os":"android","n":{i}}}}}"#,
            i % 60
        )
    };
    match scenario {
        "batch100" => format!("[{}]", (1..=100).map(event).collect::<Vec<_>>().join(",")),
        _ => event(42),
    }
}

struct Outcome {
    latencies_us: Vec<u64>,
    non_2xx: u64,
    errors: u64,
}

/// Reads one response; returns its status.
fn read_status(reader: &mut BufReader<TcpStream>) -> std::io::Result<u16> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut length = 0;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(status)
}

fn connection(
    addr: SocketAddr,
    request: &[u8],
    start: Instant,
    offset: Duration,
    interval: Duration,
    end: Instant,
) -> Outcome {
    let mut outcome = Outcome {
        latencies_us: Vec::new(),
        non_2xx: 0,
        errors: 0,
    };
    let connect = || -> std::io::Result<(TcpStream, BufReader<TcpStream>)> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok((stream, reader))
    };
    let Ok((mut stream, mut reader)) = connect() else {
        outcome.errors += 1;
        return outcome;
    };
    let mut due = start + offset;
    while due < end {
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let result = stream
            .write_all(request)
            .and_then(|()| read_status(&mut reader));
        match result {
            Ok(status) => {
                outcome.latencies_us.push(due.elapsed().as_micros() as u64);
                if !(200..300).contains(&status) {
                    outcome.non_2xx += 1;
                }
            }
            Err(_) => {
                outcome.errors += 1;
                match connect() {
                    Ok((s, r)) => (stream, reader) = (s, r),
                    Err(_) => return outcome,
                }
            }
        }
        due += interval;
    }
    outcome
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: openloop ADDR RATE SECONDS [CONNECTIONS] [single|batch100]");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse().expect("ADDR is host:port");
    let rate: f64 = args[2].parse().expect("RATE is requests per second");
    let seconds: f64 = args[3].parse().expect("SECONDS");
    let connections: usize = args.get(4).map_or(32, |c| c.parse().expect("CONNECTIONS"));
    let scenario = args.get(5).map_or("single", String::as_str);

    let body = body(scenario);
    let request = format!(
        "POST /v1/events HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    // Each connection sends every `interval`; connections are staggered evenly.
    let interval = Duration::from_secs_f64(connections as f64 / rate);
    let start = Instant::now() + Duration::from_millis(100);
    let end = start + Duration::from_secs_f64(seconds);
    let workers: Vec<_> = (0..connections)
        .map(|c| {
            let request = request.clone();
            let offset = interval.mul_f64(c as f64 / connections as f64);
            std::thread::spawn(move || connection(addr, &request, start, offset, interval, end))
        })
        .collect();
    let mut latencies = Vec::new();
    let (mut non_2xx, mut errors) = (0, 0);
    for worker in workers {
        let outcome = worker.join().unwrap();
        latencies.extend(outcome.latencies_us);
        non_2xx += outcome.non_2xx;
        errors += outcome.errors;
    }
    latencies.sort_unstable();
    let elapsed = start.elapsed().as_secs_f64().max(seconds);
    println!(
        "scenario={scenario} target_rate={rate} answered={} achieved_rate={:.0} non_2xx={non_2xx} errors={errors} p50_us={} p90_us={} p99_us={} p999_us={} max_us={}",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 99.9),
        latencies.last().copied().unwrap_or(0),
    );
}
