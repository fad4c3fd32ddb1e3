//! Numbers simd-json cannot represent, made parseable without changing the document's
//! shape.
//!
//! simd-json turns every number into an `i64`, `u64` or `f64` on its tape, and refuses the
//! ones that fit none of them, such as a 20-digit unsigned id or `1e400`: valid JSON that
//! must be taken. A body it refused is parsed again after [`neutralise_refused`] has
//! overwritten each such number in the parser's copy with `0.0` padded by spaces: still a
//! number, of the same length, so every byte offset stays where it was. The text stored is
//! never the placeholder: payloads are copied, and numbers written, from the body as sent
//! (`source`). A placeholder is a float, which `event_time` refuses, so an overflowing
//! number outside `payload` is still refused, never read as zero.

/// The placeholder written over a number simd-json would refuse.
const PLACEHOLDER: &[u8] = b"0.0";

/// Whether `byte` can continue a number token (the grammar is checked elsewhere).
pub fn in_number(byte: u8) -> bool {
    matches!(byte, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
}

/// Overwrites every number in `doc` that simd-json would refuse with [`PLACEHOLDER`];
/// returns whether there was one. Scanning an invalid document is harmless: the parser
/// refuses it.
pub fn neutralise_refused(doc: &mut [u8]) -> bool {
    let mut found = false;
    let mut i = 0;
    while i < doc.len() {
        match doc[i] {
            b'"' => i = string_end(doc, i + 1),
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < doc.len() && in_number(doc[i]) {
                    i += 1;
                }
                if parser_would_refuse(&doc[start..i]) {
                    doc[start..start + PLACEHOLDER.len()].copy_from_slice(PLACEHOLDER);
                    doc[start + PLACEHOLDER.len()..i].fill(b' ');
                    found = true;
                }
            }
            _ => i += 1,
        }
    }
    found
}

/// The index just past the string whose content starts at `from` (past its closing quote).
fn string_end(doc: &[u8], mut from: usize) -> usize {
    while let Some(at) = next_quote_or_backslash(doc, from) {
        if doc[at] == b'"' {
            return at + 1;
        }
        from = at + 2;
        if from >= doc.len() {
            break;
        }
    }
    doc.len()
}

/// The first `"` or `\` at or after `from`. Event strings are short, so the per-call set-up
/// of a general search costs more than the search; sixteen bytes are tested at a time with
/// SSE2, which every x86-64 processor has.
#[cfg(target_arch = "x86_64")]
fn next_quote_or_backslash(doc: &[u8], mut from: usize) -> Option<usize> {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of the x86-64 baseline, so these intrinsics are available on
    // every processor this code can run on; the unaligned 16-byte load stays inside `doc`
    // because `from + 16 <= doc.len()`.
    unsafe {
        let quote = _mm_set1_epi8(b'"' as i8);
        let backslash = _mm_set1_epi8(b'\\' as i8);
        while from + 16 <= doc.len() {
            let block = _mm_loadu_si128(doc.as_ptr().add(from).cast::<__m128i>());
            let hits = _mm_or_si128(
                _mm_cmpeq_epi8(block, quote),
                _mm_cmpeq_epi8(block, backslash),
            );
            let mask = _mm_movemask_epi8(hits) as u32;
            if mask != 0 {
                return Some(from + mask.trailing_zeros() as usize);
            }
            from += 16;
        }
    }
    doc[from..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\')
        .map(|p| from + p)
}

#[cfg(not(target_arch = "x86_64"))]
fn next_quote_or_backslash(doc: &[u8], from: usize) -> Option<usize> {
    memchr::memchr2(b'"', b'\\', &doc[from..]).map(|p| from + p)
}

/// Whether `token` is a number RFC 8259 allows whose value simd-json cannot represent: an
/// integer outside `i64` and `u64`, or a magnitude beyond `f64`. Short plain numbers, the
/// usual case, are answered without parsing.
fn parser_would_refuse(token: &[u8]) -> bool {
    let has_exponent = token.iter().any(|&b| b == b'e' || b == b'E');
    if token.len() < 19 && !has_exponent {
        return false;
    }
    if !is_json_number(token) {
        return false;
    }
    // The token is ASCII, as just checked.
    let text = std::str::from_utf8(token).expect("a JSON number is ASCII");
    let is_integer = !has_exponent && !token.contains(&b'.');
    if is_integer {
        text.parse::<i64>().is_err() && text.parse::<u64>().is_err()
    } else {
        text.parse::<f64>().is_ok_and(f64::is_infinite)
    }
}

/// RFC 8259's `number`: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn is_json_number(token: &[u8]) -> bool {
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < token.len() && token[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    if token.first() == Some(&b'-') {
        i += 1;
    }
    match token.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if token.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if matches!(token.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(token.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == token.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn neutralised(doc: &str) -> (bool, String) {
        let mut bytes = doc.as_bytes().to_vec();
        let found = neutralise_refused(&mut bytes);
        (found, String::from_utf8(bytes).unwrap())
    }

    #[test]
    fn neutralises_only_what_the_parser_would_refuse() {
        let doc = r#"[18446744073709551616,18446744073709551615,-9223372036854775809,1e400,1e-400,12345678901234567890123]"#;
        let (found, rewritten) = neutralised(doc);
        assert!(found);
        assert_eq!(
            rewritten,
            "[0.0                 ,18446744073709551615,0.0                 ,0.0  ,1e-400,0.0                    ]"
        );
        let mut bytes = rewritten.into_bytes();
        assert!(simd_json::to_tape(&mut bytes).is_ok());
        let plain = r#"{"a":[1,-2.50,3e2,18446744073709551615],"b":"1e400"}"#;
        assert_eq!(neutralised(plain), (false, plain.to_owned()));
    }

    #[test]
    fn strings_of_every_length_and_escape_position_are_skipped() {
        for len in 0..40 {
            for escape_at in 0..=len {
                let mut content = "1".repeat(len) + "e999";
                if escape_at < len {
                    content.replace_range(escape_at..escape_at + 1, "\\");
                    content.insert(escape_at + 1, '"');
                }
                let doc = format!(r#"["{content}",-1e999,"x"]"#);
                let (found, rewritten) = neutralised(&doc);
                assert!(found, "{doc}");
                let expected = doc.replace(",-1e999,", ",0.0   ,");
                assert_eq!(rewritten, expected, "{doc}");
            }
        }
    }

    #[test]
    fn json_number_grammar() {
        for good in ["0", "-0", "1.5", "10e5", "1E-7", "-0.0e+0", "123"] {
            assert!(is_json_number(good.as_bytes()), "{good}");
        }
        for bad in ["01", "1.", ".5", "-", "1e", "1e+", "+1", "1.2.3", "--1"] {
            assert!(!is_json_number(bad.as_bytes()), "{bad}");
        }
    }
}
