//! A real browser against the real binary: headless Chromium (Debian's) driven by
//! playwright-core posts events from web pages, as a web SDK would.
//!
//! A page on a listed origin sends one event with `fetch` (JSON with an API key, so the
//! browser preflights it) and one with `navigator.sendBeacon` (`text/plain`, key in the
//! query, no preflight). A page on an origin outside `cors.allowed_origins` does the same.
//! Only the listed page's two events may be kept, and its page must be able to read the
//! 202. `scripts/install-browser.sh` (run by `scripts/test.sh`) installs what this needs.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::Server;

const KEY: &str = "tg_test_browser_0123456789";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn pages_on_listed_origins_post_with_fetch_and_beacons_and_others_are_refused() {
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        Path::new("/usr/bin/chromium").exists() && driver.join("node_modules/playwright-core").exists(),
        "chromium or playwright-core is missing: run scripts/install-browser.sh (scripts/test.sh does)"
    );
    let (allowed_port, other_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(&keys, format!("[[key]]\nname = \"web\"\nkey = \"{KEY}\"\n")).unwrap();
    let mut server = Server::start_with_env(
        &["--shards", "1", "--sink", "spool"],
        &[
            ("TIDEGATE_AUTH_KEYS_FILE", keys.to_str().unwrap()),
            (
                "TIDEGATE_CORS_ALLOWED_ORIGINS",
                &format!("http://127.0.0.1:{allowed_port}"),
            ),
            ("TIDEGATE_CORS_ACCEPT_TEXT_PLAIN", "true"),
        ],
    );
    let output = Command::new("node")
        .arg(driver.join("post_events.mjs"))
        .arg(format!("http://{}", server.addr))
        .arg(KEY)
        .arg(allowed_port.to_string())
        .arg(other_port.to_string())
        .output()
        .expect("run node");
    assert!(
        output.status.success(),
        "the browser driver failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(seen["allowed"]["fetched"]["status"], 202, "{seen}");
    assert_eq!(seen["allowed"]["fetched"]["body"]["accepted"], 1, "{seen}");
    assert_eq!(seen["allowed"]["queued"], true, "{seen}");
    // The unlisted page's fetch fails its preflight: the page learns nothing.
    assert!(
        seen["other"]["fetched"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("Failed to fetch")),
        "{seen}"
    );

    // Beacons arrive when the browser sends them: wait for the listed page's, and for the
    // refusals of the other page's preflight and beacon.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = server.get("/metrics").text();
        let accepted = support::metric_sum(&metrics, "tidegate_events_accepted_total");
        let refused = support::metric_with_label(
            &metrics,
            "tidegate_requests_rejected_total",
            "reason=\"origin_not_allowed\"",
        );
        if accepted == 2 && refused == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "accepted {accepted} (want 2), refused {refused} (want 2)"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.terminate();
    let (events, _) = server.spool_cat();
    assert_eq!(
        support::event_ids(&events),
        [
            "0190f5a1-0000-7000-8000-00000000a001",
            "0190f5a1-0000-7000-8000-00000000a002"
        ]
        .map(String::from)
        .into(),
        "only the listed page's fetch and beacon are kept"
    );
}
