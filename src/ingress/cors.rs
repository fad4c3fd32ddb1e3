//! What the ingest port does for web pages, which reach it from their own origin.
//!
//! A browser lets a page on another origin read an answer only when the answer names the
//! page's origin (`Access-Control-Allow-Origin`), and before a `fetch` with a JSON body or
//! an API key it first asks with an `OPTIONS` preflight. `cors.allowed_origins` lists the
//! origins whose pages may post, or `*` for any: PostHog's capture and Sentry answer every
//! origin, but an edge that holds API keys usually wants its own sites only.
//!
//! The list is also enforced, not only advertised. A page closing can still send one
//! request with `navigator.sendBeacon`, a CORS "simple request" that no preflight guards:
//! its body would be kept even though the page never sees the answer. So a request that
//! carries an `Origin` outside the list gets 403 and nothing of it is kept. Requests
//! without `Origin` (SDKs, servers, curl) are not cross-origin requests and pass.
//!
//! A beacon's body is `text/plain` (a form type is the only other choice without a
//! preflight); `cors.accept_text_plain` lets `/v1/events` read such a body as JSON.
//!
//! With an empty list (the default) CORS is off: answers carry no CORS headers, so browsers
//! refuse cross-origin `fetch`, a preflight gets 403 saying how to turn CORS on, and the
//! `Origin` header is not looked at on other requests.

use hyper::header::{
    HeaderMap, HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_METHOD, ALLOW, ORIGIN, VARY,
};
use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use super::metrics::RequestRejection;
use super::response::{self, Reply};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CorsSettings {
    /// Origins (`https://shop.example`, `http://localhost:3000`) whose pages may post
    /// events, or `*` for any. Empty: CORS off.
    pub allowed_origins: Vec<String>,
    /// Read a `text/plain` body on `/v1/events` as JSON (for `navigator.sendBeacon`).
    pub accept_text_plain: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CorsError {
    #[error(
        "{0:?} is not an origin: write scheme://host or scheme://host:port, \
         with no path and no trailing slash, or * for any origin"
    )]
    NotAnOrigin(String),
    #[error("* allows every origin, so it must be the list's only entry")]
    WildcardWithOthers,
}

/// Request headers a page may send cross-origin: the body's framing and the API key.
const ALLOWED_HEADERS: &str = "content-type, content-encoding, authorization, x-api-key";
/// How long a browser may reuse a preflight's answer (Chromium caps it at two hours).
const PREFLIGHT_MAX_AGE_SECS: &str = "7200";

/// Which pages may post, decided once per request; see the module's documentation.
#[derive(Debug, Clone, Default)]
pub struct CorsPolicy {
    allowed: Allowed,
}

#[derive(Debug, Clone, Default)]
enum Allowed {
    #[default]
    Off,
    Any,
    /// Origins as browsers serialise them: lower-case scheme and host.
    Listed(Vec<String>),
}

/// What the `Origin` of a request to `/v1/events` means for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginCheck {
    /// No `Origin`, or CORS is off: an ordinary request, answered without CORS headers.
    NotCrossOrigin,
    /// A page this edge serves; its answer names this value.
    Allowed(HeaderValue),
    /// A page outside the list: 403, nothing kept.
    Refused,
}

impl CorsPolicy {
    pub fn new(settings: &CorsSettings) -> Result<Self, CorsError> {
        let origins = &settings.allowed_origins;
        let allowed = if origins.is_empty() {
            Allowed::Off
        } else if origins.iter().any(|o| o == "*") {
            if origins.len() > 1 {
                return Err(CorsError::WildcardWithOthers);
            }
            Allowed::Any
        } else {
            Allowed::Listed(
                origins
                    .iter()
                    .map(|o| normalised_origin(o).ok_or_else(|| CorsError::NotAnOrigin(o.clone())))
                    .collect::<Result<_, _>>()?,
            )
        };
        Ok(CorsPolicy { allowed })
    }

    pub fn is_on(&self) -> bool {
        !matches!(self.allowed, Allowed::Off)
    }

    /// The decision for a request carrying these headers.
    pub fn check(&self, headers: &HeaderMap) -> OriginCheck {
        if !self.is_on() {
            return OriginCheck::NotCrossOrigin;
        }
        let Some(origin) = headers.get(ORIGIN) else {
            return OriginCheck::NotCrossOrigin;
        };
        match &self.allowed {
            Allowed::Off => OriginCheck::NotCrossOrigin,
            Allowed::Any => OriginCheck::Allowed(HeaderValue::from_static("*")),
            Allowed::Listed(list) => {
                let matches = origin
                    .to_str()
                    .is_ok_and(|o| list.iter().any(|allowed| allowed.eq_ignore_ascii_case(o)));
                if matches {
                    OriginCheck::Allowed(origin.clone())
                } else {
                    OriginCheck::Refused
                }
            }
        }
    }

    /// The answer to `OPTIONS /v1/events`: a preflight's verdict, or for a plain OPTIONS
    /// the methods the route takes.
    pub fn preflight(&self, headers: &HeaderMap) -> Result<Reply, PreflightRefusal> {
        let is_preflight =
            headers.contains_key(ORIGIN) && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD);
        if !is_preflight {
            let mut reply = response::empty(StatusCode::NO_CONTENT);
            reply
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("OPTIONS, POST"));
            return Ok(reply);
        }
        let origin = match self.check(headers) {
            OriginCheck::Allowed(origin) => origin,
            OriginCheck::NotCrossOrigin => return Err(PreflightRefusal::CorsOff),
            OriginCheck::Refused => return Err(PreflightRefusal::OriginNotAllowed),
        };
        let method = headers.get(ACCESS_CONTROL_REQUEST_METHOD);
        if method.is_none_or(|m| m.as_bytes() != b"POST") {
            return Err(PreflightRefusal::Method);
        }
        let mut reply = response::empty(StatusCode::NO_CONTENT);
        let out = reply.headers_mut();
        out.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST"),
        );
        out.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOWED_HEADERS),
        );
        out.insert(
            ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(PREFLIGHT_MAX_AGE_SECS),
        );
        allow(&mut reply, origin);
        Ok(reply)
    }
}

/// Why a preflight was refused; the answer is a 403 without CORS headers, which the browser
/// reports to the page as a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreflightRefusal {
    CorsOff,
    OriginNotAllowed,
    Method,
}

impl PreflightRefusal {
    pub fn counted_as(self) -> RequestRejection {
        match self {
            PreflightRefusal::OriginNotAllowed => RequestRejection::OriginNotAllowed,
            PreflightRefusal::CorsOff | PreflightRefusal::Method => {
                RequestRejection::CorsPreflightRefused
            }
        }
    }

    pub fn reply(self) -> Reply {
        match self {
            PreflightRefusal::OriginNotAllowed => origin_refused(),
            PreflightRefusal::CorsOff => response::error(
                StatusCode::FORBIDDEN,
                "cors_off",
                "cross-origin requests are off: list the page's origin in cors.allowed_origins",
                "",
            ),
            PreflightRefusal::Method => response::error(
                StatusCode::FORBIDDEN,
                "cors_method_not_allowed",
                "cross-origin pages may only POST to /v1/events",
                "",
            ),
        }
    }
}

/// Lets the page read `reply`: names its origin and exposes Retry-After, which a page needs
/// to back off after a 429 or 503.
pub fn allow(reply: &mut Reply, origin: HeaderValue) {
    let headers = reply.headers_mut();
    if origin != "*" {
        // A cache must not hand this answer to a page of another origin.
        headers.insert(VARY, HeaderValue::from_static("origin"));
    }
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("retry-after"),
    );
}

/// The 403 for a page whose origin is not in `cors.allowed_origins`.
pub fn origin_refused() -> Reply {
    response::error(
        StatusCode::FORBIDDEN,
        "origin_not_allowed",
        "this page's origin is not in cors.allowed_origins; nothing was kept",
        "",
    )
}

/// `scheme://host[:port]` in lower case, as a browser sends it; `None` for anything else.
fn normalised_origin(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let valid_scheme = !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    let (host, port) = if rest.starts_with('[') {
        // An IPv6 literal: `[` address `]`, then perhaps `:port`.
        let close = rest.find(']')?;
        let (host, after) = rest.split_at(close + 1);
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    let valid_host = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b));
    let valid_port = port.is_none_or(|p| !p.is_empty() && p.parse::<u16>().is_ok());
    (valid_scheme && valid_host && valid_port).then(|| text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: &[&str]) -> CorsPolicy {
        CorsPolicy::new(&CorsSettings {
            allowed_origins: origins.iter().map(|o| o.to_string()).collect(),
            accept_text_plain: false,
        })
        .unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn listed_origins_are_allowed_and_others_refused() {
        let cors = policy(&["https://Shop.example", "http://localhost:3000"]);
        assert_eq!(
            cors.check(&headers(&[("origin", "https://shop.example")])),
            OriginCheck::Allowed(HeaderValue::from_static("https://shop.example"))
        );
        assert_eq!(
            cors.check(&headers(&[("origin", "http://localhost:3000")])),
            OriginCheck::Allowed(HeaderValue::from_static("http://localhost:3000"))
        );
        for other in [
            "http://shop.example",
            "https://shop.example:8443",
            "https://evil.shop.example",
            "http://localhost:3001",
            "null",
        ] {
            assert_eq!(
                cors.check(&headers(&[("origin", other)])),
                OriginCheck::Refused,
                "{other}"
            );
        }
        assert_eq!(cors.check(&headers(&[])), OriginCheck::NotCrossOrigin);
    }

    #[test]
    fn off_ignores_origin_and_any_answers_with_a_wildcard() {
        let off = policy(&[]);
        assert!(!off.is_on());
        assert_eq!(
            off.check(&headers(&[("origin", "https://a.example")])),
            OriginCheck::NotCrossOrigin
        );
        let any = policy(&["*"]);
        assert_eq!(
            any.check(&headers(&[("origin", "https://a.example")])),
            OriginCheck::Allowed(HeaderValue::from_static("*"))
        );
    }

    #[test]
    fn settings_that_are_not_origins_are_refused() {
        for bad in [
            "shop.example",
            "https://shop.example/",
            "https://shop.example/path",
            "https://shop.example:port",
            "https://",
        ] {
            let err = CorsPolicy::new(&CorsSettings {
                allowed_origins: vec![bad.into()],
                accept_text_plain: false,
            })
            .unwrap_err();
            assert_eq!(err, CorsError::NotAnOrigin(bad.into()));
        }
        let err = CorsPolicy::new(&CorsSettings {
            allowed_origins: vec!["*".into(), "https://a.example".into()],
            accept_text_plain: false,
        })
        .unwrap_err();
        assert_eq!(err, CorsError::WildcardWithOthers);
        assert!(policy(&["http://[::1]:8080", "http://127.0.0.1"]).is_on());
    }

    #[test]
    fn a_preflight_from_a_listed_origin_allows_post_with_a_key() {
        let cors = policy(&["https://shop.example"]);
        let reply = cors
            .preflight(&headers(&[
                ("origin", "https://shop.example"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type,x-api-key"),
            ]))
            .unwrap();
        assert_eq!(reply.status(), StatusCode::NO_CONTENT);
        let h = reply.headers();
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://shop.example");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_METHODS], "POST");
        assert!(h[ACCESS_CONTROL_ALLOW_HEADERS]
            .to_str()
            .unwrap()
            .contains("x-api-key"));
        assert_eq!(h[VARY], "origin");
    }

    #[test]
    fn preflights_are_refused_for_other_origins_methods_and_when_off() {
        let cors = policy(&["https://shop.example"]);
        let ask = |origin: &str, method: &str| {
            headers(&[
                ("origin", origin),
                ("access-control-request-method", method),
            ])
        };
        for (policy, request, refusal) in [
            (
                &cors,
                ask("https://other.example", "POST"),
                PreflightRefusal::OriginNotAllowed,
            ),
            (
                &cors,
                ask("https://shop.example", "DELETE"),
                PreflightRefusal::Method,
            ),
            (
                &policy(&[]),
                ask("https://shop.example", "POST"),
                PreflightRefusal::CorsOff,
            ),
        ] {
            assert_eq!(policy.preflight(&request).unwrap_err(), refusal);
            let reply = refusal.reply();
            assert_eq!(reply.status(), StatusCode::FORBIDDEN);
            assert!(!reply.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        }
        // An OPTIONS that is not a preflight learns the route's methods.
        let reply = cors.preflight(&headers(&[])).unwrap();
        assert_eq!(reply.status(), StatusCode::NO_CONTENT);
        assert_eq!(reply.headers()[ALLOW], "OPTIONS, POST");
    }
}
