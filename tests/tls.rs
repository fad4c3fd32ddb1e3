//! TLS on the ingest listener, over real TCP against the real binary, with a rustls client
//! and certificates made by the test.

mod support;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use support::{encode_request, event, event_ids, read_response, uuid, Response, Server};

const JSON: (&str, &str) = ("content-type", "application/json");

struct Certificate {
    der: CertificateDer<'static>,
}

/// Writes a self-signed certificate for `localhost` and its key to `dir/name.{crt,key}`.
fn make_certificate(dir: &Path, name: &str, expired: bool) -> Certificate {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = if expired {
        rcgen::date_time_ymd(2021, 1, 1)
    } else {
        rcgen::date_time_ymd(2999, 1, 1)
    };
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    Certificate {
        der: cert.der().clone(),
    }
}

fn tls_env(dir: &Path, name: &str) -> [(String, String); 2] {
    let path = |ext: &str| {
        dir.join(format!("{name}.{ext}"))
            .to_string_lossy()
            .into_owned()
    };
    [
        ("TIDEGATE_SERVER_TLS_CERT_FILE".into(), path("crt")),
        ("TIDEGATE_SERVER_TLS_KEY_FILE".into(), path("key")),
    ]
}

fn start_tls(dir: &Path, name: &str, extra: &[(&str, &str)]) -> Server {
    let env = tls_env(dir, name);
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    all.extend_from_slice(extra);
    Server::start_with_env(&["--shards", "1", "--sink", "spool"], &all)
}

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// A TLS connection that trusts only `trusted`, offering `alpn`.
fn try_connect(
    addr: SocketAddr,
    trusted: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream> {
    let mut roots = RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let conn = ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
        .unwrap();
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

fn connect(addr: SocketAddr, trusted: &CertificateDer<'static>) -> BufReader<TlsStream> {
    BufReader::new(try_connect(addr, trusted, &[b"http/1.1"]).expect("a TLS connection"))
}

fn exchange(
    conn: &mut BufReader<TlsStream>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    conn.get_mut()
        .write_all(&encode_request(method, path, headers, body))
        .unwrap();
    read_response(conn).expect("an answer over TLS")
}

fn metrics(addr: SocketAddr, trusted: &CertificateDer<'static>) -> String {
    exchange(&mut connect(addr, trusted), "GET", "/metrics", &[], b"").text()
}

#[test]
fn serves_https_answers_plain_http_with_400_and_counts_handshakes() {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_certificate(dir.path(), "edge", false);
    let mut server = start_tls(
        dir.path(),
        "edge",
        &[("TIDEGATE_SERVER_HEADER_READ_TIMEOUT_MS", "700")],
    );

    // Keep-alive over TLS, ALPN http/1.1.
    let mut conn = connect(server.addr, &cert.der);
    assert_eq!(conn.get_ref().conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    for n in 1..=3 {
        let body = event("u1", &uuid(30, n));
        let answer = exchange(&mut conn, "POST", "/v1/events", &[JSON], body.as_bytes());
        assert_eq!(answer.status, 202, "{}", answer.text());
    }

    // Plaintext HTTP to the TLS port: a 400 that says so, not a silent close.
    let plain = support::request(
        server.addr,
        "POST",
        "/v1/events",
        &[JSON],
        event("u1", &uuid(30, 9)).as_bytes(),
    );
    assert_eq!(plain.status, 400);
    assert_eq!(plain.json()["error"], "plain_http_on_tls_port");

    // A client that will only speak h2 fails the handshake.
    assert!(try_connect(server.addr, &cert.der, &[b"h2"]).is_err());

    // A head that stalls inside TLS gets its 408, encrypted.
    let mut stalled = connect(server.addr, &cert.der);
    stalled
        .get_mut()
        .write_all(b"POST /v1/events HTTP/1.1\r\nhost: t\r\n")
        .unwrap();
    let answer = read_response(&mut stalled).expect("a 408 over TLS");
    assert_eq!(answer.status, 408);

    // Connecting and saying nothing ends at the header-read timeout.
    let silent = TcpStream::connect(server.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut byte = [0u8; 1];
    assert_eq!((&silent).read(&mut byte).unwrap_or(0), 0);
    assert!(started.elapsed() < Duration::from_secs(5));

    let text = metrics(server.addr, &cert.der);
    let handshakes = |outcome: &str| {
        support::metric_with_label(
            &text,
            "tidegate_tls_handshakes_total",
            &format!("outcome=\"{outcome}\""),
        )
    };
    assert_eq!(handshakes("completed"), 3, "{text}");
    assert_eq!(handshakes("plain_http"), 1);
    assert_eq!(handshakes("failed"), 1);
    assert_eq!(handshakes("timed_out"), 1);
    assert_eq!(
        support::metric_sum(&text, "tidegate_tls_certificate_expiry_timestamp_seconds"),
        32_472_144_000
    );

    drop(conn);
    assert!(server.terminate().success());
    let (events, _) = server.spool_cat();
    let expected: std::collections::BTreeSet<String> = (1..=3).map(|n| uuid(30, n)).collect();
    assert_eq!(event_ids(&events), expected, "only the TLS posts are kept");
}

/// SIGHUP swaps the certificate for new connections; a connection made before keeps being
/// served; a file that does not load leaves the new certificate in force.
#[test]
fn sighup_reloads_the_certificate_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let first = make_certificate(dir.path(), "edge", false);
    let server = start_tls(dir.path(), "edge", &[]);
    let mut held = connect(server.addr, &first.der);
    let post = |conn: &mut BufReader<TlsStream>, n| {
        let body = event("u1", &uuid(31, n));
        exchange(conn, "POST", "/v1/events", &[JSON], body.as_bytes()).status
    };
    assert_eq!(post(&mut held, 1), 202);

    let second = make_certificate(dir.path(), "edge", false);
    support::signal(server.pid(), "HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while try_connect(server.addr, &second.der, &[b"http/1.1"]).is_err() {
        assert!(
            Instant::now() < deadline,
            "the new certificate never served"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        try_connect(server.addr, &first.der, &[b"http/1.1"]).is_err(),
        "new connections get the new certificate"
    );
    assert_eq!(post(&mut held, 2), 202, "the held connection stays");

    std::fs::write(dir.path().join("edge.crt"), "not a certificate").unwrap();
    support::signal(server.pid(), "HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics(server.addr, &second.der);
        if support::metric_sum(&text, "tidegate_tls_reloads_failed_total") == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the failed reload was not counted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut after = connect(server.addr, &second.der);
    assert_eq!(post(&mut after, 3), 202);
}

/// Back-pressure holds through TLS: a client that pipelines requests without reading the
/// answers is no longer read once the (bounded) unsent responses fill up, rather than
/// having them pile up in rustls' buffers.
#[test]
fn a_client_pipelining_over_tls_without_reading_cannot_grow_memory() {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_certificate(dir.path(), "edge", false);
    let server = start_tls(dir.path(), "edge", &[]);
    let before = server.rss_kib();
    let mut conn = try_connect(server.addr, &cert.der, &[b"http/1.1"]).unwrap();
    conn.sock
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let burst = encode_request("GET", "/health", &[], b"").repeat(1000);
    let sent = support::write_until_refused(&mut conn, &burst, 64 << 20);
    let grown_kib = server.rss_kib().saturating_sub(before);
    assert!(sent < 64 << 20, "the server never stopped reading");
    assert!(grown_kib < 16 * 1024, "RSS grew {grown_kib} KiB");
    let mut fresh = connect(server.addr, &cert.der);
    assert_eq!(exchange(&mut fresh, "GET", "/health", &[], b"").status, 200);
}

/// Bad or expired files fail the start, naming the file.
#[test]
fn an_expired_or_unreadable_certificate_fails_the_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    make_certificate(dir.path(), "old", true);
    make_certificate(dir.path(), "good", false);
    let start = |env: &[(String, String)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
            .args(["--listen", "127.0.0.1:0", "--shards", "1", "--data-dir"])
            .arg(dir.path().join("data"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("listening on"),
            "announced before failing"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let expired = start(&tls_env(dir.path(), "old"));
    assert!(
        expired.contains("old.crt") && expired.contains("expired"),
        "{expired}"
    );

    let mut missing_key = tls_env(dir.path(), "good");
    missing_key[1].1 = dir.path().join("absent.key").to_string_lossy().into_owned();
    let missing = start(&missing_key);
    assert!(missing.contains("absent.key"), "{missing}");

    let half = start(&tls_env(dir.path(), "good")[..1]);
    assert!(half.contains("tls_key_file"), "{half}");
}
