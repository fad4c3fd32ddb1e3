//! Who may post events, and how fast: API keys from `auth.keys_file`.
//!
//! An edge that SDKs reach over the internet cannot take events from anyone (PostHog's
//! project token, Sentry's DSN key). A client names its key in `Authorization: Bearer`,
//! `X-Api-Key`, or `?api_key=` for clients that cannot set headers (a `sendBeacon`).
//!
//! - No key, or one the file does not hold: 401 with `WWW-Authenticate`.
//! - A key with `write = false` (suspended, say): 403.
//! - A key over its `events_per_second`: 429 with Retry-After. 429 means "you, slow down";
//!   503 keeps meaning "the edge cannot take it". A key with no room for even one event is
//!   refused before its body is read; otherwise the request is charged its events once
//!   they are counted, and refused whole if they do not fit.
//!
//! Keys are looked up by a SipHash of the key under a random per-process seed, and the
//! candidates compared in constant time, so the time an answer takes says nothing about
//! how much of a guess was right. (Looking keys up by SHA-256 digest cost 3,000 more
//! instructions per request.) The secret itself is never logged or counted; the key's
//! `name` is.
//!
//! The limit is one bucket per key for the whole process, not per shard: a client's
//! connections land on whichever shards SO_REUSEPORT picks, so per-shard buckets would
//! allow a key between one and `shards` times its rate. The bucket is GCRA (one atomic
//! "theoretical arrival time" per key), so the cost is one compare-and-swap per request.
//!
//! SIGHUP reloads the file ([`ApiKeys::reload`]): new keys apply to the next request, open
//! connections stay, and a key whose name and rate are unchanged keeps its bucket and its
//! counters. A file that does not load leaves the old keys in force.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::StatusCode;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::metrics::RequestRejection;
use super::response::{self, Reply};
use crate::observe;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// A TOML file of `[[key]]` entries; empty: no authentication.
    pub keys_file: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("cannot read the keys file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the keys file {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Shortest secret accepted: a key is a bearer credential, guessable if short.
const MIN_KEY_BYTES: usize = 16;

/// Longest key name: the name is stored with each event as its source.
const MAX_NAME_BYTES: usize = crate::encoded::MAX_SOURCE_BYTES;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default, rename = "key")]
    keys: Vec<KeyEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    name: String,
    key: String,
    events_per_second: Option<u64>,
    burst: Option<u64>,
    #[serde(default = "yes")]
    write: bool,
}

fn yes() -> bool {
    true
}

/// Why a request's key did not let it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRefusal {
    /// No key in the request (401).
    Missing,
    /// A key the file does not hold (401).
    Unknown,
    /// The key may not write (403).
    CannotWrite { name: Arc<str> },
    /// Over the key's rate (429); room returns after this long.
    RateLimited {
        name: Arc<str>,
        retry_after: Duration,
    },
}

/// One key's rate: `events_per_second`, with room for `burst` events at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rate {
    /// Time one event uses up, in nanoseconds.
    interval_ns: u64,
    /// How far ahead of now the bucket may run: `burst` events' worth.
    tolerance_ns: u64,
}

/// A key as the requests see it.
#[derive(Debug)]
pub struct Key {
    pub name: Arc<str>,
    secret: Box<[u8]>,
    can_write: bool,
    rate: Option<Rate>,
    /// GCRA's theoretical arrival time, in nanoseconds since the keys' epoch.
    next_free_ns: Arc<AtomicU64>,
    /// What `next_free_ns` counts from: the same for every key of the process.
    epoch: Instant,
    pub stats: Arc<KeyStats>,
}

/// What `/metrics` shows per key name.
#[derive(Debug, Default)]
pub struct KeyStats {
    pub events_accepted: AtomicU64,
    pub requests_rate_limited: AtomicU64,
}

/// The keys in force and the file they came from.
pub struct ApiKeys {
    path: PathBuf,
    epoch: Instant,
    current: ArcSwap<KeySet>,
}

struct KeySet {
    /// Keyed with a random seed: a client cannot aim guesses at one bucket.
    seed: RandomState,
    by_hash: HashMap<u64, Vec<Arc<Key>>>,
}

impl KeySet {
    fn find(&self, presented: &[u8]) -> Option<&Arc<Key>> {
        self.by_hash
            .get(&self.seed.hash_one(presented))?
            .iter()
            .find(|key| bool::from(key.secret.as_ref().ct_eq(presented)))
    }

    fn keys(&self) -> impl Iterator<Item = &Arc<Key>> {
        self.by_hash.values().flatten()
    }
}

impl ApiKeys {
    pub fn load(path: &Path) -> Result<Self, KeysError> {
        let keys = ApiKeys {
            path: path.to_owned(),
            epoch: Instant::now(),
            current: ArcSwap::from_pointee(KeySet {
                seed: RandomState::new(),
                by_hash: HashMap::new(),
            }),
        };
        keys.reload()?;
        Ok(keys)
    }

    /// Reads the file again and puts its keys in force; on error the old ones stay.
    /// Returns how many keys are now in force.
    pub fn reload(&self) -> Result<usize, KeysError> {
        let invalid = |message: String| KeysError::Invalid {
            path: self.path.clone(),
            message,
        };
        let text = std::fs::read_to_string(&self.path).map_err(|source| KeysError::Read {
            path: self.path.clone(),
            source,
        })?;
        let file: KeysFile = toml::from_str(&text).map_err(|e| invalid(e.message().to_owned()))?;
        let old = self.current.load();
        let old_by_name: HashMap<&str, &Arc<Key>> =
            old.keys().map(|key| (&*key.name, key)).collect();
        let mut set = KeySet {
            seed: RandomState::new(),
            by_hash: HashMap::with_capacity(file.keys.len()),
        };
        let mut names = std::collections::HashSet::new();
        for entry in file.keys {
            let name = entry.name.trim();
            if name.is_empty() {
                return Err(invalid("a key has an empty name".into()));
            }
            // The name is stored with every event the key posts (one length byte).
            if name.len() > MAX_NAME_BYTES {
                return Err(invalid(format!(
                    "the name {name:?} is longer than {MAX_NAME_BYTES} bytes"
                )));
            }
            if !names.insert(name.to_owned()) {
                return Err(invalid(format!("the name {name:?} is used twice")));
            }
            if entry.key.len() < MIN_KEY_BYTES || !entry.key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid(format!(
                    "the key of {name:?} must be at least {MIN_KEY_BYTES} visible ASCII \
                     characters, without spaces"
                )));
            }
            let rate = match (entry.events_per_second, entry.burst) {
                (None, None) => None,
                (None, Some(_)) => {
                    return Err(invalid(format!(
                        "{name:?} sets burst without events_per_second"
                    )))
                }
                (Some(0), _) | (_, Some(0)) => {
                    return Err(invalid(format!(
                        "{name:?}: events_per_second and burst must be greater than 0"
                    )))
                }
                (Some(per_second), burst) => {
                    let interval_ns = (1_000_000_000 / per_second).max(1);
                    Some(Rate {
                        interval_ns,
                        tolerance_ns: burst.unwrap_or(per_second).saturating_mul(interval_ns),
                    })
                }
            };
            // A key whose name and rate stay keeps its bucket and counters across reloads.
            let kept = old_by_name
                .get(name)
                .map(|k| (k.rate == rate, k.next_free_ns.clone(), k.stats.clone()));
            let (next_free_ns, stats) = match kept {
                Some((true, bucket, stats)) => (bucket, stats),
                Some((false, _, stats)) => (Arc::default(), stats),
                None => (Arc::default(), Arc::default()),
            };
            let key = Key {
                name: name.into(),
                secret: entry.key.as_bytes().into(),
                can_write: entry.write,
                rate,
                next_free_ns,
                epoch: self.epoch,
                stats,
            };
            if set.find(&key.secret).is_some() {
                return Err(invalid(format!(
                    "{name:?} has the same key as another entry"
                )));
            }
            let hash = set.seed.hash_one(&*key.secret);
            set.by_hash.entry(hash).or_default().push(Arc::new(key));
        }
        let count = set.keys().count();
        self.current.store(Arc::new(set));
        Ok(count)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every key in force, for the metrics.
    pub fn keys(&self) -> Vec<Arc<Key>> {
        self.current.load().keys().cloned().collect()
    }

    /// The key a request carries, if it may write and its bucket has room for at least one
    /// event.
    pub fn authorise(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Arc<Key>, KeyRefusal> {
        let presented = presented_key(headers, query).ok_or(KeyRefusal::Missing)?;
        let set = self.current.load();
        let key = set.find(presented).ok_or(KeyRefusal::Unknown)?;
        if !key.can_write {
            return Err(KeyRefusal::CannotWrite {
                name: key.name.clone(),
            });
        }
        key.room_for(0, key.now_ns())?;
        Ok(key.clone())
    }
}

impl Key {
    /// Charges this key for `events` events; refused whole if they do not fit its rate.
    pub fn charge(&self, events: u64) -> Result<(), KeyRefusal> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        let now = self.now_ns();
        let mut next_free = self.next_free_ns.load(Relaxed);
        loop {
            let start = next_free.max(now);
            let cost = events.saturating_mul(rate.interval_ns);
            // A request larger than the burst passes when the bucket is full, and the key
            // then waits for its debt: its average rate still holds.
            if start - now + cost > rate.tolerance_ns && next_free > now {
                self.stats.requests_rate_limited.fetch_add(1, Relaxed);
                return Err(self.limited(start + cost - rate.tolerance_ns - now));
            }
            match self
                .next_free_ns
                .compare_exchange_weak(next_free, start + cost, Relaxed, Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(seen) => next_free = seen,
            }
        }
    }

    fn now_ns(&self) -> u64 {
        // At least 1, so a bucket never used (0) is full.
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    /// `Ok` when the bucket has room for one event more than `events`' worth is due.
    fn room_for(&self, events: u64, now: u64) -> Result<(), KeyRefusal> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        let next_free = self.next_free_ns.load(Relaxed);
        let ahead = next_free.saturating_sub(now) + (events + 1) * rate.interval_ns;
        if ahead > rate.tolerance_ns && next_free > now {
            self.stats.requests_rate_limited.fetch_add(1, Relaxed);
            return Err(self.limited(ahead - rate.tolerance_ns));
        }
        Ok(())
    }

    fn limited(&self, wait_ns: u64) -> KeyRefusal {
        KeyRefusal::RateLimited {
            name: self.name.clone(),
            retry_after: Duration::from_nanos(wait_ns),
        }
    }
}

impl KeyRefusal {
    pub fn counted_as(&self) -> RequestRejection {
        match self {
            KeyRefusal::Missing | KeyRefusal::Unknown => RequestRejection::Unauthorized,
            KeyRefusal::CannotWrite { .. } => RequestRejection::KeyCannotWrite,
            KeyRefusal::RateLimited { .. } => RequestRejection::RateLimited,
        }
    }

    /// The 401, 403 or 429; the key's name may appear, its secret never does.
    pub fn reply(&self) -> Reply {
        match self {
            KeyRefusal::Missing | KeyRefusal::Unknown => {
                let (message, challenge) = match self {
                    KeyRefusal::Missing => (
                        "send an API key: Authorization: Bearer KEY, X-Api-Key: KEY or ?api_key=KEY",
                        "Bearer realm=\"tidegate\"",
                    ),
                    _ => (
                        "this API key is not known",
                        "Bearer realm=\"tidegate\", error=\"invalid_token\"",
                    ),
                };
                let mut reply =
                    response::error(StatusCode::UNAUTHORIZED, "unauthorized", message, "");
                reply
                    .headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
                reply
            }
            KeyRefusal::CannotWrite { name } => response::error(
                StatusCode::FORBIDDEN,
                "key_cannot_write",
                &format!("the API key {name:?} may not write events"),
                "",
            ),
            KeyRefusal::RateLimited { name, retry_after } => {
                // Whole seconds, rounded up: a client that waits that long finds room.
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                let seconds = seconds.max(1);
                let mut reply = response::error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    &format!(
                        "the API key {name:?} is over its events_per_second; nothing was kept"
                    ),
                    &format!(",\"retry_after_seconds\":{seconds}"),
                );
                reply
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(seconds));
                reply
            }
        }
    }
}

impl Collector for ApiKeys {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let keys = self.keys();
        let per_key = |get: fn(&KeyStats) -> u64| {
            keys.iter()
                .map(move |key| (vec![("key", key.name.to_string())], get(&key.stats)))
        };
        observe::counter(
            &mut encoder,
            "tidegate_key_events_accepted",
            "Events accepted (202) per API key name.",
            per_key(|s| s.events_accepted.load(Relaxed)),
        )?;
        observe::counter(
            &mut encoder,
            "tidegate_key_rate_limited_requests",
            "Requests refused with 429 per API key name.",
            per_key(|s| s.requests_rate_limited.load(Relaxed)),
        )
    }
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The key in `Authorization: Bearer`, `X-Api-Key` or `?api_key=`, in that order. The query
/// value is taken as sent, not percent-decoded: keys are plain visible ASCII.
fn presented_key<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a [u8]> {
    if let Some(value) = headers.get(AUTHORIZATION) {
        let value = value.as_bytes();
        if value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ") {
            return Some(value[7..].trim_ascii());
        }
    }
    if let Some(value) = headers.get("x-api-key") {
        return Some(value.as_bytes().trim_ascii());
    }
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("api_key="))
        .map(str::as_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IOS: &str = "tg_live_ios_0123456789abcdef";
    const WEB: &str = "tg_live_web_0123456789abcdef";
    const OFF: &str = "tg_live_off_0123456789abcdef";

    fn keys_file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn standard() -> String {
        format!(
            "[[key]]\nname = \"ios-app\"\nkey = \"{IOS}\"\n\n\
             [[key]]\nname = \"web\"\nkey = \"{WEB}\"\nevents_per_second = 10\n\n\
             [[key]]\nname = \"suspended\"\nkey = \"{OFF}\"\nwrite = false\n"
        )
    }

    fn with(name: &str, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        headers
    }

    #[test]
    fn a_key_is_read_from_either_header_or_the_query() {
        let (_dir, path) = keys_file(&standard());
        let keys = ApiKeys::load(&path).unwrap();
        let bearer = keys.authorise(&with("authorization", &format!("Bearer {IOS}")), None);
        assert_eq!(&*bearer.unwrap().name, "ios-app");
        let header = keys.authorise(&with("x-api-key", WEB), None);
        assert_eq!(&*header.unwrap().name, "web");
        let query = keys.authorise(&HeaderMap::new(), Some(&format!("v=1&api_key={IOS}")));
        assert_eq!(&*query.unwrap().name, "ios-app");
    }

    #[test]
    fn missing_unknown_and_read_only_keys_are_refused() {
        let (_dir, path) = keys_file(&standard());
        let keys = ApiKeys::load(&path).unwrap();
        assert_eq!(
            keys.authorise(&HeaderMap::new(), Some("v=1")).unwrap_err(),
            KeyRefusal::Missing
        );
        assert_eq!(
            keys.authorise(&with("authorization", "Basic dTpw"), None)
                .unwrap_err(),
            KeyRefusal::Missing
        );
        // One character short of a real key, and a real key with a character changed.
        for guess in [&IOS[..IOS.len() - 1], "tg_live_ios_0123456789abcdeF"] {
            assert_eq!(
                keys.authorise(&with("x-api-key", guess), None).unwrap_err(),
                KeyRefusal::Unknown
            );
        }
        assert_eq!(
            keys.authorise(&with("x-api-key", OFF), None).unwrap_err(),
            KeyRefusal::CannotWrite {
                name: "suspended".into()
            }
        );
    }

    #[test]
    fn a_key_over_its_rate_is_limited_until_its_bucket_refills() {
        let (_dir, path) = keys_file(&standard());
        let keys = ApiKeys::load(&path).unwrap();
        let web = keys.authorise(&with("x-api-key", WEB), None).unwrap();
        // Ten events a second, a burst of ten: ten fit, the eleventh does not.
        web.charge(6).unwrap();
        web.charge(4).unwrap();
        let Err(KeyRefusal::RateLimited { retry_after, .. }) = web.charge(1) else {
            panic!("the eleventh event of the second passed");
        };
        assert!(retry_after <= Duration::from_millis(100), "{retry_after:?}");
        // With the bucket empty even the check before the body refuses.
        assert!(matches!(
            keys.authorise(&with("x-api-key", WEB), None),
            Err(KeyRefusal::RateLimited { .. })
        ));
        std::thread::sleep(Duration::from_millis(250));
        web.charge(2).unwrap();
        assert_eq!(web.stats.requests_rate_limited.load(Relaxed), 2);
        // A key without a rate is never limited.
        let ios = keys.authorise(&with("x-api-key", IOS), None).unwrap();
        ios.charge(1_000_000).unwrap();
    }

    #[test]
    fn a_request_larger_than_the_burst_passes_only_on_a_full_bucket() {
        let (_dir, path) = keys_file(&standard());
        let keys = ApiKeys::load(&path).unwrap();
        let web = keys.authorise(&with("x-api-key", WEB), None).unwrap();
        web.charge(50).unwrap();
        let Err(KeyRefusal::RateLimited { retry_after, .. }) = web.charge(1) else {
            panic!("the debt of a large request was not owed");
        };
        assert!(retry_after > Duration::from_secs(3), "{retry_after:?}");
    }

    #[test]
    fn reload_swaps_keys_and_keeps_unchanged_buckets() {
        let (_dir, path) = keys_file(&standard());
        let keys = ApiKeys::load(&path).unwrap();
        let web = keys.authorise(&with("x-api-key", WEB), None).unwrap();
        web.charge(10).unwrap();
        // The iOS key is revoked; web keeps its rate, so its empty bucket stays empty.
        let rotated = "tg_live_new_0123456789abcdef";
        std::fs::write(
            &path,
            format!(
                "[[key]]\nname = \"web\"\nkey = \"{WEB}\"\nevents_per_second = 10\n\n\
                 [[key]]\nname = \"ios-app\"\nkey = \"{rotated}\"\n"
            ),
        )
        .unwrap();
        assert_eq!(keys.reload().unwrap(), 2);
        assert_eq!(
            keys.authorise(&with("x-api-key", IOS), None).unwrap_err(),
            KeyRefusal::Unknown
        );
        assert!(keys.authorise(&with("x-api-key", rotated), None).is_ok());
        assert!(matches!(
            keys.authorise(&with("x-api-key", WEB), None),
            Err(KeyRefusal::RateLimited { .. })
        ));
        // A file that does not load leaves the keys in force.
        std::fs::write(&path, "[[key]]\nname = \"x\"\nkey = \"short\"\n").unwrap();
        assert!(keys.reload().is_err());
        assert!(keys.authorise(&with("x-api-key", rotated), None).is_ok());
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        for (text, expected) in [
            ("[[key]]\nname = \"a\"\nkey = \"short\"\n", "at least 16"),
            (
                &format!("[[key]]\nname = \"a\"\nkey = \"{IOS}\"\n[[key]]\nname = \"a\"\nkey = \"{WEB}\"\n"),
                "used twice",
            ),
            (
                &format!("[[key]]\nname = \"a\"\nkey = \"{IOS}\"\n[[key]]\nname = \"b\"\nkey = \"{IOS}\"\n"),
                "same key",
            ),
            (
                &format!("[[key]]\nname = \"a\"\nkey = \"{IOS}\"\nburst = 5\n"),
                "without events_per_second",
            ),
            (
                &format!("[[key]]\nname = \"a\"\nkey = \"{IOS}\"\nrate = 5\n"),
                "unknown field",
            ),
        ] {
            let (_dir, path) = keys_file(text);
            let err = ApiKeys::load(&path).expect_err(text).to_string();
            assert!(err.contains(expected), "{err}");
            assert!(!err.contains(IOS), "the error repeats a secret: {err}");
        }
    }
}
