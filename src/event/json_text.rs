//! Writing JSON text: string escaping, and payloads, copied as sent or re-emitted from
//! simd-json's tape.
//!
//! A compact payload without escapes is copied from the body (`source`); any other is
//! re-emitted from the tape in compact form (no insignificant whitespace) straight into the
//! event's encoded bytes, so both ways store the same text for the same value. Strings are
//! re-escaped minimally (same value); numbers are written with the exact text the client
//! sent, never re-formatted from a parsed value. Both ways enforce the nesting limit and
//! reject duplicate keys (a body whose meaning depends on which of two equal keys a reader
//! keeps is refused rather than stored ambiguously): the copy is taken only if the pass that
//! finds it saw neither, and the walk that re-emits says which rule a payload broke.

use bytes::BufMut;

use crate::encoded::write_string;
use simd_json::{tape::Node, StaticNode};

use super::source::{CompactScratch, Source, PAIRWISE_LIMIT};

/// Why a payload could not be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadError {
    TooDeep { max: usize },
    DuplicateKey(String),
}

/// Scratch space reused across payloads so the walk does not allocate per object.
#[derive(Default)]
pub struct PayloadScratch {
    /// (key hash, tape index of the key) for every key of every object still open, for
    /// the duplicate-key check.
    keys: Vec<(u64, usize)>,
    /// For the check of a payload copied as sent.
    compact: CompactScratch,
}

/// What a payload walk needs besides the tape.
pub struct PayloadContext<'c, 't> {
    pub max_depth: usize,
    pub source: Source<'t>,
    pub scratch: &'c mut PayloadScratch,
}

/// Writes the payload at `nodes[at]` to `out` after checking it: copied from the body
/// when that is exactly what re-emitting it would write, re-emitted otherwise.
pub fn write_payload<B: BufMut>(
    nodes: &[Node<'_>],
    at: usize,
    ctx: &mut PayloadContext<'_, '_>,
    out: &mut B,
) -> Result<(), PayloadError> {
    // A walk that failed part-way leaves its open keys behind.
    ctx.scratch.keys.clear();
    // The payload is an event's member: the string before it on the tape is its key.
    let key = match at.checked_sub(1).map(|key_at| nodes[key_at]) {
        Some(Node::String(key)) => Some(key),
        _ => None,
    };
    let max_depth = ctx.max_depth;
    match ctx
        .source
        .compact_text(at, key, max_depth, &mut ctx.scratch.compact)
    {
        Some(text) => out.put_slice(text),
        None => {
            walk(nodes, at, 0, ctx, out)?;
        }
    }
    Ok(())
}

/// Objects with at most this many keys are checked for duplicates without the scratch
/// stack.
const SMALL_OBJECT: usize = 8;

/// Walks the value at `nodes[at]`, checking depth and keys, and writes it as JSON text;
/// returns the index after it. `depth` is the nesting depth of the container holding this
/// value.
fn walk<B: BufMut>(
    nodes: &[Node<'_>],
    at: usize,
    depth: usize,
    ctx: &mut PayloadContext<'_, '_>,
    out: &mut B,
) -> Result<usize, PayloadError> {
    match nodes[at] {
        Node::Static(value) => {
            match ctx.source.number_text(at) {
                Some(text) if is_number(value) => out.put_slice(text),
                _ => write_static(out, value),
            }
            Ok(at + 1)
        }
        Node::String(s) => {
            write_string(out, s);
            Ok(at + 1)
        }
        Node::Array { len, .. } => {
            if depth + 1 > ctx.max_depth {
                return Err(PayloadError::TooDeep { max: ctx.max_depth });
            }
            out.put_u8(b'[');
            let mut next = at + 1;
            for i in 0..len {
                if i > 0 {
                    out.put_u8(b',');
                }
                next = walk(nodes, next, depth + 1, ctx, out)?;
            }
            out.put_u8(b']');
            Ok(next)
        }
        Node::Object { len, .. } => {
            if depth + 1 > ctx.max_depth {
                return Err(PayloadError::TooDeep { max: ctx.max_depth });
            }
            let open_keys = ctx.scratch.keys.len();
            // The keys of the usual small object stay on the stack.
            let mut small = [""; SMALL_OBJECT];
            out.put_u8(b'{');
            let mut next = at + 1;
            for i in 0..len {
                let Node::String(key) = nodes[next] else {
                    unreachable!("simd-json tapes hold a string node before every object value")
                };
                match small.get_mut(i) {
                    Some(slot) if len <= SMALL_OBJECT => *slot = key,
                    _ => {
                        // Up to PAIRWISE_LIMIT keys are compared pairwise, and their length
                        // is hash enough to skip most pairs; hashing every byte pays only
                        // beyond.
                        let hash = if len > PAIRWISE_LIMIT {
                            key_hash(key)
                        } else {
                            key.len() as u64
                        };
                        ctx.scratch.keys.push((hash, next));
                    }
                }
                if i > 0 {
                    out.put_u8(b',');
                }
                write_string(out, key);
                out.put_u8(b':');
                next = walk(nodes, next + 1, depth + 1, ctx, out)?;
            }
            out.put_u8(b'}');
            let duplicate = if len <= SMALL_OBJECT {
                first_repeated(&small[..len])
            } else {
                let duplicate = find_duplicate(nodes, &mut ctx.scratch.keys[open_keys..]);
                ctx.scratch.keys.truncate(open_keys);
                duplicate
            };
            match duplicate {
                Some(key) => Err(PayloadError::DuplicateKey(key.to_owned())),
                None => Ok(next),
            }
        }
    }
}

fn is_number(value: StaticNode) -> bool {
    matches!(
        value,
        StaticNode::I64(_) | StaticNode::U64(_) | StaticNode::F64(_)
    )
}

/// The first key of `keys` that appears twice.
fn first_repeated<'i>(keys: &[&'i str]) -> Option<&'i str> {
    keys.iter()
        .enumerate()
        .find(|(i, key)| {
            keys[..*i]
                .iter()
                .any(|other| other.len() == key.len() && other == *key)
        })
        .map(|(_, key)| *key)
}

fn find_duplicate<'i>(nodes: &[Node<'i>], keys: &mut [(u64, usize)]) -> Option<&'i str> {
    let key_at = |index: usize| match nodes[index] {
        Node::String(s) => s,
        _ => unreachable!("key indexes point at string nodes"),
    };
    if keys.len() <= PAIRWISE_LIMIT {
        for (i, (hash, index)) in keys.iter().enumerate() {
            for (other_hash, other_index) in &keys[..i] {
                if hash == other_hash && key_at(*index) == key_at(*other_index) {
                    return Some(key_at(*index));
                }
            }
        }
        return None;
    }
    keys.sort_unstable_by_key(|(hash, _)| *hash);
    // Equal keys have equal hashes, so after sorting they sit in one run of equal hashes;
    // compare the strings only within such runs (almost always of length one).
    let mut run_start = 0;
    for i in 1..=keys.len() {
        if i == keys.len() || keys[i].0 != keys[run_start].0 {
            let run = &keys[run_start..i];
            for (a, (_, first)) in run.iter().enumerate() {
                for (_, second) in &run[a + 1..] {
                    if key_at(*first) == key_at(*second) {
                        return Some(key_at(*first));
                    }
                }
            }
            run_start = i;
        }
    }
    None
}

/// FNV-1a: keys are short and hashed once each, so a simple byte hash is the cheapest.
fn key_hash(key: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn write_static<B: BufMut>(out: &mut B, value: StaticNode) {
    match value {
        StaticNode::Null => out.put_slice(b"null"),
        StaticNode::Bool(true) => out.put_slice(b"true"),
        StaticNode::Bool(false) => out.put_slice(b"false"),
        StaticNode::I64(n) => out.put_slice(itoa::Buffer::new().format(n).as_bytes()),
        StaticNode::U64(n) => out.put_slice(itoa::Buffer::new().format(n).as_bytes()),
        StaticNode::F64(f) => {
            if f.is_finite() {
                out.put_slice(ryu::Buffer::new().format_finite(f).as_bytes())
            } else {
                // JSON has no infinities; simd-json never produces one, but never emit
                // invalid text if it did.
                out.put_slice(b"null")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::source::with_source;
    use super::*;

    /// Writes the payload `text` the way the server does, and also re-emitted whatever
    /// the choice: a copied payload must be exactly its re-emission.
    fn reemit(text: &str, max_depth: usize) -> Result<String, PayloadError> {
        with_source(text, |nodes, source| {
            let mut scratch = PayloadScratch::default();
            let mut ctx = PayloadContext {
                max_depth,
                source,
                scratch: &mut scratch,
            };
            let mut written = Vec::new();
            let stored = write_payload(nodes, 0, &mut ctx, &mut written);
            let mut reemitted = Vec::new();
            let walked = walk(nodes, 0, 0, &mut ctx, &mut reemitted);
            // Copied or re-emitted, a payload is refused for the same reason.
            assert_eq!(
                stored,
                walked.as_ref().map(|_| ()).map_err(Clone::clone),
                "{text}"
            );
            assert_eq!(walked?, nodes.len());
            assert_eq!(
                String::from_utf8_lossy(&written),
                String::from_utf8_lossy(&reemitted)
            );
            Ok(String::from_utf8(written).unwrap())
        })
    }

    #[test]
    fn compact_payloads_are_stored_as_their_re_emission() {
        for text in [
            "{\"a\":[1,-2,3.5e-7,true,false,null,\"x y/~\u{7f}\"],\"b\":{\"c\":{},\"d\":[]}}",
            r#"{"n":18446744073709551616,"f":1.10,"g":-0.0,"h":1E+400}"#,
            "{\"h\u{e9}\":\"\u{1F600}\"}",
        ] {
            assert_eq!(reemit(text, 32).unwrap(), text);
        }
    }

    #[test]
    fn reemits_canonical_json() {
        let text = r#" { "a" : [1, -2, 3.5, true, null, "x\"y\\z\u0001"], "b": {"c": {}} } "#;
        assert_eq!(
            reemit(text, 32).unwrap(),
            r#"{"a":[1,-2,3.5,true,null,"x\"y\\z\u0001"],"b":{"c":{}}}"#
        );
    }

    #[test]
    fn keeps_every_number_exactly_as_sent() {
        let text = r#"{"pi":3.141592653589793238,"tiny":1e-400,"cents":1.10,"e":1e2,
            "u":18446744073709551616,"neg":-9223372036854775809,"huge":1E+400,
            "z":-0.0,"list":[0,1.0e-5,123456789012345678901234567890]}"#;
        assert_eq!(
            reemit(text, 32).unwrap(),
            r#"{"pi":3.141592653589793238,"tiny":1e-400,"cents":1.10,"e":1e2,"u":18446744073709551616,"neg":-9223372036854775809,"huge":1E+400,"z":-0.0,"list":[0,1.0e-5,123456789012345678901234567890]}"#
        );
    }

    #[test]
    fn escapes_exactly_what_json_requires() {
        for len in 0..40 {
            for special in [b'"', b'\\', b'\n', 0x01, 0x1f, b' ', b'~', 0x7f, 0xc3] {
                for at in 0..len {
                    let mut raw = vec![b'a'; len];
                    raw[at] = special;
                    if special == 0xc3 {
                        raw[at] = b'x'; // keep the string valid UTF-8
                    }
                    let s = std::str::from_utf8(&raw).unwrap();
                    let mut out = Vec::new();
                    write_string(&mut out, s);
                    let expected = serde_json_like_escape(s);
                    assert_eq!(String::from_utf8(out).unwrap(), expected, "{s:?}");
                }
            }
        }
        let mut out = Vec::new();
        write_string(&mut out, "h\u{e9}llo \u{1F600} \"q\" \\ \u{0}");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"h\u{e9}llo \u{1F600} \\\"q\\\" \\\\ \\u0000\""
        );
    }

    fn serde_json_like_escape(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    #[test]
    fn enforces_depth() {
        assert!(reemit(r#"{"a":{"b":{}}}"#, 3).is_ok());
        assert_eq!(
            reemit(r#"{"a":{"b":{"c":[]}}}"#, 3),
            Err(PayloadError::TooDeep { max: 3 })
        );
    }

    #[test]
    fn duplicates_are_found_in_objects_of_every_size() {
        for size in [2, 7, 8, 9, 20, 32, 33, 100] {
            let mut keys: Vec<String> = (0..size).map(|i| format!("\"k{i:03}\":{i}")).collect();
            assert!(
                reemit(&format!("{{{}}}", keys.join(",")), 32).is_ok(),
                "{size}"
            );
            for (from, to) in [(0, size - 1), (size / 2, 0), (size - 2, size - 1)] {
                let original = std::mem::replace(&mut keys[to], format!("\"k{from:03}\":0"));
                assert_eq!(
                    reemit(&format!("{{{}}}", keys.join(",")), 32),
                    Err(PayloadError::DuplicateKey(format!("k{from:03}"))),
                    "{size} keys, k{from:03} again at {to}"
                );
                keys[to] = original;
            }
        }
    }

    #[test]
    fn a_failed_walk_leaves_no_keys_behind() {
        let large: Vec<String> = (0..40)
            .map(|i| format!("\"k{i}\":{{\"a\":{{}}}}"))
            .collect();
        let text = format!("{{{}}}", large.join(","));
        let mut scratch = PayloadScratch::default();
        with_source(&text, |nodes, source| {
            for round in 0..3 {
                let mut ctx = PayloadContext {
                    max_depth: 2,
                    source,
                    scratch: &mut scratch,
                };
                let result = write_payload(nodes, 0, &mut ctx, &mut Vec::new());
                assert_eq!(result, Err(PayloadError::TooDeep { max: 2 }));
                // Only this walk's own open key may remain, never earlier rounds'.
                assert!(
                    scratch.keys.len() <= 1,
                    "round {round}: {}",
                    scratch.keys.len()
                );
            }
        });
    }

    /// Random compact payloads, keys drawn from a few so that repeats are common, nested
    /// around the depth limit: copying and re-emitting agree on every one.
    #[test]
    fn copied_and_reemitted_payloads_agree_on_random_documents() {
        struct Gen(super::super::TestRng);
        impl Gen {
            fn below(&mut self, n: u64) -> u64 {
                self.0.below(n)
            }
            /// A value nested `depth` deep; `depth` past 5 gives scalars only.
            fn value(&mut self, depth: usize, out: &mut String) {
                match self.below(if depth > 5 { 2 } else { 6 }) {
                    0 => out
                        .push_str(["1", "-0.50", "1e400", "true", "null"][self.below(5) as usize]),
                    1 => out.push_str(["\"k\"", "\"\"", "\"k1\""][self.below(3) as usize]),
                    2 if self.below(40) == 0 => out.push_str("{\"a\" :1}"),
                    3 | 4 => {
                        out.push('{');
                        let keys = [1, 2, 3, 9, 80][self.below(5) as usize];
                        for i in 0..self.below(keys) {
                            if i > 0 {
                                out.push(',');
                            }
                            // The members of a large object are scalars, so that it is
                            // seldom refused for depth: its keys are what is checked.
                            let (space, member_depth) =
                                if keys > 9 { (2000, 6) } else { (6, depth + 1) };
                            let key = self.below(space);
                            out.push_str(&format!("\"k{key}\":"));
                            self.value(member_depth, out);
                        }
                        out.push('}');
                    }
                    _ => {
                        out.push('[');
                        for i in 0..self.below(3) {
                            if i > 0 {
                                out.push(',');
                            }
                            self.value(depth + 1, out);
                        }
                        out.push(']');
                    }
                }
            }
        }
        let mut gen = Gen(super::super::TestRng(0x9e37_79b9_7f4a_7c15));
        let (mut copied, mut refused) = (0, 0);
        for _ in 0..2000 {
            let mut text = String::from("{\"p\":");
            gen.value(1, &mut text);
            text.push('}');
            let max_depth = 2 + gen.below(4) as usize;
            match reemit(&text, max_depth) {
                Ok(_) => copied += 1,
                Err(_) => refused += 1,
            }
        }
        assert!(
            copied > 300 && refused > 200,
            "{copied} kept, {refused} refused"
        );
    }

    #[test]
    fn rejects_duplicates_small_and_large_objects() {
        assert_eq!(
            reemit(r#"{"a":1,"b":{"x":1,"x":2}}"#, 32),
            Err(PayloadError::DuplicateKey("x".into()))
        );
        let mut big: Vec<String> = (0..100).map(|i| format!("\"k{i}\":{i}")).collect();
        assert!(reemit(&format!("{{{}}}", big.join(",")), 32).is_ok());
        big.push("\"k57\":0".into());
        assert_eq!(
            reemit(&format!("{{{}}}", big.join(",")), 32),
            Err(PayloadError::DuplicateKey("k57".into()))
        );
        // The same key in sibling objects is not a duplicate.
        assert!(reemit(r#"{"a":{"x":1},"b":{"x":2}}"#, 32).is_ok());
    }
}
