//! The rules for one event, applied to a parsed object on simd-json's tape.
//!
//! An event is `user_id`, `event_type`, `event_time`, optional `event_id` and optional
//! `payload`; nothing else. Unknown fields are refused, not dropped, because a field the
//! server silently ignores is data the client believes was stored. String fields are read
//! borrowed from the request buffer and written once, into the encoded form.

use simd_json::{tape::Node, StaticNode};
use uuid::Uuid;

use super::json_text::{self, PayloadContext, PayloadError, PayloadScratch};
use super::source::Source;
use super::timestamp::parse_rfc3339_millis;
use crate::encoded::{encode_into, EncodeBuf, EventFields};

/// Limits on a single event.
#[derive(Debug, Clone, Copy)]
pub struct EventLimits {
    pub max_user_id_bytes: usize,
    pub max_event_type_bytes: usize,
    /// Nesting depth allowed inside `payload`, the payload object itself counting as 1.
    pub max_payload_depth: usize,
}

impl Default for EventLimits {
    fn default() -> Self {
        EventLimits {
            max_user_id_bytes: 256,
            max_event_type_bytes: 128,
            max_payload_depth: 32,
        }
    }
}

/// The latest event_time accepted: 9999-12-31T23:59:59.999Z, the end of CQL's usual range.
pub const MAX_EVENT_TIME_MS: i64 = 253_402_300_799_999;

/// What is wrong with one field of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The offending field; `None` when the event as a whole is wrong (not an object).
    pub field: Option<String>,
    pub reason: String,
}

/// The longest piece of client input an error repeats back (a field or key name); a
/// longer one is cut at a character boundary and marked with `…`. Error answers must
/// name what is wrong without letting a client amplify its request into a huge reply.
pub const MAX_ECHOED_BYTES: usize = 64;

/// `text`, cut to at most [`MAX_ECHOED_BYTES`] (plus the mark) if it is longer.
pub fn clip_echo(text: &str) -> String {
    if text.len() <= MAX_ECHOED_BYTES {
        return text.to_owned();
    }
    format!("{}…", cut_at_char_boundary(text, MAX_ECHOED_BYTES))
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub fn cut_at_char_boundary(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl FieldError {
    fn new(field: &str, reason: impl Into<String>) -> Self {
        FieldError {
            field: Some(clip_echo(field)),
            reason: reason.into(),
        }
    }
}

/// Everything validation needs besides the event itself.
pub struct ValidateContext<'s, 'a, 't> {
    pub limits: EventLimits,
    pub arrival: super::Arrival<'a>,
    pub scratch: &'s mut PayloadScratch,
    /// The event's document as sent, where its payload is copied from.
    pub source: Source<'t>,
}

/// Validates the event whose node is `nodes[at]` and appends its encoded form to `out`.
/// On error nothing is left in `out`.
pub fn validate_event<B: EncodeBuf>(
    nodes: &[Node<'_>],
    at: usize,
    ctx: &mut ValidateContext<'_, '_, '_>,
    out: &mut B,
) -> Result<(), FieldError> {
    let Node::Object { len, .. } = nodes[at] else {
        return Err(FieldError {
            field: None,
            reason: "an event must be a JSON object".into(),
        });
    };
    let mut user_id = None;
    let mut event_type = None;
    let mut event_time = None;
    let mut event_id = None;
    let mut payload_at = None;

    let mut next = at + 1;
    for _ in 0..len {
        let Node::String(key) = nodes[next] else {
            unreachable!("simd-json tapes hold a string node before every object value")
        };
        let value_at = next + 1;
        next = skip_value(nodes, value_at);
        let slot_taken =
            match key {
                "user_id" => user_id
                    .replace(bounded_string(
                        nodes[value_at],
                        key,
                        ctx.limits.max_user_id_bytes,
                    )?)
                    .is_some(),
                "event_type" => event_type
                    .replace(bounded_string(
                        nodes[value_at],
                        key,
                        ctx.limits.max_event_type_bytes,
                    )?)
                    .is_some(),
                "event_time" => event_time
                    .replace(parse_event_time(nodes[value_at])?)
                    .is_some(),
                "event_id" => event_id.replace(parse_event_id(nodes[value_at])?).is_some(),
                "payload" => {
                    if !matches!(nodes[value_at], Node::Object { .. }) {
                        return Err(FieldError::new(key, "must be a JSON object"));
                    }
                    payload_at.replace(value_at).is_some()
                }
                other => return Err(FieldError::new(
                    other,
                    "unknown field (allowed: user_id, event_type, event_time, event_id, payload)",
                )),
            };
        if slot_taken {
            return Err(FieldError::new(key, "duplicate field"));
        }
    }

    let missing = |field: &str| FieldError::new(field, "required field is missing");
    let fields = EventFields {
        user_id: user_id.ok_or_else(|| missing("user_id"))?,
        event_type: event_type.ok_or_else(|| missing("event_type"))?,
        event_time_ms: event_time.ok_or_else(|| missing("event_time"))?,
        event_id: event_id.unwrap_or_else(|| super::ids::generated_id(ctx.arrival.received_at_ms)),
        received_at_ms: ctx.arrival.received_at_ms,
        source: ctx.arrival.source,
    };

    let start = out.len();
    let mut payload_result = Ok(());
    encode_into(out, &fields, |out| {
        if let Some(payload_at) = payload_at {
            let mut payload_ctx = PayloadContext {
                max_depth: ctx.limits.max_payload_depth,
                source: ctx.source,
                scratch: ctx.scratch,
            };
            payload_result = json_text::write_payload(nodes, payload_at, &mut payload_ctx, out);
        }
    });
    if let Err(err) = payload_result {
        out.truncate_to(start);
        return Err(match err {
            PayloadError::TooDeep { max } => {
                FieldError::new("payload", format!("nested deeper than {max} levels"))
            }
            PayloadError::DuplicateKey(key) => FieldError::new(
                "payload",
                format!(
                    "duplicate key {:?}: a key may appear once per object",
                    clip_echo(&key)
                ),
            ),
        });
    }
    Ok(())
}

/// Returns the tape index just past the value starting at `at`.
pub fn skip_value(nodes: &[Node<'_>], at: usize) -> usize {
    match nodes[at] {
        Node::Object { count, .. } | Node::Array { count, .. } => at + 1 + count,
        Node::String(_) | Node::Static(_) => at + 1,
    }
}

fn bounded_string<'i>(node: Node<'i>, field: &str, max: usize) -> Result<&'i str, FieldError> {
    match node {
        Node::String("") => Err(FieldError::new(field, "must not be empty")),
        Node::String(s) if s.len() > max => Err(FieldError::new(
            field,
            format!("is {} bytes, longer than the limit of {max}", s.len()),
        )),
        Node::String(s) => Ok(s),
        _ => Err(FieldError::new(field, "must be a string")),
    }
}

fn parse_event_time(node: Node<'_>) -> Result<i64, FieldError> {
    const FIELD: &str = "event_time";
    let out_of_range = || {
        FieldError::new(
            FIELD,
            "is outside 1970-01-01T00:00:00Z ..= 9999-12-31T23:59:59.999Z",
        )
    };
    let millis = match node {
        Node::Static(StaticNode::I64(n)) => n,
        Node::Static(StaticNode::U64(n)) => i64::try_from(n).map_err(|_| out_of_range())?,
        Node::String(s) => parse_rfc3339_millis(s).ok_or_else(|| {
            FieldError::new(
                FIELD,
                "is not an RFC 3339 timestamp (e.g. 2024-05-01T12:00:00.123Z)",
            )
        })?,
        _ => {
            return Err(FieldError::new(
                FIELD,
                "must be an RFC 3339 string or integer epoch milliseconds",
            ))
        }
    };
    if (0..=MAX_EVENT_TIME_MS).contains(&millis) {
        Ok(millis)
    } else {
        Err(out_of_range())
    }
}

fn parse_event_id(node: Node<'_>) -> Result<Uuid, FieldError> {
    match node {
        Node::String(s) => Uuid::try_parse(s)
            .map_err(|_| FieldError::new("event_id", "is not a UUID (e.g. 0190a3c4-...)")),
        _ => Err(FieldError::new("event_id", "must be a UUID string")),
    }
}
