//! The JSON bodies and headers of every answer tidegate gives.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Response, StatusCode};

use crate::admission::UnavailableCause;
use crate::event::encoded::write_json_string;
use crate::event::{BatchError, EventError};

pub type Reply = Response<Full<Bytes>>;

pub fn json(status: StatusCode, body: String) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
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
    let mut body = String::with_capacity(64 + message.len() + extra.len());
    body.push_str("{\"error\":");
    write_json_string(&mut body, code);
    body.push_str(",\"message\":");
    write_json_string(&mut body, message);
    body.push_str(extra);
    body.push('}');
    json(status, body)
}

pub fn accepted(events: usize) -> Reply {
    json(StatusCode::ACCEPTED, format!("{{\"accepted\":{events}}}"))
}

pub fn unavailable(cause: UnavailableCause, retry_after_secs: u32) -> Reply {
    let mut reply = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        cause.message(),
        &format!(
            ",\"cause\":\"{}\",\"retry_after_seconds\":{retry_after_secs}",
            cause.as_str()
        ),
    );
    reply
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
    reply
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

fn event_errors(details: &[EventError]) -> String {
    let mut out = String::from("[");
    for (i, d) in details.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!("{{\"index\":{},\"field\":", d.index));
        match &d.error.field {
            Some(field) => write_json_string(&mut out, field),
            None => out.push_str("null"),
        }
        out.push_str(",\"reason\":");
        write_json_string(&mut out, &d.error.reason);
        out.push('}');
    }
    out.push(']');
    out
}
