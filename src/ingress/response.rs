//! The JSON bodies and headers of every answer tidegate gives.
//!
//! Error bodies stay under [`MAX_ERROR_BODY_BYTES`] whatever the request held: they name
//! what is wrong, repeating client input only in clipped pieces, so an error can never be
//! used to amplify a small request into a large reply.

use std::cell::RefCell;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Response, StatusCode};

use crate::admission::UnavailableCause;
use crate::encoded::write_json_string;
use crate::event::cut_at_char_boundary;
use crate::event::{BatchError, EventError};

pub type Reply = Response<Full<Bytes>>;

/// The largest error body tidegate sends.
const MAX_ERROR_BODY_BYTES: usize = 16 * 1024;
/// The per-event error list stops growing past this, leaving room for the rest.
const MAX_ERROR_LIST_BYTES: usize = 12 * 1024;
/// Messages (which may quote a parser's description of the input) are cut to this.
const MAX_MESSAGE_BYTES: usize = 1024;
// The list, the message, the last list entry (a message and a clipped name) and the fixed
// fields fit in the largest body.
const _: () = assert!(MAX_ERROR_LIST_BYTES + 2 * MAX_MESSAGE_BYTES + 1024 <= MAX_ERROR_BODY_BYTES);

/// Marks `reply` as the last on its connection: for answers given before the body was
/// read, where the rest of the body cannot be told apart from a next request.
pub fn closing(mut reply: Reply) -> Reply {
    reply
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    reply
}

const TIMEOUT_BODY: &str =
    "{\"error\":\"request_timeout\",\"message\":\"the request did not arrive in time\"}";

/// An answer written straight to the socket, for the requests hyper cannot hand to the
/// service (a head that timed out or did not parse); hyper has been dropped by then.
fn raw(status: StatusCode, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes()
}

/// The 408 sent when a request's head does not complete in time.
pub fn raw_timeout() -> Vec<u8> {
    raw(StatusCode::REQUEST_TIMEOUT, TIMEOUT_BODY)
}

/// The answer to a head hyper could not parse; `reason` is hyper's fixed description.
pub fn raw_unparseable(status: StatusCode, reason: &str) -> Vec<u8> {
    let code = match status {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "header_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::HTTP_VERSION_NOT_SUPPORTED => "http_version_not_supported",
        _ => "bad_request",
    };
    let mut body = String::from("{\"error\":");
    write_json_string(&mut body, code);
    body.push_str(",\"message\":");
    write_json_string(&mut body, cut_at_char_boundary(reason, MAX_MESSAGE_BYTES));
    body.push('}');
    raw(status, &body)
}

/// The 400 for a plaintext HTTP request on the TLS port.
pub fn raw_plain_http_on_tls_port() -> Vec<u8> {
    raw(
        StatusCode::BAD_REQUEST,
        "{\"error\":\"plain_http_on_tls_port\",\"message\":\"this port speaks TLS: use https\"}",
    )
}

/// The 408 for a body that did not arrive in time (the connection then closes).
pub fn body_timeout() -> Reply {
    closing(json(StatusCode::REQUEST_TIMEOUT, TIMEOUT_BODY))
}

pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// An answer with no body (204).
pub fn empty(status: StatusCode) -> Reply {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

pub fn text(status: StatusCode, content_type: &'static str, body: String) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// `{"error": code, "message": message}` plus any extra members, already JSON.
pub fn error(status: StatusCode, code: &str, message: &str, extra: &str) -> Reply {
    json(status, error_body(code, message, extra))
}

fn error_body(code: &str, message: &str, extra: &str) -> String {
    let message = cut_at_char_boundary(message, MAX_MESSAGE_BYTES);
    let mut body = String::with_capacity(64 + message.len() + extra.len());
    body.push_str("{\"error\":");
    write_json_string(&mut body, code);
    body.push_str(",\"message\":");
    write_json_string(&mut body, message);
    body.push_str(extra);
    body.push('}');
    body
}

pub fn accepted(events: usize) -> Reply {
    // The body of a 202 depends only on its count: each is written once per thread (for
    // counts up to a request's usual size) and shared after; formatting it took ~450
    // instructions of a single-event request's ~31,000.
    const SHARED_UP_TO: usize = 1024;
    thread_local! {
        static BODIES: RefCell<Vec<Option<Bytes>>> = const { RefCell::new(Vec::new()) };
    }
    let format = || Bytes::from(format!("{{\"accepted\":{events}}}"));
    let body = if events <= SHARED_UP_TO {
        BODIES.with_borrow_mut(|bodies| {
            if bodies.len() <= events {
                bodies.resize(events + 1, None);
            }
            bodies[events].get_or_insert_with(format).clone()
        })
    } else {
        format()
    };
    json(StatusCode::ACCEPTED, body)
}

pub fn unavailable(cause: UnavailableCause, retry_after_secs: u32) -> Reply {
    // Under overload most answers are this one: each cause's body is written once per
    // thread and shared after (building it took ~3,000 instructions per 503).
    thread_local! {
        static BODIES: RefCell<Vec<(UnavailableCause, u32, Bytes)>> = const { RefCell::new(Vec::new()) };
    }
    let body = BODIES.with_borrow_mut(|bodies| {
        if let Some((_, _, body)) = bodies
            .iter()
            .find(|(c, secs, _)| *c == cause && *secs == retry_after_secs)
        {
            return body.clone();
        }
        let body = unavailable_body(cause, retry_after_secs);
        bodies.push((cause, retry_after_secs, body.clone()));
        body
    });
    let mut reply = json(StatusCode::SERVICE_UNAVAILABLE, body);
    reply
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
    reply
}

fn unavailable_body(cause: UnavailableCause, retry_after_secs: u32) -> Bytes {
    Bytes::from(error_body(
        "unavailable",
        cause.message(),
        &format!(
            ",\"cause\":\"{}\",\"retry_after_seconds\":{retry_after_secs}",
            cause.as_str()
        ),
    ))
}

pub fn method_not_allowed(allow: &'static str) -> Reply {
    let mut reply = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("this route accepts {allow}"),
        "",
    );
    reply
        .headers_mut()
        .insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
    reply
}

/// The 400 or 413 for a body that parsed badly or broke the event rules.
pub fn batch_error(err: &BatchError) -> Reply {
    match err {
        BatchError::Malformed {
            offset,
            line,
            message,
        } => {
            let line = line.map(|l| format!(",\"line\":{l}")).unwrap_or_default();
            error(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                message,
                &format!(",\"offset\":{offset}{line}"),
            )
        }
        BatchError::Empty => error(
            StatusCode::BAD_REQUEST,
            "empty",
            "the body holds no events",
            "",
        ),
        BatchError::NotAnEventOrArray => error(
            StatusCode::BAD_REQUEST,
            "not_an_event",
            "the body must be an event object, an array of them, or NDJSON",
            "",
        ),
        BatchError::TooManyEvents { max } => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_events",
            &format!("a request may carry at most {max} events"),
            &format!(",\"limit\":{max}"),
        ),
        BatchError::Invalid {
            invalid,
            valid,
            details,
        } => error(
            StatusCode::BAD_REQUEST,
            "invalid_events",
            &format!("{invalid} event(s) are invalid; nothing from this request was kept"),
            &format!(
                ",\"invalid\":{invalid},\"valid\":{valid},\"errors\":{}",
                event_errors(details)
            ),
        ),
    }
}

/// The per-event errors as a JSON array, followed by `"errors_truncated":true` when the
/// list had to stop short of every reported error.
fn event_errors(details: &[EventError]) -> String {
    let mut out = String::from("[");
    for (i, d) in details.iter().enumerate() {
        if out.len() > MAX_ERROR_LIST_BYTES {
            out.push_str("],\"errors_truncated\":true");
            return out;
        }
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!("{{\"index\":{},\"field\":", d.index));
        match &d.error.field {
            Some(field) => write_json_string(&mut out, field),
            None => out.push_str("null"),
        }
        out.push_str(",\"reason\":");
        write_json_string(
            &mut out,
            cut_at_char_boundary(&d.error.reason, MAX_MESSAGE_BYTES),
        );
        out.push('}');
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    fn body_of(reply: Reply) -> serde_json::Value {
        let body = futures_lite::future::block_on(reply.into_body().collect()).unwrap();
        serde_json::from_slice(&body.to_bytes()).unwrap()
    }

    /// A 202's body is shared per count: every answer still states its own count.
    #[test]
    fn shared_202_bodies_state_their_own_count() {
        for _ in 0..2 {
            for events in [0, 1, 2, 100, 1024, 1025, 5000] {
                let reply = accepted(events);
                assert_eq!(reply.status(), StatusCode::ACCEPTED);
                assert_eq!(reply.headers()[CONTENT_TYPE], "application/json");
                assert_eq!(body_of(reply), serde_json::json!({ "accepted": events }));
            }
        }
    }

    /// A 503's body is built once per cause and Retry-After and shared after: every answer
    /// still names its own cause and delay.
    #[test]
    fn shared_503_bodies_name_their_own_cause_and_delay() {
        for _ in 0..2 {
            for cause in UnavailableCause::ALL {
                for secs in [1, 7] {
                    let reply = unavailable(cause, secs);
                    assert_eq!(reply.status(), StatusCode::SERVICE_UNAVAILABLE);
                    assert_eq!(reply.headers()[RETRY_AFTER], secs.to_string().as_str());
                    assert_eq!(reply.headers()[CONTENT_TYPE], "application/json");
                    let body = body_of(reply);
                    assert_eq!(body["error"], "unavailable");
                    assert_eq!(body["cause"], cause.as_str());
                    assert_eq!(body["message"], cause.message());
                    assert_eq!(body["retry_after_seconds"], secs);
                }
            }
        }
    }
}
