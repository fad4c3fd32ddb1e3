//! TLS on the ingest listener: rustls, certificates that reload on SIGHUP.
//!
//! SDKs on phones and in browsers reach an edge over the internet, where plaintext is not
//! an option (Vector's `http_server` and every CDN terminate TLS themselves). rustls, with
//! the `ring` provider, avoids OpenSSL; ALPN offers `http/1.1` only, since hyper serves
//! HTTP/1.1 here, so a client that insists on h2 fails the handshake instead of sending
//! frames the server would reject.
//!
//! The files are checked whole before they are used, at start and on every reload: the
//! chain parses, the key parses and matches the leaf certificate, and the leaf is inside
//! its validity period. A start with a bad or expired file fails with a message naming the
//! file; a reload with one keeps the certificate in force and logs why. New connections
//! use the certificate loaded last; open ones keep theirs.
//!
//! Session tickets come from one ticketer for the life of the process, so a reload does
//! not invalidate the tickets clients already hold, and a client that reconnects (a phone
//! waking up) resumes without a full handshake.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use futures_rustls::server::TlsStream;
use futures_rustls::TlsAcceptor;
use glommio::net::TcpStream;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ProducesTickets;
use rustls::ServerConfig;
use x509_cert::der::Decode;

use crate::observe;

/// `server.tls_cert_file` and `server.tls_key_file`; both empty: plaintext.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM: the server's certificate first, then the intermediates that chain it to a root.
    pub cert_file: String,
    /// PEM: the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
}

impl TlsSettings {
    pub fn is_on(&self) -> bool {
        !self.cert_file.is_empty() || !self.key_file.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS needs both server.tls_cert_file and server.tls_key_file")]
    HalfConfigured,
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key: {message}")]
    NoKey { path: PathBuf, message: String },
    #[error("the certificate in {path} cannot be parsed: {message}")]
    BadCertificate { path: PathBuf, message: String },
    #[error("the certificate in {path} expired at {not_after} (unix seconds)")]
    Expired { path: PathBuf, not_after: u64 },
    #[error("the certificate in {path} is not valid before {not_before} (unix seconds)")]
    NotYetValid { path: PathBuf, not_before: u64 },
    #[error("the key in {key} does not belong to the certificate in {cert}: {message}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
}

/// Most plaintext rustls holds per connection for records the socket has not taken.
const UNSENT_TLS_LIMIT: usize = 16 * 1024;

/// What is known of the certificate in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: u64,
    pub not_after: u64,
}

/// The certificate in force and the means to replace it.
pub struct ServerTls {
    settings: TlsSettings,
    config: ArcSwap<ServerConfig>,
    ticketer: Arc<dyn ProducesTickets>,
    not_after: AtomicU64,
    reloads_failed: AtomicU64,
    /// Handshakes by [`HandshakeOutcome`]: process-wide, touched once per connection.
    handshakes: [AtomicU64; HandshakeOutcome::ALL.len()],
}

/// How a connection's TLS handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeOutcome {
    Completed,
    /// The client sent something that is not TLS, or TLS the server refused (no common
    /// version, cipher or ALPN protocol), or closed.
    Failed,
    /// Not done within the header-read timeout.
    TimedOut,
    /// The client sent a plaintext HTTP request to the TLS port (answered 400, as nginx
    /// does, so that the mistake is visible rather than a silent close).
    PlainHttp,
}

impl HandshakeOutcome {
    const ALL: [HandshakeOutcome; 4] = [
        HandshakeOutcome::Completed,
        HandshakeOutcome::Failed,
        HandshakeOutcome::TimedOut,
        HandshakeOutcome::PlainHttp,
    ];

    fn label(self) -> &'static str {
        match self {
            HandshakeOutcome::Completed => "completed",
            HandshakeOutcome::Failed => "failed",
            HandshakeOutcome::TimedOut => "timed_out",
            HandshakeOutcome::PlainHttp => "plain_http",
        }
    }
}

/// What came of accepting TLS on a new connection.
pub enum Handshake {
    Done(Box<TlsStream<TcpStream>>),
    /// The client spoke plaintext HTTP; the socket is handed back for the 400.
    PlainHttp(TcpStream),
    /// Nothing to answer: close.
    Closed,
}

impl ServerTls {
    /// Loads and checks the files; the error names the file at fault.
    pub fn load(settings: &TlsSettings) -> Result<Self, TlsError> {
        let ticketer = rustls::crypto::ring::Ticketer::new().map_err(|err| TlsError::Mismatch {
            cert: PathBuf::from(&settings.cert_file),
            key: PathBuf::from(&settings.key_file),
            message: format!("no session ticketer: {err}"),
        })?;
        let (config, validity) = server_config(settings, ticketer.clone(), SystemTime::now())?;
        Ok(ServerTls {
            settings: settings.clone(),
            config: ArcSwap::from_pointee(config),
            ticketer,
            not_after: AtomicU64::new(validity.not_after),
            reloads_failed: AtomicU64::new(0),
            handshakes: Default::default(),
        })
    }

    /// Runs the server side of a handshake on `stream`, all of it (the first byte
    /// included) within `timeout`, and counts how it ended.
    pub async fn handshake(&self, stream: TcpStream, timeout: Duration) -> Handshake {
        let acceptor = self.acceptor();
        let attempt = async {
            let mut first = [0u8; 1];
            match stream.peek(&mut first).await {
                Ok(1) if first[0].is_ascii_uppercase() => {
                    return (HandshakeOutcome::PlainHttp, Handshake::PlainHttp(stream));
                }
                Ok(1) => {}
                _ => return (HandshakeOutcome::Failed, Handshake::Closed),
            }
            match acceptor.accept(stream).await {
                Ok(mut tls) => {
                    // rustls would buffer up to 64 KiB of unsent records per connection;
                    // one record's worth keeps a client that does not read to the bound
                    // the README's memory formula states, and hyper's own write buffer
                    // already batches responses.
                    tls.get_mut().1.set_buffer_limit(Some(UNSENT_TLS_LIMIT));
                    (HandshakeOutcome::Completed, Handshake::Done(Box::new(tls)))
                }
                Err(err) => {
                    tracing::debug!(error = %err, "TLS handshake failed");
                    (HandshakeOutcome::Failed, Handshake::Closed)
                }
            }
        };
        let (outcome, handshake) = futures_lite::future::or(attempt, async {
            glommio::timer::sleep(timeout).await;
            (HandshakeOutcome::TimedOut, Handshake::Closed)
        })
        .await;
        self.handshakes[outcome as usize].fetch_add(1, Relaxed);
        handshake
    }

    /// Reads the files again; on success new connections use them, on failure the old
    /// certificate stays in force (and the failure is counted).
    pub fn reload(&self) -> Result<Validity, TlsError> {
        match server_config(&self.settings, self.ticketer.clone(), SystemTime::now()) {
            Ok((config, validity)) => {
                self.config.store(Arc::new(config));
                self.not_after.store(validity.not_after, Relaxed);
                Ok(validity)
            }
            Err(err) => {
                self.reloads_failed.fetch_add(1, Relaxed);
                Err(err)
            }
        }
    }

    /// An acceptor for one new connection, with the certificate in force now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.load_full())
    }

    pub fn cert_path(&self) -> &Path {
        Path::new(&self.settings.cert_file)
    }

    /// When the certificate in force expires, in Unix seconds.
    pub fn not_after(&self) -> u64 {
        self.not_after.load(Relaxed)
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Collector for ServerTls {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        observe::gauge(
            &mut encoder,
            "tidegate_tls_certificate_expiry_timestamp_seconds",
            "When the TLS certificate in force expires (Unix time).",
            std::iter::once((observe::Labels::new(), self.not_after() as i64)),
        )?;
        observe::counter(
            &mut encoder,
            "tidegate_tls_reloads_failed",
            "SIGHUP reloads of the TLS files that failed (the old certificate stayed).",
            std::iter::once((observe::Labels::new(), self.reloads_failed.load(Relaxed))),
        )?;
        observe::counter(
            &mut encoder,
            "tidegate_tls_handshakes",
            "TLS handshakes on the ingest listener by outcome.",
            HandshakeOutcome::ALL.iter().map(|&outcome| {
                (
                    vec![("outcome", outcome.label().to_string())],
                    self.handshakes[outcome as usize].load(Relaxed),
                )
            }),
        )
    }
}

fn server_config(
    settings: &TlsSettings,
    ticketer: Arc<dyn ProducesTickets>,
    now: SystemTime,
) -> Result<(ServerConfig, Validity), TlsError> {
    if settings.cert_file.is_empty() || settings.key_file.is_empty() {
        return Err(TlsError::HalfConfigured);
    }
    let cert_path = PathBuf::from(&settings.cert_file);
    let key_path = PathBuf::from(&settings.key_file);
    let cert_pem = std::fs::read(&cert_path).map_err(|source| TlsError::Read {
        path: cert_path.clone(),
        source,
    })?;
    let key_pem = std::fs::read(&key_path).map_err(|source| TlsError::Read {
        path: key_path.clone(),
        source,
    })?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::BadCertificate {
            path: cert_path.clone(),
            message: err.to_string(),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate { path: cert_path });
    };
    let validity = validity(leaf).map_err(|message| TlsError::BadCertificate {
        path: cert_path.clone(),
        message,
    })?;
    check_validity(validity, now, &cert_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|err| TlsError::NoKey {
        path: key_path.clone(),
        message: err.to_string(),
    })?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            // Checks that the key is the certificate's (rustls' `keys_match`).
            .with_single_cert(chain, key)
            .map_err(|err| TlsError::Mismatch {
                cert: cert_path,
                key: key_path,
                message: err.to_string(),
            })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ticketer = ticketer;
    Ok((config, validity))
}

fn validity(leaf: &CertificateDer<'_>) -> Result<Validity, String> {
    let cert = x509_cert::Certificate::from_der(leaf).map_err(|err| err.to_string())?;
    let period = &cert.tbs_certificate.validity;
    Ok(Validity {
        not_before: period.not_before.to_unix_duration().as_secs(),
        not_after: period.not_after.to_unix_duration().as_secs(),
    })
}

fn check_validity(validity: Validity, now: SystemTime, path: &Path) -> Result<(), TlsError> {
    let now = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    if now > validity.not_after {
        return Err(TlsError::Expired {
            path: path.to_path_buf(),
            not_after: validity.not_after,
        });
    }
    if now < validity.not_before {
        return Err(TlsError::NotYetValid {
            path: path.to_path_buf(),
            not_before: validity.not_before,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(dir: &Path, name: &str, not_after: (i32, u8, u8)) -> TlsSettings {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let cert_file = dir.join(format!("{name}.crt"));
        let key_file = dir.join(format!("{name}.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        TlsSettings {
            cert_file: cert_file.to_string_lossy().into_owned(),
            key_file: key_file.to_string_lossy().into_owned(),
        }
    }

    #[test]
    fn loads_a_valid_pair_and_reports_its_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let settings = self_signed(dir.path(), "good", (2999, 1, 1));
        let tls = ServerTls::load(&settings).unwrap();
        assert_eq!(tls.not_after(), 32_472_144_000);
    }

    #[test]
    fn refuses_expired_mismatched_half_and_missing_files_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let expired = self_signed(dir.path(), "old", (2021, 1, 1));
        let err = ServerTls::load(&expired).unwrap_err();
        assert!(matches!(err, TlsError::Expired { .. }), "{err}");
        assert!(err.to_string().contains("old.crt"), "{err}");

        let good = self_signed(dir.path(), "good", (2999, 1, 1));
        let mismatched = TlsSettings {
            key_file: expired.key_file.clone(),
            ..good.clone()
        };
        let err = ServerTls::load(&mismatched).unwrap_err();
        assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");

        let half = TlsSettings {
            key_file: String::new(),
            ..good.clone()
        };
        assert!(matches!(
            ServerTls::load(&half).unwrap_err(),
            TlsError::HalfConfigured
        ));

        let swapped = TlsSettings {
            cert_file: good.key_file.clone(),
            key_file: good.cert_file.clone(),
        };
        let err = ServerTls::load(&swapped).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");

        let missing = TlsSettings {
            cert_file: dir.path().join("nope.crt").to_string_lossy().into_owned(),
            ..good
        };
        let err = ServerTls::load(&missing).unwrap_err();
        assert!(err.to_string().contains("nope.crt"), "{err}");
    }

    #[test]
    fn a_failed_reload_keeps_the_certificate_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let settings = self_signed(dir.path(), "cert", (2999, 1, 1));
        let tls = ServerTls::load(&settings).unwrap();
        let before = tls.config.load_full();
        std::fs::write(&settings.cert_file, "not a certificate").unwrap();
        assert!(tls.reload().is_err());
        assert_eq!(tls.reloads_failed.load(Relaxed), 1);
        assert_eq!(tls.not_after(), 32_472_144_000);
        assert!(Arc::ptr_eq(&tls.config.load_full(), &before));

        let renewed = self_signed(dir.path(), "cert", (2998, 1, 1));
        assert_eq!(renewed, settings);
        let validity = tls.reload().unwrap();
        assert_eq!(validity.not_after, tls.not_after());
        assert!(tls.not_after() < 32_472_144_000);
    }

    #[test]
    fn validity_bounds_are_inclusive_and_named() {
        let validity = Validity {
            not_before: 100,
            not_after: 200,
        };
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        let path = Path::new("c.pem");
        assert!(check_validity(validity, at(100), path).is_ok());
        assert!(check_validity(validity, at(200), path).is_ok());
        assert!(matches!(
            check_validity(validity, at(201), path),
            Err(TlsError::Expired { not_after: 200, .. })
        ));
        assert!(matches!(
            check_validity(validity, at(99), path),
            Err(TlsError::NotYetValid { .. })
        ));
    }
}
