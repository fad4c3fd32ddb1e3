//! The body parser and validator on arbitrary bytes: never a panic, all or nothing, and
//! every accepted event decodes, with a payload that is JSON whose numbers are the client's
//! own text and in which no object repeats a key. The first byte picks JSON or NDJSON.
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
                    assert!(
                        !repeats_a_key(payload),
                        "a stored payload repeats a key: {payload}"
                    );
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

/// Whether an object anywhere in the JSON `text` repeats a key (compared unescaped), found
/// by serde rather than by tidegate's own checks. serde_json's `Value` keeps the last of
/// repeated keys, so it cannot tell.
fn repeats_a_key(text: &str) -> bool {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use std::collections::HashSet;
    use std::fmt;

    struct Repeats;
    impl<'de> DeserializeSeed<'de> for Repeats {
        type Value = bool;
        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
            deserializer.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Repeats {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("JSON")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            let (mut keys, mut repeated) = (HashSet::new(), false);
            while let Some(key) = map.next_key::<String>()? {
                repeated |= !keys.insert(key);
                repeated |= map.next_value_seed(Repeats)?;
            }
            Ok(repeated)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
            let mut repeated = false;
            while let Some(inner) = seq.next_element_seed(Repeats)? {
                repeated |= inner;
            }
            Ok(repeated)
        }
        fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_str<E>(self, _: &str) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_unit<E>(self) -> Result<bool, E> {
            Ok(false)
        }
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    Repeats
        .deserialize(&mut deserializer)
        .expect("a stored payload is JSON")
}
