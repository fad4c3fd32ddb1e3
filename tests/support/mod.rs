//! Test support: start the real `tidegate` binary on a free port and talk HTTP/1.1 to it
//! over real TCP with a deliberately small client, so tests control every byte sent.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub mod broker;
pub mod testnode;

pub struct Server {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts tidegate with a fresh data directory plus `args`, and waits until it serves.
    pub fn start(args: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        Server::launch(dir, data_dir, args, &[])
    }

    /// Like [`Server::start`], with extra environment variables for the server.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        Server::launch(dir, data_dir, args, env)
    }

    /// Starts tidegate on an existing data directory (a restart).
    pub fn start_in(data_dir: &Path, args: &[&str]) -> Server {
        Server::launch(tempfile::tempdir().unwrap(), data_dir.to_owned(), args, &[])
    }

    /// Like [`Server::start_in`], with extra environment variables for the server.
    pub fn start_in_with_env(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::launch(tempfile::tempdir().unwrap(), data_dir.to_owned(), args, env)
    }

    fn launch(
        dir: tempfile::TempDir,
        data_dir: PathBuf,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tidegate"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tidegate");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address announced: {line:?}"))
            .parse()
            .unwrap();
        Server {
            addr,
            data_dir,
            child: Some(child),
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn post(&self, body: &[u8], headers: &[(&str, &str)]) -> Response {
        request(self.addr, "POST", "/v1/events", headers, body)
    }

    pub fn post_json(&self, body: &str) -> Response {
        self.post(body.as_bytes(), &[("content-type", "application/json")])
    }

    pub fn get(&self, path: &str) -> Response {
        request(self.addr, "GET", path, &[], b"")
    }

    /// One metric value summed over shards, e.g. `tidegate_events_accepted_total`.
    pub fn metric(&self, name: &str) -> u64 {
        metric_sum(&self.get("/metrics").text(), name)
    }

    /// What a test that timed out waiting on the server prints: the log, writer and sink
    /// series from `/metrics`, or that the server did not answer it (a shard that stopped
    /// serving looks exactly like that).
    pub fn state_for_failure(&self) -> String {
        match try_request(self.addr, "GET", "/metrics", &[], b"") {
            None => "the server did not answer /metrics".into(),
            Some(response) => response
                .text()
                .lines()
                .filter(|line| {
                    !line.starts_with('#')
                        && !line.contains("_bucket{")
                        && ["tidegate_log_", "tidegate_writer_", "tidegate_sink_"]
                            .iter()
                            .any(|prefix| line.starts_with(prefix))
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.stop_with("TERM")
    }

    /// Sends the named signal (TERM, INT) and waits for the process to exit.
    pub fn stop_with(&mut self, signal_name: &str) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(child.id(), signal_name);
        wait_timeout(&mut child, Duration::from_secs(60)).expect("tidegate exits after SIGTERM")
    }

    /// Runs `tidegate spool cat` on the data directory: (stdout lines, stderr).
    pub fn spool_cat(&self) -> (Vec<serde_json::Value>, String) {
        spool_cat(&self.data_dir)
    }

    /// Resident memory of the server, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name} {pid}");
}

/// Starts tidegate on a fresh data directory with `args` and the log filter `rust_log`
/// (`None`: RUST_LOG unset, so the configured level applies), waits until it serves, stops
/// it with SIGTERM, and returns how it exited and what it logged.
pub fn logs_of_a_run(args: &[&str], rust_log: Option<&str>) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidegate"));
    command
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match rust_log {
        Some(filter) => command.env("RUST_LOG", filter),
        None => command.env_remove("RUST_LOG"),
    };
    let mut child = command.spawn().expect("start tidegate");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening on"), "{line:?}");
    signal(child.id(), "TERM");
    let out = child.wait_with_output().unwrap();
    (out.status, String::from_utf8(out.stderr).unwrap())
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

pub fn spool_cat(dir: &Path) -> (Vec<serde_json::Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(["spool", "cat"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "spool cat failed: {out:?}");
    let events = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (events, String::from_utf8(out.stderr).unwrap())
}

pub fn event_ids(events: &[serde_json::Value]) -> BTreeSet<String> {
    events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

pub fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The sum of `name`'s samples whose labels include `label` (e.g. `reason="unauthorized"`),
/// over every shard.
pub fn metric_with_label(text: &str, name: &str, label: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Writes `burst` again and again without reading, until a write fails (with a write
/// timeout set: the server stopped reading) or `limit` bytes went out; returns the bytes
/// sent. What a client that pipelines without reading does.
pub fn write_until_refused(stream: &mut impl Write, burst: &[u8], limit: usize) -> usize {
    let mut sent = 0usize;
    while sent < limit {
        match stream.write(burst) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    sent
}

/// Sends one request on a new connection and reads the response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(addr, method, path, headers, body).expect("a response")
}

/// Like [`request`], but `None` when the connection fails or closes without a response.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<Response> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    stream
        .write_all(&encode_request(method, path, headers, body))
        .ok()?;
    read_response(&mut BufReader::new(stream))
}

pub fn encode_request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: test\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"))
    {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Reads one response (Content-Length framed, as tidegate always sends).
pub fn read_response(reader: &mut impl BufRead) -> Option<Response> {
    let mut status_line = String::new();
    if reader.read_line(&mut status_line).ok()? == 0 {
        return None;
    }
    let status = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Response {
        status,
        headers,
        body,
    })
}

/// A JSON array body of the given event objects.
pub fn json_array(events: impl IntoIterator<Item = String>) -> String {
    format!("[{}]", events.into_iter().collect::<Vec<_>>().join(","))
}

/// A valid event with a client-chosen id.
pub fn event(user: &str, id: &str) -> String {
    format!(
        r#"{{"user_id":"{user}","event_type":"test","event_time":1700000000000,"event_id":"{id}","payload":{{"n":1}}}}"#
    )
}

/// A deterministic UUID for test event `n` of series `series`.
pub fn uuid(series: u32, n: u64) -> String {
    format!(
        "{:08x}-0000-4000-8000-{:012x}",
        series,
        n & 0xffff_ffff_ffff
    )
}
