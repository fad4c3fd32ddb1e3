//! From a request body to a validated batch of encoded events, all or nothing.
//!
//! A body is one JSON object, a JSON array of objects, or NDJSON (one object per line).
//! Every event is validated before any is kept: the caller receives either the encoded
//! events of the whole request or a description of what is wrong, never a part.
//!
//! simd-json parses a copy of the body (it unescapes strings in place), so payloads can be
//! copied from the body as sent (`source`). One [`BatchParser`] per core is reused so that
//! steady-state parsing does not allocate for that copy, tapes, structural indexes or
//! duplicate-key scratch space.

use simd_json::{tape::Tape, Buffers};

use super::json_text::PayloadScratch;
use super::numbers;
use super::source::{Source, ValueStarts};
use super::validate::{skip_value, validate_event, EventLimits, FieldError, ValidateContext};
use crate::encoded::EncodeBuf;

/// How the body frames its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json`: one object or an array of objects.
    Json,
    /// `application/x-ndjson`: one object per line; blank lines are ignored.
    Ndjson,
}

/// Limits on a whole request.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_events: usize,
    pub event: EventLimits,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_events: 10_000,
            event: EventLimits::default(),
        }
    }
}

/// How many invalid events a 400 response describes in detail.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// One invalid event, as reported to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventError {
    pub index: usize,
    pub error: FieldError,
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Not parseable as JSON. `offset` is the byte offset in the (decompressed) body;
    /// for NDJSON `line` is the 1-based line number.
    Malformed {
        offset: usize,
        line: Option<usize>,
        message: String,
    },
    /// The body holds no events (empty, whitespace, or `[]`).
    Empty,
    /// The top level of a JSON body is neither an object nor an array.
    NotAnEventOrArray,
    /// More events than the per-request limit.
    TooManyEvents { max: usize },
    /// Well-formed JSON, but some events break the rules.
    Invalid {
        /// Events that broke a rule.
        invalid: usize,
        /// Events that were fine but are refused with their request.
        valid: usize,
        /// The first [`MAX_REPORTED_ERRORS`] of them, in index order.
        details: Vec<EventError>,
    },
}

/// The accepted events of one request: `ends[i]` is where event `i` ends in the output
/// buffer, counted from where the batch began.
#[derive(Debug, Default)]
pub struct EncodedBatch {
    pub ends: Vec<usize>,
}

impl EncodedBatch {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

/// What the server knows of a request's events beyond their JSON, stamped on each.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    /// When the request's body was complete (Unix milliseconds).
    pub received_at_ms: i64,
    /// The name of the API key that posted it; empty without keys. At most
    /// [`crate::encoded::MAX_SOURCE_BYTES`].
    pub source: &'a str,
}

impl Arrival<'static> {
    /// A request with no source (no API keys).
    pub fn at(received_at_ms: i64) -> Self {
        Arrival {
            received_at_ms,
            source: "",
        }
    }
}

/// Per-core parsing state, reused request after request.
pub struct BatchParser {
    limits: BatchLimits,
    buffers: Buffers,
    tape: Tape<'static>,
    scratch: PayloadScratch,
    /// The copy of the body simd-json parses (and unescapes in place), each document
    /// followed by the padding its SIMD reads may run into.
    work: Vec<u8>,
    starts: ValueStarts,
}

impl BatchParser {
    pub fn new(limits: BatchLimits) -> Self {
        // The body nests the payload inside an event inside an array; let simd-json stop
        // anything deeper than that early, and leave precise errors to validation.
        let parse_depth = limits.event.max_payload_depth + 3;
        BatchParser {
            limits,
            buffers: Buffers::with_max_depth(64 * 1024, parse_depth),
            tape: Tape(Vec::new()),
            scratch: PayloadScratch::default(),
            work: Vec::new(),
            starts: ValueStarts::default(),
        }
    }

    pub fn limits(&self) -> &BatchLimits {
        &self.limits
    }

    /// Parses and validates `body`, appending encoded events to `out` and their end offsets
    /// to `batch.ends` (which is cleared first). On error, `out` is left as it was.
    ///
    /// A body simd-json refuses is parsed once more with its unrepresentable numbers
    /// neutralised (`numbers`): valid JSON is never refused for a number's size, and the
    /// usual body is scanned by simd-json alone.
    pub fn parse<B: EncodeBuf>(
        &mut self,
        body: &[u8],
        format: BodyFormat,
        arrival: Arrival<'_>,
        out: &mut B,
        batch: &mut EncodedBatch,
    ) -> Result<(), BatchError> {
        let start = out.len();
        let first = self.parse_once(body, format, arrival, false, out, batch);
        let result = match first {
            Err(BatchError::Malformed { .. }) if holds_refused_number(body, &mut self.work) => {
                out.truncate_to(start);
                self.parse_once(body, format, arrival, true, out, batch)
            }
            other => other,
        };
        if result.is_err() {
            out.truncate_to(start);
            batch.ends.clear();
        }
        result
    }

    fn parse_once<B: EncodeBuf>(
        &mut self,
        body: &[u8],
        format: BodyFormat,
        arrival: Arrival<'_>,
        neutralise: bool,
        out: &mut B,
        batch: &mut EncodedBatch,
    ) -> Result<(), BatchError> {
        batch.ends.clear();
        let mut run = Run {
            limits: self.limits,
            arrival,
            scratch: &mut self.scratch,
            start: out.len(),
            invalid: 0,
            details: Vec::new(),
            neutralise,
        };
        let mut parse = Parse {
            work: &mut self.work,
            buffers: &mut self.buffers,
            starts: &mut self.starts,
        };
        let mut tape: Tape<'_> = std::mem::replace(&mut self.tape, Tape(Vec::new())).reset();
        let result = match format {
            BodyFormat::Json => run.json(body, &mut parse, &mut tape, out, batch),
            BodyFormat::Ndjson => run.ndjson(body, &mut parse, &mut tape, out, batch),
        };
        self.tape = tape.reset();
        result.and_then(|()| run.finish(batch))
    }
}

/// Whether `body` holds a number simd-json cannot represent (checked on a copy in
/// `scratch`): only then is a refused body worth a second parse.
fn holds_refused_number(body: &[u8], scratch: &mut Vec<u8>) -> bool {
    scratch.clear();
    scratch.extend_from_slice(body);
    numbers::neutralise_refused(scratch)
}

/// The parser's buffers, borrowed for one request.
struct Parse<'p> {
    work: &'p mut Vec<u8>,
    buffers: &'p mut Buffers,
    starts: &'p mut ValueStarts,
}

/// Copies `doc` into `work` followed by simd-json's padding, neutralising numbers it
/// would refuse when `neutralise`; returns where the copy starts.
fn copy_padded(work: &mut Vec<u8>, doc: &[u8], neutralise: bool) -> usize {
    let start = work.len();
    work.extend_from_slice(doc);
    if neutralise {
        numbers::neutralise_refused(&mut work[start..]);
    }
    work.resize(work.len() + simd_json::INPUT_PADDING, b' ');
    start
}

/// The state of parsing one request.
struct Run<'s, 'a> {
    limits: BatchLimits,
    arrival: Arrival<'a>,
    scratch: &'s mut PayloadScratch,
    start: usize,
    invalid: usize,
    details: Vec<EventError>,
    neutralise: bool,
}

impl Run<'_, '_> {
    fn json<'de, B: EncodeBuf>(
        &mut self,
        body: &[u8],
        parse: &'de mut Parse<'_>,
        tape: &mut Tape<'de>,
        out: &mut B,
        batch: &mut EncodedBatch,
    ) -> Result<(), BatchError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(BatchError::Empty);
        }
        parse.work.clear();
        copy_padded(parse.work, body, self.neutralise);
        let parsed_at = parse.work.as_ptr() as usize;
        simd_json::fill_tape_padded(parse.work, body.len(), parse.buffers, tape)
            .map_err(|e| malformed(&e, 0, None))?;
        let nodes = &tape.0;
        let structurals = parse.buffers.structural_indexes();
        parse.starts.forget();
        let source = Source::new(body, structurals, parse.starts, nodes.len(), parsed_at);
        match nodes[0] {
            simd_json::tape::Node::Object { .. } => self.event(nodes, 0, 0, source, out, batch),
            simd_json::tape::Node::Array { len, .. } => {
                if len > self.limits.max_events {
                    return Err(BatchError::TooManyEvents {
                        max: self.limits.max_events,
                    });
                }
                let mut at = 1;
                for index in 0..len {
                    self.event(nodes, at, index, source, out, batch);
                    at = skip_value(nodes, at);
                }
            }
            _ => return Err(BatchError::NotAnEventOrArray),
        }
        Ok(())
    }

    fn ndjson<'de, B: EncodeBuf>(
        &mut self,
        body: &[u8],
        parse: &'de mut Parse<'_>,
        tape: &mut Tape<'de>,
        out: &mut B,
        batch: &mut EncodedBatch,
    ) -> Result<(), BatchError> {
        let is_blank = |line: &[u8]| line.iter().all(u8::is_ascii_whitespace);
        // The lines are copied first, each followed by its padding, so that each is parsed
        // in a part of `work` of its own while earlier lines' tapes are done with. One
        // line past the limit is enough to refuse the body: copying every line of a body
        // of tiny lines would cost the padding per line, many times the body's size.
        parse.work.clear();
        let lines = body.split(|&b| b == b'\n').filter(|line| !is_blank(line));
        for line in lines.take(self.limits.max_events + 1) {
            copy_padded(parse.work, line, self.neutralise);
        }
        let mut rest: &'de mut [u8] = parse.work;
        let mut index = 0;
        let mut line_start = 0;
        for (line_number, line) in body.split(|&b| b == b'\n').enumerate() {
            let offset = line_start;
            line_start += line.len() + 1;
            if is_blank(line) {
                continue;
            }
            if index == self.limits.max_events {
                return Err(BatchError::TooManyEvents {
                    max: self.limits.max_events,
                });
            }
            let (copy, after) =
                std::mem::take(&mut rest).split_at_mut(line.len() + simd_json::INPUT_PADDING);
            rest = after;
            let parsed_at = copy.as_ptr() as usize;
            simd_json::fill_tape_padded(copy, line.len(), parse.buffers, tape)
                .map_err(|e| malformed(&e, offset, Some(line_number + 1)))?;
            let structurals = parse.buffers.structural_indexes();
            parse.starts.forget();
            let source = Source::new(line, structurals, parse.starts, tape.0.len(), parsed_at);
            self.event(&tape.0, 0, index, source, out, batch);
            index += 1;
        }
        Ok(())
    }

    /// Validates one event; failures are collected, not returned, so the client hears about
    /// every bad event at once (up to the report limit).
    fn event<B: EncodeBuf>(
        &mut self,
        nodes: &[simd_json::tape::Node<'_>],
        at: usize,
        index: usize,
        source: Source<'_>,
        out: &mut B,
        batch: &mut EncodedBatch,
    ) {
        let mut ctx = ValidateContext {
            limits: self.limits.event,
            arrival: self.arrival,
            scratch: self.scratch,
            source,
        };
        match validate_event(nodes, at, &mut ctx, out) {
            Ok(()) => batch.ends.push(out.len() - self.start),
            Err(error) => {
                self.invalid += 1;
                if self.details.len() < MAX_REPORTED_ERRORS {
                    self.details.push(EventError { index, error });
                }
            }
        }
    }

    fn finish(&mut self, batch: &EncodedBatch) -> Result<(), BatchError> {
        if self.invalid > 0 {
            return Err(BatchError::Invalid {
                invalid: self.invalid,
                valid: batch.len(),
                details: std::mem::take(&mut self.details),
            });
        }
        if batch.is_empty() {
            return Err(BatchError::Empty);
        }
        Ok(())
    }
}

fn malformed(err: &simd_json::Error, base: usize, line: Option<usize>) -> BatchError {
    use simd_json::ErrorType;
    let what = match err.error() {
        ErrorType::InvalidUtf8 => "invalid UTF-8".to_owned(),
        ErrorType::DepthLimitExceeded => "JSON nested too deeply".to_owned(),
        ErrorType::Eof => "unexpected end of input".to_owned(),
        other => format!("invalid JSON ({other:?})"),
    };
    BatchError::Malformed {
        offset: base + err.index(),
        line,
        message: what,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoded::EventView;

    fn parse(body: &str, format: BodyFormat) -> Result<Vec<Vec<u8>>, BatchError> {
        let mut parser = BatchParser::new(BatchLimits::default());
        let mut out = b"prefix".to_vec();
        let mut batch = EncodedBatch::default();
        let result = parser.parse(
            body.as_bytes(),
            format,
            Arrival::at(1_000),
            &mut out,
            &mut batch,
        );
        if result.is_err() {
            assert_eq!(out, b"prefix", "a refused body leaves the output untouched");
        }
        result?;
        let mut start = 0;
        Ok(batch
            .ends
            .iter()
            .map(|&end| {
                let event = out[6 + start..6 + end].to_vec();
                start = end;
                event
            })
            .collect())
    }

    const GOOD: &str = r#"{"user_id":"u1","event_type":"view","event_time":1700000000000}"#;

    #[test]
    fn single_object_array_and_ndjson() {
        assert_eq!(parse(GOOD, BodyFormat::Json).unwrap().len(), 1);
        let array = format!("[{GOOD},{GOOD},{GOOD}]");
        assert_eq!(parse(&array, BodyFormat::Json).unwrap().len(), 3);
        let ndjson = format!("{GOOD}\n\n{GOOD}\r\n{GOOD}\n");
        let events = parse(&ndjson, BodyFormat::Ndjson).unwrap();
        assert_eq!(events.len(), 3);
        let view = EventView::decode(&events[2]).unwrap();
        assert_eq!(view.user_id, "u1");
        assert_eq!(view.received_at_ms, 1_000);
    }

    #[test]
    fn reports_every_bad_event_with_index_and_field() {
        let body = format!(
            r#"[{GOOD},{{"user_id":"","event_type":"x","event_time":1}},{GOOD},
               {{"user_id":"u","event_type":"x","event_time":1,"extra":true}},7]"#
        );
        let Err(BatchError::Invalid {
            invalid,
            valid,
            details,
        }) = parse(&body, BodyFormat::Json)
        else {
            panic!("expected invalid")
        };
        assert_eq!((invalid, valid), (3, 2));
        let summary: Vec<_> = details
            .iter()
            .map(|d| (d.index, d.error.field.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (1, Some("user_id".to_owned())),
                (3, Some("extra".to_owned())),
                (4, None)
            ]
        );
    }

    #[test]
    fn field_rules() {
        let cases = [
            (r#""event_time":"2024-02-30T00:00:00Z""#, "event_time"),
            (r#""event_time":-1"#, "event_time"),
            (r#""event_time":1.5"#, "event_time"),
            (r#""event_id":"not-a-uuid""#, "event_id"),
            (r#""payload":[1]"#, "payload"),
            (r#""payload":{"a":1,"a":2}"#, "payload"),
            (r#""user_id":"dup""#, "user_id"),
        ];
        for (extra, field) in cases {
            let body = format!(r#"{{"user_id":"u","event_type":"t","event_time":1,{extra}}}"#);
            let body = body.replacen(r#""event_time":1,"event_time""#, r#""event_time""#, 1);
            match parse(&body, BodyFormat::Json) {
                Err(BatchError::Invalid { details, .. }) => {
                    assert_eq!(details[0].error.field.as_deref(), Some(field), "{body}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        let missing = r#"{"user_id":"u","event_type":"t"}"#;
        assert!(matches!(
            parse(missing, BodyFormat::Json),
            Err(BatchError::Invalid { .. })
        ));
    }

    #[test]
    fn accepts_rfc3339_with_offset_and_keeps_client_event_id() {
        let body = r#"{"user_id":"u","event_type":"t","event_time":"2024-01-01T01:00:00.250+01:00",
                       "event_id":"67e55044-10b1-426f-9247-bb680e5fe0c8","payload":{"k":"v"}}"#;
        let events = parse(body, BodyFormat::Json).unwrap();
        let view = EventView::decode(&events[0]).unwrap();
        assert_eq!(view.event_time_ms, 1_704_067_200_250);
        assert_eq!(
            view.event_id.to_string(),
            "67e55044-10b1-426f-9247-bb680e5fe0c8"
        );
        assert_eq!(view.payload, Some(r#"{"k":"v"}"#));
    }

    #[test]
    fn empty_malformed_and_limits() {
        assert_eq!(parse("  ", BodyFormat::Json), Err(BatchError::Empty));
        assert_eq!(parse("[]", BodyFormat::Json), Err(BatchError::Empty));
        assert_eq!(parse("\n\n", BodyFormat::Ndjson), Err(BatchError::Empty));
        assert_eq!(
            parse("3", BodyFormat::Json),
            Err(BatchError::NotAnEventOrArray)
        );
        match parse(r#"{"user_id": }"#, BodyFormat::Json) {
            Err(BatchError::Malformed { offset, .. }) => assert!(offset > 0 && offset < 14),
            other => panic!("{other:?}"),
        }
        match parse(&format!("{GOOD}\n{{oops\n"), BodyFormat::Ndjson) {
            Err(BatchError::Malformed { line, offset, .. }) => {
                assert_eq!(line, Some(2));
                assert!(offset > GOOD.len());
            }
            other => panic!("{other:?}"),
        }
        let too_many = format!("[{}]", vec![GOOD; 10_001].join(","));
        assert_eq!(
            parse(&too_many, BodyFormat::Json),
            Err(BatchError::TooManyEvents { max: 10_000 })
        );
        let deep = format!(
            r#"{{"user_id":"u","event_type":"t","event_time":1,"payload":{}{}}}"#,
            "{\"a\":".repeat(40) + "1",
            "}".repeat(40)
        );
        assert!(parse(&deep, BodyFormat::Json).is_err());
    }

    #[test]
    fn payloads_are_stored_as_sent_numbers_and_all() {
        let event = |payload: &str| {
            format!(r#"{{"user_id":"u","event_type":"t","event_time":1,"payload":{payload}}}"#)
        };
        // (as sent, as stored): compact ones are copied, the rest re-emitted compact.
        let cases = [
            (
                r#"{"a":1.10,"b":[true,null,"x y"]}"#,
                r#"{"a":1.10,"b":[true,null,"x y"]}"#,
            ),
            (
                r#"{"id":18446744073709551616,"f":1e400}"#,
                r#"{"id":18446744073709551616,"f":1e400}"#,
            ),
            (
                r#"{ "id" : 18446744073709551616, "f": -0.0 }"#,
                r#"{"id":18446744073709551616,"f":-0.0}"#,
            ),
            (
                r#"{"s":"tab\tquote\"A\u0041"}"#,
                r#"{"s":"tab\tquote\"AA"}"#,
            ),
        ];
        let payloads = |events: Vec<Vec<u8>>| -> Vec<String> {
            events
                .iter()
                .map(|e| EventView::decode(e).unwrap().payload.unwrap().to_owned())
                .collect()
        };
        let stored: Vec<_> = cases.iter().map(|(_, stored)| stored.to_string()).collect();
        let array = format!(
            "[{}]",
            cases
                .iter()
                .map(|(sent, _)| event(sent))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(payloads(parse(&array, BodyFormat::Json).unwrap()), stored);
        let lines: Vec<_> = cases.iter().map(|(sent, _)| event(sent)).collect();
        assert_eq!(
            payloads(parse(&lines.join("\n"), BodyFormat::Ndjson).unwrap()),
            stored
        );
        // A single event whose payload alone has a number simd-json cannot hold.
        assert_eq!(
            payloads(parse(&event(cases[1].0), BodyFormat::Json).unwrap()),
            [cases[1].1]
        );
    }

    #[test]
    fn a_number_too_large_outside_the_payload_is_refused_not_zeroed() {
        let body = r#"[{"user_id":"u","event_type":"t","event_time":1},
                       {"user_id":"u","event_type":"t","event_time":1e400}]"#;
        match parse(body, BodyFormat::Json) {
            Err(BatchError::Invalid { details, .. }) => {
                assert_eq!(details[0].index, 1);
                assert_eq!(details[0].error.field.as_deref(), Some("event_time"));
            }
            other => panic!("{other:?}"),
        }
        // Malformed JSON stays malformed, number or not.
        assert!(matches!(
            parse(r#"{"user_id":"u","n":1e400,}"#, BodyFormat::Json),
            Err(BatchError::Malformed { .. })
        ));
    }

    #[test]
    fn a_body_of_tiny_lines_is_refused_without_padding_every_line() {
        let mut parser = BatchParser::new(BatchLimits::default());
        let body = "{}\n".repeat(1_000_000);
        let mut out = Vec::new();
        let mut batch = EncodedBatch::default();
        let result = parser.parse(
            body.as_bytes(),
            BodyFormat::Ndjson,
            Arrival::at(0),
            &mut out,
            &mut batch,
        );
        assert_eq!(result, Err(BatchError::TooManyEvents { max: 10_000 }));
        // The lines up to one past the limit, each with its padding; a million would take
        // 66 MB.
        let bound = 10_001 * (2 + simd_json::INPUT_PADDING);
        assert!(
            parser.work.capacity() <= 2 * bound,
            "{}",
            parser.work.capacity()
        );
    }

    use super::super::TestRng as Rng;

    /// Writes a random JSON value: numbers in many spellings, strings with and without
    /// escapes, and (when `spaced`) whitespace between some tokens.
    fn random_value(rng: &mut Rng, depth: usize, spaced: bool, out: &mut String) {
        let space = |rng: &mut Rng, out: &mut String| {
            if spaced && rng.below(3) == 0 {
                out.push_str([" ", "\n", "\t ", "\r\n"][rng.below(4) as usize]);
            }
        };
        let kind = if depth >= 3 {
            rng.below(3)
        } else {
            rng.below(5)
        };
        match kind {
            0 => {
                let numbers = [
                    "0",
                    "-0",
                    "1.10",
                    "1e2",
                    "-3.5E-7",
                    "18446744073709551616",
                    "1e400",
                    "42",
                ];
                out.push_str(numbers[rng.below(numbers.len() as u64) as usize]);
            }
            1 => {
                let parts = [
                    "a", "b c", "\\n", "\\\"", "\\u0041", "\\/", "é", "\\\\", "😀",
                ];
                out.push('"');
                for _ in 0..rng.below(4) {
                    out.push_str(parts[rng.below(parts.len() as u64) as usize]);
                }
                out.push('"');
            }
            2 => out.push_str(["true", "false", "null"][rng.below(3) as usize]),
            3 => {
                out.push('[');
                for i in 0..rng.below(4) {
                    if i > 0 {
                        out.push(',');
                    }
                    space(rng, out);
                    random_value(rng, depth + 1, spaced, out);
                    space(rng, out);
                }
                out.push(']');
            }
            _ => random_object(rng, depth + 1, spaced, out),
        }
    }

    fn random_object(rng: &mut Rng, depth: usize, spaced: bool, out: &mut String) {
        out.push('{');
        for i in 0..rng.below(5) {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&format!("\"k{i}\":"));
            if spaced && rng.below(2) == 0 {
                out.push(' ');
            }
            random_value(rng, depth, spaced, out);
        }
        out.push('}');
    }

    /// Whether `text` has whitespace outside its strings.
    fn has_insignificant_whitespace(text: &str) -> bool {
        let (mut in_string, mut escaped) = (false, false);
        for c in text.chars() {
            match (in_string, escaped, c) {
                (true, true, _) => escaped = false,
                (true, false, '\\') => escaped = true,
                (true, false, '"') => in_string = false,
                (false, _, '"') => in_string = true,
                (false, _, ' ' | '\n' | '\t' | '\r') => return true,
                _ => {}
            }
        }
        false
    }

    #[test]
    fn random_payloads_are_stored_compact_with_the_same_value() {
        for seed in 1..3_000u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let spaced = seed % 2 == 0;
            let mut sent = String::new();
            random_object(&mut rng, 0, spaced, &mut sent);
            let body =
                format!(r#"{{"user_id":"u","event_type":"t","event_time":1,"payload":{sent}}}"#);
            let events = parse(&body, BodyFormat::Json)
                .unwrap_or_else(|e| panic!("seed {seed}: {e:?}\n{body}"));
            let stored = EventView::decode(&events[0])
                .unwrap()
                .payload
                .unwrap()
                .to_owned();
            let value = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
            assert_eq!(
                value(&stored),
                value(&sent),
                "seed {seed}: {sent} stored as {stored}"
            );
            assert!(
                !has_insignificant_whitespace(&stored),
                "seed {seed}: {stored}"
            );
            // Escapes are rewritten minimally: of what this generator sends, only a quote,
            // a backslash and a newline stay escaped (`\u0041` and `\/` do not).
            let escapes = stored
                .replace("\\\\", "")
                .replace("\\\"", "")
                .replace("\\n", "");
            assert!(!escapes.contains('\\'), "seed {seed}: {stored}");
            if !spaced && !sent.contains('\\') {
                assert_eq!(stored, sent, "seed {seed}");
            }
        }
    }
}
