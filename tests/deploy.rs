//! What an operator installs, checked with the tools that will read it: the systemd unit
//! with `systemd-analyze verify`, the alert rules and a live scrape with `promtool`, and
//! the readiness protocol the unit relies on (`Type=notify`) against the real binary.
//! `scripts/install-deploy-tools.sh` (run by `scripts/test.sh`) installs both tools.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{event, uuid, Server};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn tool(name: &str) -> Command {
    assert!(
        Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .unwrap()
            .status
            .success(),
        "{name} is missing: run scripts/install-deploy-tools.sh (scripts/test.sh does)"
    );
    Command::new(name)
}

/// `systemd-analyze verify` on the unit as shipped, but for ExecStart's path, which must
/// exist: the binary under test stands in for /usr/bin/tidegate. verify exits 0 on unknown
/// keys, so any line it prints about the unit fails the test too.
#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(repo("deploy/tidegate.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/tidegate "), "{unit}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tidegate.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/tidegate", env!("CARGO_BIN_EXE_tidegate")),
    )
    .unwrap();
    let out = tool("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("tidegate.service"))
        .collect();
    assert!(
        out.status.success() && about_unit.is_empty(),
        "systemd-analyze verify: {stderr}"
    );
    // What the issue asks of it, beyond parsing.
    for setting in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "LimitNOFILE=",
        "LimitMEMLOCK=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/tidegate",
        "User=tidegate",
        "TimeoutStopSec=45",
    ] {
        assert!(unit.contains(setting), "the unit lacks {setting}");
    }
}

#[test]
fn the_alert_rules_pass_promtool() {
    let out = promtool_check_rules(&repo("deploy/prometheus/alerts.yml"));
    assert_succeeded("promtool check rules", &out);
}

fn promtool_check_rules(path: &Path) -> std::process::Output {
    tool("promtool")
        .args(["check", "rules"])
        .arg(path)
        .output()
        .unwrap()
}

/// Fails with what the tool printed unless it exited 0.
fn assert_succeeded(what: &str, out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A live scrape, with every kind of metric present (histograms, per-key counters, log
/// gauges), read by promtool's linter as Prometheus would read it.
#[test]
fn a_live_scrape_passes_promtool_check_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        "[[key]]\nname = \"ios\"\nkey = \"tg_test_deploy_0123456789\"\n",
    )
    .unwrap();
    let server = Server::start_with_env(
        &["--shards", "1", "--sink", "spool"],
        &[("TIDEGATE_AUTH_KEYS_FILE", keys.to_str().unwrap())],
    );
    let key = ("x-api-key", "tg_test_deploy_0123456789");
    let json = ("content-type", "application/json");
    assert_eq!(
        server
            .post(event("u", &uuid(20, 1)).as_bytes(), &[json, key])
            .status,
        202
    );
    assert_eq!(server.post(b"{", &[json, key]).status, 400);
    let scrape = server.get("/metrics");
    assert_eq!(
        scrape.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let mut check = tool("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    check.stdin.take().unwrap().write_all(&scrape.body).unwrap();
    let out = check.wait_with_output().unwrap();
    assert_succeeded("promtool check metrics", &out);
}

/// `Type=notify`: READY=1 only once the server serves, RELOADING=1 then READY=1 around a
/// SIGHUP, STOPPING=1 when SIGTERM starts the drain.
#[test]
fn systemd_hears_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let next = || {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut server = Server::start_with_env(
        &["--shards", "2"],
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())],
    );
    let ready = next();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    // Ready means serving: the announcement came first, and requests are answered.
    assert_eq!(server.get("/health").status, 200);

    support::signal(server.pid(), "HUP");
    let reloading = next();
    assert!(
        reloading.lines().any(|l| l == "RELOADING=1"),
        "{reloading:?}"
    );
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    assert!(next().lines().any(|l| l == "READY=1"));
    assert_eq!(
        server.get("/health").status,
        200,
        "SIGHUP does not stop the server"
    );

    support::signal(server.pid(), "TERM");
    let stopping = next();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    assert!(server.terminate().success());
}

/// Every `tidegate_*` family the collectors in `src/` define, by the names they register
/// (counters without `_total`).
fn exported_families() -> std::collections::BTreeSet<String> {
    fn walk(dir: &Path, out: &mut std::collections::BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.extend(metric_names(&text, "\"tidegate_"));
            }
        }
    }
    let mut out = std::collections::BTreeSet::new();
    walk(&repo("src"), &mut out);
    out
}

/// The metric names in `text` that follow `prefix` (whose last 9 bytes are `tidegate_`).
fn metric_names(text: &str, prefix: &str) -> Vec<String> {
    let skip = prefix.len() - "tidegate_".len();
    text.match_indices(prefix)
        .map(|(at, _)| {
            let name: String = text[at + skip..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            name
        })
        .collect()
}

/// The alert rules and the dashboard query only metrics tidegate exports (a renamed metric
/// would otherwise leave a silent alert or an empty panel), and every dashboard query is
/// valid PromQL: each is checked by promtool as a recording rule, with Grafana's variables
/// filled in.
#[test]
fn the_alerts_and_the_dashboard_use_real_metrics_and_valid_queries() {
    let families = exported_families();
    assert!(families.contains("tidegate_http_requests"), "{families:?}");
    let known = |name: &str| {
        ["", "_total", "_bucket", "_sum", "_count"]
            .iter()
            .any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|family| families.contains(family))
            })
    };
    let alerts = std::fs::read_to_string(repo("deploy/prometheus/alerts.yml")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo("deploy/grafana/tidegate.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    fn collect(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(expr)) = map.get("expr") {
                    out.push(expr.clone());
                }
                map.values().for_each(|v| collect(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    collect(&dashboard, &mut exprs);
    assert!(exprs.len() >= 20, "{} queries", exprs.len());
    for text in exprs.iter().map(String::as_str).chain([alerts.as_str()]) {
        for name in metric_names(text, "tidegate_") {
            assert!(known(&name), "{name} is not a metric tidegate exports");
        }
    }
    let rules: String = exprs
        .iter()
        .enumerate()
        .map(|(i, expr)| {
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$instance", ".*");
            format!(
                "      - record: dashboard:query_{i}\n        expr: {}\n",
                serde_json::to_string(&expr).unwrap()
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboard-queries.yml");
    std::fs::write(
        &path,
        format!("groups:\n  - name: dashboard\n    rules:\n{rules}"),
    )
    .unwrap();
    let out = promtool_check_rules(&path);
    assert_succeeded("a dashboard query is not valid PromQL", &out);
}
