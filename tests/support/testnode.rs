//! The CQL test node (the `cql-testnode` workspace crate) as a test fixture: start it on
//! free ports, send it control commands, read back what it stored.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

/// The fixture's binary, beside this test's own build output. It is a crate of its own, so
/// cargo does not hand its path to tidegate's tests; scripts/test.sh builds it first, and a
/// test run without it (`cargo test` alone) builds it here once.
fn binary() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            // target/<profile>/deps/<test> → target/<profile>/cql-testnode
            let path = exe.parent().unwrap().parent().unwrap().join("cql-testnode");
            let status = Command::new(env!("CARGO"))
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "cql-testnode",
                    "--bin",
                    "cql-testnode",
                ])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .unwrap();
            assert!(status.success(), "cannot build the CQL test node");
            assert!(path.exists(), "no {}", path.display());
            path
        })
        .clone()
}

pub struct TestNode {
    child: Child,
    pub port: u16,
    pub control: u16,
}

impl TestNode {
    pub fn start(nodes: usize, shards: usize) -> TestNode {
        TestNode::start_with_standby(nodes, 0, shards)
    }

    /// `nodes` members and `standby` nodes ready to `join`.
    pub fn start_with_standby(nodes: usize, standby: usize, shards: usize) -> TestNode {
        let mut child = Command::new(binary())
            .args([
                "--nodes",
                &nodes.to_string(),
                "--standby",
                &standby.to_string(),
                "--shards",
                &shards.to_string(),
            ])
            .args([
                "--port",
                "0",
                "--shard-aware-port",
                "0",
                "--control-port",
                "0",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let field = |name: &str| -> u16 {
            let words: Vec<&str> = line.split_whitespace().collect();
            let at = words
                .iter()
                .position(|w| *w == name)
                .unwrap_or_else(|| panic!("{line}"));
            words[at + 1].parse().unwrap()
        };
        TestNode {
            port: field("port"),
            control: field("control-port"),
            child,
        }
    }

    pub fn control(&self, command: &str) -> Vec<serde_json::Value> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.control)).unwrap();
        writeln!(stream, "{command}").unwrap();
        let mut out = Vec::new();
        for line in BufReader::new(stream).lines() {
            let line = line.unwrap();
            if line == "END" {
                break;
            }
            assert!(!line.starts_with("error"), "{line}");
            out.push(serde_json::from_str(&line).unwrap());
        }
        out
    }
}

impl TestNode {
    /// `tidegate schema apply` against this node, replication factor 1; returns its stdout.
    pub fn apply_schema(&self) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
            .args(["schema", "apply"])
            .env(
                "TIDEGATE_SCYLLA_CONTACT_POINTS",
                format!("127.0.0.1:{}", self.port),
            )
            .env("TIDEGATE_SCHEMA_REPLICATION_FACTOR", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The event_id of every row the node stores.
    pub fn stored_event_ids(&self) -> std::collections::BTreeSet<String> {
        self.control("rows")
            .iter()
            .map(|row| row["event_id"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// Waits (bounded) until tidegate's rings are empty: everything accepted was written.
pub fn wait_drained(server: &super::Server) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while server.metric("tidegate_ring_events") > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the rings never drained"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
