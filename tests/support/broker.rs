//! A real Kafka-compatible broker for tests: tansu, installed by `scripts/install-tansu.sh`
//! (which `scripts/test.sh` runs first), on a free loopback port.
//!
//! The broker keeps its topics in a SQLite file in its own directory, so a test can stop
//! it and start it again on the same port and data, as an operator restarting a broker.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Broker {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// Where the broker binary is: `TIDEGATE_TEST_TANSU`, else the install script's cache.
fn tansu_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TIDEGATE_TEST_TANSU") {
        return path.into();
    }
    let root = std::env::var_os("TIDEGATE_TOOLS").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/tidegate/tools"),
        PathBuf::from,
    );
    let path = root.join("tansu-0.6.0/bin/tansu");
    assert!(
        path.exists(),
        "the Kafka tests need tansu: run scripts/install-tansu.sh (scripts/test.sh does), \
         or set TIDEGATE_TEST_TANSU to a tansu binary; not found at {}",
        path.display()
    );
    path
}

impl Broker {
    pub fn start() -> Broker {
        // A port the OS just handed out and released: free unless something races us.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut broker = Broker {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        broker.resume();
        broker
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the broker abruptly (SIGKILL): what it acknowledged is in its SQLite file.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker (again) on its port and data, and waits until it accepts.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(tansu_binary())
            .args(["broker", "--storage-engine", "sqlite://tansu.db"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .current_dir(self.dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(match std::env::var_os("TIDEGATE_TEST_BROKER_LOG") {
                // Debugging a broker: its log, appended across restarts, to this file.
                Some(path) => std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap()
                    .into(),
                None => Stdio::null(),
            })
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}
