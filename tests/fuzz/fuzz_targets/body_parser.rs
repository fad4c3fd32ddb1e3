//! The body parser and validator on arbitrary bytes: never a panic, all or nothing, and
//! every accepted event decodes, with a payload that is JSON whose numbers are the client's
//! own text. The first byte picks JSON or NDJSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidegate::encoded::EventView;
use tidegate::event::{Arrival, BatchLimits, BatchParser, BodyFormat, EncodedBatch};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let format = if selector & 1 == 0 {
        BodyFormat::Json
    } else {
        BodyFormat::Ndjson
    };
    let mut parser = BatchParser::new(BatchLimits::default());
    let mut out = Vec::new();
    let mut batch = EncodedBatch::default();
    match parser.parse(body, format, Arrival::at(0), &mut out, &mut batch) {
        Ok(()) => {
            let mut start = 0;
            for &end in &batch.ends {
                let event = EventView::decode(&out[start..end]).expect("an accepted event decodes");
                if let Some(payload) = event.payload {
                    let value: serde_json::Value =
                        serde_json::from_str(payload).expect("a stored payload is JSON");
                    assert!(value.is_object());
                    // Every number stored appears, as text, in what the client sent.
                    for number in number_tokens(payload.as_bytes()) {
                        assert!(
                            body.windows(number.len()).any(|w| w == number),
                            "{} was not sent",
                            String::from_utf8_lossy(number)
                        );
                    }
                }
                start = end;
            }
        }
        Err(_) => assert!(out.is_empty(), "a refused body leaves nothing behind"),
    }
});

/// The number tokens of JSON text, found independently of tidegate's own scanner: a
/// byte-at-a-time walk that skips strings.
fn number_tokens(text: &[u8]) -> Vec<&[u8]> {
    let mut tokens = Vec::new();
    let (mut i, mut in_string) = (0, false);
    while i < text.len() {
        let b = text[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
        } else if b == b'"' {
            in_string = true;
            i += 1;
        } else if b == b'-' || b.is_ascii_digit() {
            let start = i;
            while i < text.len()
                && matches!(text[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
            {
                i += 1;
            }
            tokens.push(&text[start..i]);
        } else {
            i += 1;
        }
    }
    tokens
}
