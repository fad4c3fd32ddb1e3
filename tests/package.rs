//! The Debian package, built by `cargo deb` from the binary under test, checked for what
//! an operator relies on, and, as root, installed with `dpkg -i`: the installed binary then
//! runs as the packaged user with the packaged configuration. `scripts/install-cargo-deb.sh`
//! (run by `scripts/test.sh`) provides cargo-deb in `TIDEGATE_TEST_CARGO_DEB`.
//!
//! What cannot be checked here: systemd starting the unit (these machines have no systemd
//! as PID 1); `tests/deploy.rs` verifies the unit and its notify protocol instead.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod support;

fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn build_package(out_dir: &Path) -> PathBuf {
    let cargo_deb = std::env::var("TIDEGATE_TEST_CARGO_DEB").expect(
        "TIDEGATE_TEST_CARGO_DEB names cargo-deb: run scripts/install-cargo-deb.sh (scripts/test.sh does)",
    );
    // The debug binary the tests built: a release build would double the suite's time.
    run(Command::new(cargo_deb)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["--no-build", "--profile", "dev", "--output"])
        .arg(out_dir));
    std::fs::read_dir(out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("a .deb")
}

#[test]
fn the_debian_package_installs_and_runs_with_its_own_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let deb = build_package(dir.path());

    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    for path in [
        "./usr/bin/tidegate",
        "./etc/tidegate/tidegate.toml",
        "./etc/tidegate/keys.toml",
        "/systemd/system/tidegate.service",
        "./usr/share/doc/tidegate/README.md",
        "./usr/share/doc/tidegate/prometheus/alerts.yml",
    ] {
        assert!(
            contents.contains(path),
            "{path} is not in the package:\n{contents}"
        );
    }
    let info = run(Command::new("dpkg-deb").arg("--info").arg(&deb));
    assert!(info.contains("adduser"), "{info}");
    let control = dir.path().join("control");
    run(Command::new("dpkg-deb")
        .arg("--control")
        .arg(&deb)
        .arg(&control));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert!(
        conffiles.contains("/etc/tidegate/tidegate.toml")
            && conffiles.contains("/etc/tidegate/keys.toml")
    );
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(postinst.contains("adduser --system"), "{postinst}");
    assert!(
        postinst.contains("deb-systemd-helper"),
        "the unit is enabled: {postinst}"
    );
    assert!(!postinst.contains("#DEBHELPER#"), "{postinst}");
    let postrm = std::fs::read_to_string(control.join("postrm")).unwrap();
    assert!(postrm.contains("rm -rf /var/lib/tidegate"), "{postrm}");

    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping dpkg -i: not root");
        return;
    }
    run(Command::new("dpkg").arg("--install").arg(&deb));
    let installed = std::panic::catch_unwind(run_installed);
    run(Command::new("dpkg").args(["--purge", "tidegate"]));
    assert!(
        !Path::new("/usr/bin/tidegate").exists(),
        "purge removes the binary"
    );
    assert!(
        !Path::new("/var/lib/tidegate").exists(),
        "purge removes the data"
    );
    if let Err(panic) = installed {
        std::panic::resume_unwind(panic);
    }
}

/// The installed binary, as the packaged user, with the packaged configuration: its keys
/// file holds no key yet, so events are refused, and only the data dir is its to write.
fn run_installed() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    let user = run(Command::new("getent").args(["passwd", "tidegate"]));
    let uid: u32 = user.split(':').nth(2).unwrap().parse().unwrap();
    let data = std::fs::metadata("/var/lib/tidegate").unwrap();
    let keys = std::fs::metadata("/etc/tidegate/keys.toml").unwrap();
    let group = run(Command::new("getent").args(["group", "tidegate"]));
    let gid: u32 = group.split(':').nth(2).unwrap().parse().unwrap();
    assert_eq!(data.gid(), gid);
    assert_eq!(data.mode() & 0o777, 0o750);
    assert_eq!(
        (keys.mode() & 0o777, keys.gid()),
        (0o640, gid),
        "keys are secrets"
    );

    let mut server = Command::new("/usr/bin/tidegate")
        .uid(uid)
        .gid(gid)
        .args([
            "--config",
            "/etc/tidegate/tidegate.toml",
            "--data-dir",
            "/var/lib/tidegate",
        ])
        // The packaged ports may be taken on a test machine; the rest is as packaged.
        .args(["--listen", "127.0.0.1:0"])
        .env("TIDEGATE_SERVER_ADMIN_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let mut address = || -> SocketAddr {
        let line = lines.next().expect("an announcement").unwrap();
        line.split("http://")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (ingest, admin) = (address(), address());
    let event = support::event("u", &support::uuid(30, 1));
    let refused = support::request(
        ingest,
        "POST",
        "/v1/events",
        &[("content-type", "application/json")],
        event.as_bytes(),
    );
    let metrics = support::request(admin, "GET", "/metrics", &[], b"");
    support::signal(server.id(), "TERM");
    let exited = support::wait_timeout(&mut server, std::time::Duration::from_secs(30));
    assert_eq!(refused.status, 401, "the packaged keys file holds no key");
    assert_eq!(metrics.status, 200);
    assert!(exited.is_some_and(|s| s.success()), "{exited:?}");
}
