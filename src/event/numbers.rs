//! Payload numbers kept exactly as the client wrote them.
//!
//! simd-json turns every number into an `i64`, `u64` or `f64` on its tape, and refuses the
//! ones that fit none of them. Re-emitting a payload from those values rewrites what the
//! client sent — `1.10` becomes `1.1`, `3.141592653589793238` loses digits, `1e-400`
//! becomes `0.0` — and refuses valid JSON such as a 20-digit unsigned id. For a store of
//! telemetry that is silent corruption, so the text of every number is taken from the body
//! before simd-json parses it, and the payload is re-emitted with that text.
//!
//! One pass over the body ([`NumberTexts::scan`]) copies each number token's text aside, in
//! document order, and replaces in place the few that simd-json would refuse (their value
//! overflows) with `0.0` padded by spaces — still a number, of the same length, so the
//! document keeps its shape and every other byte offset. The tape lists values in document
//! order too, so the k-th number node on the tape is the k-th text
//! ([`NumberTexts::index_tape`]). A placeholder is a float, which `event_time` refuses, so
//! an overflowing number outside `payload` is still refused, never read as zero.

use simd_json::{tape::Node, StaticNode};

/// The texts of one document's numbers, and which tape nodes they belong to.
#[derive(Debug, Default)]
pub struct NumberTexts {
    /// All number texts, back to back.
    text: Vec<u8>,
    /// `ends[k]` is where number k's text ends in `text`.
    ends: Vec<u32>,
    /// The tape index of number k, once the tape is indexed; empty when the tape's numbers
    /// did not match the scan (which only a parser disagreement could cause).
    nodes: Vec<u32>,
}

/// The placeholder written over a number simd-json would refuse.
const PLACEHOLDER: &[u8] = b"0.0";

impl NumberTexts {
    /// Records the text of every number in `doc` and neutralises the ones simd-json would
    /// refuse. Scanning an invalid document is harmless: it is refused by the parser.
    pub fn scan(&mut self, doc: &mut [u8]) {
        self.text.clear();
        self.ends.clear();
        self.nodes.clear();
        let mut i = 0;
        while i < doc.len() {
            match doc[i] {
                b'"' => i = string_end(doc, i + 1),
                b'-' | b'0'..=b'9' => {
                    let start = i;
                    i += 1;
                    while i < doc.len()
                        && matches!(doc[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                    {
                        i += 1;
                    }
                    let token = &doc[start..i];
                    self.text.extend_from_slice(token);
                    self.ends.push(self.text.len() as u32);
                    if parser_would_refuse(token) {
                        doc[start..start + PLACEHOLDER.len()].copy_from_slice(PLACEHOLDER);
                        doc[start + PLACEHOLDER.len()..i].fill(b' ');
                    }
                }
                _ => i += 1,
            }
        }
    }

    /// Pairs the scanned texts with the number nodes of `nodes`, the tape of the document
    /// that was scanned.
    pub fn index_tape(&mut self, nodes: &[Node<'_>]) {
        self.nodes.clear();
        for (at, node) in nodes.iter().enumerate() {
            if is_number(node) {
                self.nodes.push(at as u32);
            }
        }
        if self.nodes.len() != self.ends.len() {
            debug_assert!(false, "the scan and the tape disagree on the numbers");
            self.nodes.clear();
        }
    }

    /// The text the client sent for the number at tape index `at`.
    pub fn text_of(&self, at: usize) -> Option<&[u8]> {
        let k = self.nodes.binary_search(&(at as u32)).ok()?;
        let start = if k == 0 { 0 } else { self.ends[k - 1] as usize };
        Some(&self.text[start..self.ends[k] as usize])
    }
}

fn is_number(node: &Node<'_>) -> bool {
    matches!(
        node,
        Node::Static(StaticNode::I64(_) | StaticNode::U64(_) | StaticNode::F64(_))
    )
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

    fn texts(doc: &str) -> (Vec<String>, String) {
        let mut bytes = doc.as_bytes().to_vec();
        let mut numbers = NumberTexts::default();
        numbers.scan(&mut bytes);
        let mut out = Vec::new();
        let mut start = 0;
        for &end in &numbers.ends {
            out.push(String::from_utf8(numbers.text[start..end as usize].to_vec()).unwrap());
            start = end as usize;
        }
        (out, String::from_utf8(bytes).unwrap())
    }

    #[test]
    fn finds_numbers_outside_strings_only() {
        let (found, _) = texts(r#"{"a1":[1,-2.50,3e2],"b":"x\"9","c\\":-0,"d":1E+2}"#);
        assert_eq!(found, ["1", "-2.50", "3e2", "-0", "1E+2"]);
    }

    #[test]
    fn neutralises_only_what_the_parser_would_refuse() {
        let doc = r#"[18446744073709551616,18446744073709551615,-9223372036854775809,1e400,1e-400,12345678901234567890123]"#;
        let (found, rewritten) = texts(doc);
        assert_eq!(found.len(), 6);
        assert_eq!(found[0], "18446744073709551616");
        assert_eq!(
            rewritten,
            "[0.0                 ,18446744073709551615,0.0                 ,0.0  ,1e-400,0.0                    ]"
        );
        let mut bytes = rewritten.into_bytes();
        assert!(simd_json::to_tape(&mut bytes).is_ok());
    }

    #[test]
    fn strings_of_every_length_and_escape_position_are_skipped() {
        for len in 0..40 {
            for escape_at in 0..=len {
                let mut content = "a".repeat(len);
                if escape_at < len {
                    content.replace_range(escape_at..escape_at + 1, "\\");
                    content.insert(escape_at + 1, '"');
                }
                let doc = format!(r#"["{content}",-12.5e3,"x"]"#);
                let (found, _) = texts(&doc);
                assert_eq!(found, ["-12.5e3"], "{doc}");
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

    #[test]
    fn tape_numbers_pair_with_texts() {
        let mut bytes = br#"{"x":[1.10,"2",true,null,-3e0,{"y":0.5}]}"#.to_vec();
        let mut numbers = NumberTexts::default();
        numbers.scan(&mut bytes);
        let tape = simd_json::to_tape(&mut bytes).unwrap();
        numbers.index_tape(&tape.0);
        let found: Vec<_> = (0..tape.0.len())
            .filter_map(|at| numbers.text_of(at))
            .map(|t| String::from_utf8(t.to_vec()).unwrap())
            .collect();
        assert_eq!(found, ["1.10", "-3e0", "0.5"]);
    }
}
