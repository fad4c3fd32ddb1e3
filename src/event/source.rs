//! Where a parsed document's values sit in the text the client sent.
//!
//! simd-json parses a copy of the body (it unescapes strings in place, and `numbers` may
//! overwrite a number it could not represent), so the body itself stays as it was sent.
//! Its first stage lists the offset of every structural character. Every value starts at
//! one of them, and the tape holds one node per value in document order, so the k-th
//! structural that starts a value (anything but `:`, `,`, `}` and `]`) is where tape
//! node k starts.
//!
//! That map costs a pass over every structural of the document, so it is made only when
//! needed (for the numbers of a payload that is re-emitted). A payload is found from its
//! key instead: a tape string points into the parsed copy, so its offset there is its
//! offset in the body; a search of the structurals finds the key's opening quote, and the
//! value starts two structurals on. Events are checked in document order, so that search
//! starts where the last payload ended.
//!
//! A payload is copied out of the body when the copy is byte for byte what
//! re-emitting it from the tape would write: no whitespace between its tokens and no
//! escape in its strings. SDKs send compact JSON, so that is the usual case, and it costs
//! one copy instead of a walk that re-escapes every string. The pass over its structurals
//! that finds where it ends also checks its nesting depth and that no object repeats a
//! key: without escapes a key's text is its value, so the tape need not be walked at all.
//! An object of scalars, the usual payload, is checked looking at half of its structurals:
//! its keys and values sit at fixed places among them.
//! Any other payload, and one that breaks a rule, is re-emitted (`json_text`), its numbers
//! still taken from the body as sent; that walk names what is wrong.

use std::cell::{Cell, RefCell};
use std::ops::Range;

/// Whether a structural character starts a value: all but `:`, `,`, `}` and `]`.
const STARTS_VALUE: [bool; 256] = {
    let mut table = [true; 256];
    table[b':' as usize] = false;
    table[b',' as usize] = false;
    table[b'}' as usize] = false;
    table[b']' as usize] = false;
    table
};

/// How a structural character changes the nesting depth.
const NESTING: [i32; 256] = {
    let mut table = [0; 256];
    table[b'{' as usize] = 1;
    table[b'[' as usize] = 1;
    table[b'}' as usize] = -1;
    table[b']' as usize] = -1;
    table
};

/// Objects with more keys than this are checked for a repeated key by sorting them when
/// they close, rather than by comparing each new key with those before it.
pub const PAIRWISE_LIMIT: usize = 32;

/// What [`Source::compact_text`] keeps while it checks a payload, reused from payload to
/// payload.
#[derive(Debug, Default)]
pub struct CompactScratch {
    /// The keys of every object still open, outermost first: where each one's text starts
    /// (after its opening quote) and its length.
    keys: Vec<(u32, u32)>,
    /// For each open container, where its keys start in `keys` ([`ARRAY`] for an array).
    open: Vec<u32>,
}

/// Marks an open array in [`CompactScratch::open`]: it has no keys.
const ARRAY: u32 = u32::MAX;

/// Where the keys of a container opened by `opening` will start in `scratch.keys`.
fn keys_start(opening: u8, scratch: &CompactScratch) -> u32 {
    if opening == b'{' {
        scratch.keys.len() as u32
    } else {
        ARRAY
    }
}

/// Where a container is in the text, and the index of its closing structural.
type Span = (Range<usize>, usize);

/// For each tape node, the index of the structural it starts at. Reused document after
/// document, and made only when a lookup needs it: a compact payload, the usual case, is
/// found from its key instead ([`Source::compact_text`]), and mapping every node of
/// every document was about 200 instructions per event.
#[derive(Debug, Default)]
pub struct ValueStarts {
    structural_of_node: RefCell<Vec<u32>>,
    mapped: Cell<bool>,
    /// The structural after the last payload found from its key: the next key is looked
    /// for from there (see [`find_from`]).
    keys_after: Cell<usize>,
    /// How far past `keys_after` the last key was. Events of one batch, and requests from
    /// one SDK, have one shape, so the next key is usually as far on: one probe there
    /// finds it. Kept from document to document.
    key_distance: Cell<usize>,
}

impl ValueStarts {
    /// Forgets the map of the last document: the next lookup maps the new one.
    pub fn forget(&mut self) {
        self.mapped.set(false);
        self.keys_after.set(0);
    }

    /// Maps the nodes of the document `text`, whose structurals (from the same parse) are
    /// `structurals`, unless already done. `nodes` is the tape's length: if the two
    /// disagree, which only a parser change could cause, nothing is mapped and every lookup
    /// answers `None`, so payloads are re-emitted from the tape alone.
    fn map(&self, text: &[u8], structurals: &[u32], nodes: usize) {
        if self.mapped.replace(true) {
            return;
        }
        let mut map = self.structural_of_node.borrow_mut();
        map.clear();
        map.reserve(structurals.len());
        for (at, &offset) in structurals.iter().enumerate() {
            // A lookup table: one load instead of four compares per structural.
            if STARTS_VALUE[usize::from(text[offset as usize])] {
                map.push(at as u32);
            }
        }
        if map.len() != nodes {
            debug_assert!(false, "the structurals and the tape disagree on the values");
            map.clear();
        }
    }
}

/// A parsed document's text as the client sent it, with the map of its values.
#[derive(Clone, Copy)]
pub struct Source<'t> {
    text: &'t [u8],
    /// Whether the text holds a backslash anywhere: usually not, and then no payload
    /// needs looking at for escapes.
    has_escape: bool,
    structurals: &'t [u32],
    starts: &'t ValueStarts,
    /// The tape's length.
    nodes: usize,
    /// The address of the copy simd-json parsed, where the tape's strings point: a
    /// string's offset in `text` is its address less this.
    parsed_at: usize,
}

impl<'t> Source<'t> {
    /// The source of the document `text`, parsed from the copy at address `parsed_at`
    /// into a tape of `nodes` nodes whose structurals are `structurals`.
    pub fn new(
        text: &'t [u8],
        structurals: &'t [u32],
        starts: &'t ValueStarts,
        nodes: usize,
        parsed_at: usize,
    ) -> Self {
        Source {
            text,
            has_escape: memchr::memchr(b'\\', text).is_some(),
            structurals,
            starts,
            nodes,
            parsed_at,
        }
    }

    /// The index in `structurals` where tape node `node` starts.
    fn structural_of(&self, node: usize) -> Option<usize> {
        self.starts.map(self.text, self.structurals, self.nodes);
        self.starts
            .structural_of_node
            .borrow()
            .get(node)
            .map(|&at| at as usize)
    }

    /// The index in `structurals` where the value of the object member whose key is
    /// `key` (a string of the tape) starts, found from where the key is: no map needed.
    /// `None` if the key is not where the text says a key is.
    fn structural_after_key(&self, key: &str) -> Option<usize> {
        // The key's text starts just after its opening quote, which is a structural; the
        // colon and then the value follow as the next two.
        let content = (key.as_ptr() as usize).checked_sub(self.parsed_at)?;
        let quote = u32::try_from(content.checked_sub(1)?).ok()?;
        let from = self.starts.keys_after.get();
        let predicted = from + self.starts.key_distance.get();
        let at = match self.structurals.get(predicted) {
            Some(&offset) if offset == quote => predicted,
            _ => find_from(self.structurals, from, quote)?,
        };
        self.starts.key_distance.set(at.saturating_sub(from));
        let colon = *self.structurals.get(at + 1)? as usize;
        (self.text.get(quote as usize) == Some(&b'"') && self.text.get(colon) == Some(&b':'))
            .then_some(at + 2)
            .filter(|&value| value < self.structurals.len())
    }

    /// The text of the number at tape node `node`, exactly as sent.
    pub fn number_text(&self, node: usize) -> Option<&'t [u8]> {
        let start = self.structurals[self.structural_of(node)?] as usize;
        let len = self.text[start..]
            .iter()
            .position(|&b| !super::numbers::in_number(b))
            .unwrap_or(self.text.len() - start);
        Some(&self.text[start..start + len])
    }

    /// The text of the object or array at tape node `node` if it is compact (no
    /// whitespace between tokens), holds no escape, nests at most `max_depth` containers
    /// deep (itself counting as 1) and repeats no key within an object: then it is exactly
    /// what re-emitting the node would write, and valid as a payload. `key` is the tape's
    /// string for the member name the value follows, if it is an object member: it finds
    /// the value without the map.
    pub fn compact_text(
        &self,
        node: usize,
        key: Option<&str>,
        max_depth: usize,
        scratch: &mut CompactScratch,
    ) -> Option<&'t [u8]> {
        let first = match key.and_then(|key| self.structural_after_key(key)) {
            Some(first) => first,
            None => self.structural_of(node)?,
        };
        let (span, last) = self.checked_span(first, max_depth, scratch)?;
        self.starts.keys_after.set(last + 1);
        let text = &self.text[span];
        let escaped = self.has_escape && memchr::memchr(b'\\', text).is_some();
        (!escaped).then_some(text)
    }

    /// Where the container starting at structural `first` is in the text, and the index
    /// of its closing structural, if no whitespace separates its tokens, it nests at most
    /// `max_depth` deep and none of its objects repeats a key's text (which is the key, if
    /// the text has no escape).
    ///
    /// Whitespace between two tokens ends just before the second one's structural, and a
    /// token never ends in whitespace (a string ends in its quote), so checking the byte
    /// before each structural finds every gap. In valid JSON the only bytes up to `b' '`
    /// found outside strings are whitespace. A key is the string whose opening quote is
    /// the structural before a colon; with no gap, its closing quote is just before it.
    fn checked_span(
        &self,
        first: usize,
        max_depth: usize,
        scratch: &mut CompactScratch,
    ) -> Option<Span> {
        let start = self.structurals[first] as usize;
        if NESTING[usize::from(self.text[start])] != 1 || max_depth == 0 {
            return None; // not a container, or one too deep already
        }
        match self.flat_object(first, scratch) {
            Some(flat) => flat,
            None => self.walked_span(first, max_depth, scratch),
        }
    }

    /// [`Self::checked_span`] for any container, one structural at a time.
    fn walked_span(
        &self,
        first: usize,
        max_depth: usize,
        scratch: &mut CompactScratch,
    ) -> Option<Span> {
        let start = self.structurals[first] as usize;
        scratch.keys.clear();
        scratch.open.clear();
        scratch.open.push(keys_start(self.text[start], scratch));
        let mut previous = start;
        let mut rest = self.structurals[first + 1..].iter();
        while let Some(&offset) = rest.next() {
            let offset = offset as usize;
            if self.text[offset - 1] <= b' ' {
                return None;
            }
            match self.text[offset] {
                opening @ (b'{' | b'[') => {
                    if scratch.open.len() >= max_depth {
                        return None;
                    }
                    let keys_start = keys_start(opening, scratch);
                    scratch.open.push(keys_start);
                }
                b'}' | b']' => {
                    let keys_start = scratch.open.pop()?;
                    if keys_start != ARRAY {
                        let keys = &mut scratch.keys[keys_start as usize..];
                        if keys.len() > PAIRWISE_LIMIT && self.has_repeated_key(keys) {
                            return None;
                        }
                        scratch.keys.truncate(keys_start as usize);
                    }
                    if scratch.open.is_empty() {
                        let closing = self.structurals.len() - rest.len() - 1;
                        return Some((start..offset + 1, closing));
                    }
                }
                b':' => {
                    let key = (previous as u32 + 1, (offset - previous - 2) as u32);
                    let keys_start = *scratch.open.last()? as usize;
                    let earlier = scratch.keys.get(keys_start..)?;
                    // Lengths first: most keys of an object differ in length.
                    if earlier.len() < PAIRWISE_LIMIT
                        && earlier
                            .iter()
                            .any(|&other| other.1 == key.1 && self.key(other) == self.key(key))
                    {
                        return None;
                    }
                    scratch.keys.push(key);
                }
                _ => {}
            }
            previous = offset;
        }
        None
    }

    /// [`Self::checked_span`] for an object whose values are all scalars, the usual
    /// payload; `None` if the object at structural `first` holds a container.
    ///
    /// Such an object's structurals are its brace, then a key's quote, its colon, its
    /// value and a comma for each member, the last comma being the closing brace. So its
    /// end is found looking at two structurals of every four, its keys are at fixed
    /// places, and gaps are looked for in its text at once: the general walk's dispatch on
    /// every structural cost some 40 instructions per structural of a payload.
    fn flat_object(&self, first: usize, scratch: &mut CompactScratch) -> Option<Option<Span>> {
        let text = self.text;
        let start = self.structurals[first] as usize;
        if text[start] != b'{' {
            return None;
        }
        // Member k's value is structural `first + 3 + 4k` and what follows it, a comma or
        // the closing brace, `first + 4 + 4k`, as long as no value before it is a
        // container: so only those two of every four need looking at.
        let at = |offset: u32| text[offset as usize];
        let mut closing = first + 1;
        if at(*self.structurals.get(closing)?) != b'}' {
            // Each member: its key's quote, its colon, its value, and a comma or the brace.
            let mut members = self
                .structurals
                .get(first + 1..)?
                .chunks_exact(4)
                .enumerate();
            closing = loop {
                let (k, member) = members.next()?;
                if NESTING[usize::from(at(member[2]))] == 1 {
                    return None;
                }
                if at(member[3]) == b'}' {
                    break first + 4 * (k + 1);
                }
            };
        }
        let end = self.structurals[closing] as usize;
        // Bytes up to b' ' outside strings are gaps. Strings may hold spaces, so only a
        // span with such a byte has its structurals looked at one by one.
        if has_low_byte(&text[start..=end])
            && self.structurals[first + 1..=closing]
                .iter()
                .any(|&offset| text[offset as usize - 1] <= b' ')
        {
            return Some(None);
        }
        // With no gap, a key's closing quote is just before its colon. Each member is its
        // key's quote, its colon, its value and a comma (or the closing brace).
        let members = self.structurals[first + 1..=closing].chunks_exact(4);
        let key_of = |member: &[u32]| (member[0] + 1, member[1] - member[0] - 2);
        // Keys of different lengths differ, and most keys of an object differ in length:
        // only when two lengths meet are the keys' texts compared (lengths of 63 and more
        // share a bit: two such keys are always compared).
        let mut lengths = 0u64;
        let mut lengths_meet = false;
        for member in members.clone() {
            let bit = 1u64 << key_of(member).1.min(63);
            lengths_meet |= lengths & bit != 0;
            lengths |= bit;
        }
        if !lengths_meet {
            return Some(Some((start..end + 1, closing)));
        }
        scratch.keys.clear();
        scratch.keys.extend(members.map(key_of));
        let mut keys = std::mem::take(&mut scratch.keys);
        let repeated = if keys.len() <= PAIRWISE_LIMIT {
            keys.iter().enumerate().any(|(later, &this)| {
                keys[..later]
                    .iter()
                    .any(|&other| other.1 == this.1 && self.key(other) == self.key(this))
            })
        } else {
            self.has_repeated_key(&mut keys)
        };
        scratch.keys = keys;
        Some((!repeated).then_some((start..end + 1, closing)))
    }

    fn key(&self, (start, len): (u32, u32)) -> &'t [u8] {
        &self.text[start as usize..][..len as usize]
    }

    /// Whether two of `keys` (one object's, beyond the pairwise limit) have the same text.
    fn has_repeated_key(&self, keys: &mut [(u32, u32)]) -> bool {
        keys.sort_unstable_by(|&a, &b| self.key(a).cmp(self.key(b)));
        keys.windows(2)
            .any(|pair| self.key(pair[0]) == self.key(pair[1]))
    }
}

/// Whether `span` holds a byte up to `b' '`. Sixteen bytes at a time, so that the compiler
/// compares each block in one vector instruction; a payload is a few dozen bytes.
fn has_low_byte(span: &[u8]) -> bool {
    let low = |block: &[u8; 16]| block.iter().fold(false, |low, &b| low | (b <= b' '));
    let blocks = span.chunks_exact(16);
    let rest = blocks.remainder();
    let any_block = blocks
        .map(|block| block.try_into().expect("chunks_exact gives 16 bytes"))
        .any(|block: &[u8; 16]| low(block));
    any_block
        || match span.len().checked_sub(16) {
            // The last sixteen bytes, overlapping the blocks checked already.
            Some(last) if !rest.is_empty() => low(span[last..].try_into().expect("16 bytes")),
            _ => rest.iter().any(|&b| b <= b' '),
        }
}

/// The index of `target` in the ascending `structurals`, looked for from index `from` on
/// (and before it only if it is not there). Keys are looked up in document order, a few
/// dozen structurals apart: a gallop from the last one touches a few entries near it,
/// where a binary search of a 100-event document chained a dozen loads across all of it,
/// half of the time spent checking a compact payload.
fn find_from(structurals: &[u32], from: usize, target: u32) -> Option<usize> {
    let after = structurals.get(from..).unwrap_or_default();
    if after.first().is_none_or(|&first| first > target) {
        return structurals[..from.min(structurals.len())]
            .binary_search(&target)
            .ok();
    }
    // after[0] <= target: double the step until an entry reaches it.
    let mut reach = 1;
    while reach < after.len() && after[reach] < target {
        reach *= 2;
    }
    let low = reach / 2;
    let high = (reach + 1).min(after.len());
    after[low..high]
        .binary_search(&target)
        .ok()
        .map(|at| from + low + at)
}

/// Parses a copy of `text` the way the batch parser does (numbers simd-json cannot hold
/// neutralised first) and hands the tape and the source to `check`.
#[cfg(test)]
pub fn with_source<R>(
    text: &str,
    check: impl FnOnce(&[simd_json::tape::Node<'_>], Source<'_>) -> R,
) -> R {
    let mut work = text.as_bytes().to_vec();
    super::numbers::neutralise_refused(&mut work);
    work.resize(text.len() + simd_json::INPUT_PADDING, b' ');
    let parsed_at = work.as_ptr() as usize;
    let mut buffers = simd_json::Buffers::default();
    let mut tape = simd_json::Tape::null();
    simd_json::fill_tape_padded(&mut work, text.len(), &mut buffers, &mut tape).unwrap();
    let starts = ValueStarts::default();
    let nodes = tape.0.len();
    check(
        &tape.0,
        Source::new(
            text.as_bytes(),
            buffers.structural_indexes(),
            &starts,
            nodes,
            parsed_at,
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use simd_json::{tape::Node, StaticNode};

    #[test]
    fn every_node_maps_to_where_its_value_starts() {
        let text = r#" [ {"a" : [1, -2.50e3 ,true,null], "b\"}" :{"c":{}} } , "x", 18446744073709551615 ] "#;
        with_source(text, |nodes, source| {
            let firsts: String = (0..nodes.len())
                .map(|node| {
                    text.as_bytes()
                        [source.structurals[source.structural_of(node).unwrap()] as usize]
                        as char
                })
                .collect();
            assert_eq!(firsts, r#"[{"[1-tn"{"{"1"#);
            assert_eq!(source.starts.structural_of_node.borrow().len(), nodes.len());
        });
    }

    #[test]
    fn numbers_are_read_as_sent() {
        with_source(
            r#"{"x":[1.10,"2",true,-3e0,{"y":0.5}]}"#,
            |nodes, source| {
                let numbers: Vec<_> = (0..nodes.len())
                    .filter(|&node| {
                        matches!(
                            nodes[node],
                            Node::Static(
                                StaticNode::I64(_) | StaticNode::U64(_) | StaticNode::F64(_)
                            )
                        )
                    })
                    .map(|node| {
                        String::from_utf8(source.number_text(node).unwrap().to_vec()).unwrap()
                    })
                    .collect();
                assert_eq!(numbers, ["1.10", "-3e0", "0.5"]);
            },
        );
    }

    #[test]
    fn compact_containers_are_copied_whole_and_nothing_else() {
        let cases = [
            (
                r#"{"p":{"a":[1,{"b":"x y"}],"c":{}}}"#,
                Some(r#"{"a":[1,{"b":"x y"}],"c":{}}"#),
            ),
            (r#"{"p":[]}"#, Some("[]")),
            (r#"{"p": {"a":1}}"#, Some(r#"{"a":1}"#)),
            (r#"{"p":{"a": 1}}"#, None),
            (r#"{"p":{"a":1 }}"#, None),
            (r#"{"p":{"a":[1,2] ,"b":2}}"#, None),
            ("{\"p\":{\"a\":\n1}}", None),
            (r#"{"p":{"a":"\n"}}"#, None),
            (r#"{"p":{"a\u0041":1}}"#, None),
            // A key with an escape, a value after whitespace, a key with its colon
            // spaced out: found from the key all the same.
            (r#"{"p\u0041":{"a":1}}"#, Some(r#"{"a":1}"#)),
            (r#"{"p" :  [1,2]}"#, Some("[1,2]")),
        ];
        for (text, expected) in cases {
            with_source(text, |nodes, source| {
                let Node::String(key) = nodes[1] else {
                    panic!("the member's key precedes it")
                };
                let mut scratch = CompactScratch::default();
                let from_key = source.compact_text(2, Some(key), 32, &mut scratch);
                assert_eq!(
                    from_key.map(|t| std::str::from_utf8(t).unwrap()),
                    expected,
                    "{text}"
                );
                assert!(
                    !source.starts.mapped.get(),
                    "found from the key, without the map: {text}"
                );
                assert_eq!(
                    source.compact_text(2, None, 32, &mut scratch),
                    from_key,
                    "{text}"
                );
            });
        }
    }

    #[test]
    fn a_structural_is_found_from_any_starting_point() {
        let structurals: Vec<u32> = (0..70).map(|i| i * 6 + i % 5).collect();
        for from in 0..structurals.len() + 2 {
            for target in 0..=structurals[structurals.len() - 1] + 2 {
                assert_eq!(
                    find_from(&structurals, from, target),
                    structurals.binary_search(&target).ok(),
                    "from {from}, target {target}"
                );
            }
        }
        assert_eq!(find_from(&[], 0, 7), None);
    }

    #[test]
    fn payloads_are_found_from_their_keys_in_any_order() {
        let text = r#"[{"p":{"a":1}},{"q":[2,{"b":3}]},{"r":{"c":[4]}}]"#;
        with_source(text, |nodes, source| {
            let keyed: Vec<(usize, &str)> = (1..nodes.len())
                .filter_map(|node| match (nodes[node - 1], nodes[node]) {
                    (Node::String(key), Node::Object { .. } | Node::Array { .. })
                        if ["p", "q", "r"].contains(&key) =>
                    {
                        Some((node, key))
                    }
                    _ => None,
                })
                .collect();
            assert_eq!(keyed.len(), 3);
            let mut scratch = CompactScratch::default();
            let mut found = |order: &[usize]| -> Vec<String> {
                order
                    .iter()
                    .map(|&i| {
                        let (node, key) = keyed[i];
                        let text = source.compact_text(node, Some(key), 32, &mut scratch);
                        String::from_utf8(text.unwrap().to_vec()).unwrap()
                    })
                    .collect()
            };
            // In document order (each search starts after the last payload), then back
            // to front and out of order (each one before where the last search ended).
            let expected = [r#"{"a":1}"#, r#"[2,{"b":3}]"#, r#"{"c":[4]}"#];
            assert_eq!(found(&[0, 1, 2]), expected);
            assert_eq!(found(&[2, 1, 0]), [expected[2], expected[1], expected[0]]);
            assert_eq!(
                found(&[1, 0, 2, 0]),
                [expected[1], expected[0], expected[2], expected[0]]
            );
            assert!(!source.starts.mapped.get(), "all found from their keys");
        });
    }

    #[test]
    fn payloads_of_events_of_different_shapes_are_found() {
        // Each key lies a different distance past the last payload, so the probe at the
        // last distance finds another structural (or none) before the search finds it.
        let text =
            r#"[{"a":1,"p":{"x":1}},{"p":{"y":[2]}},{"b":[1,2,3],"c":"d","p":{"z":3}},{"p":{}}]"#;
        with_source(text, |nodes, source| {
            let mut scratch = CompactScratch::default();
            let found: Vec<String> = (1..nodes.len())
                .filter(|&node| matches!(nodes[node - 1], Node::String("p")))
                .map(|node| {
                    let Node::String(key) = nodes[node - 1] else {
                        unreachable!()
                    };
                    let text = source.compact_text(node, Some(key), 32, &mut scratch);
                    String::from_utf8(text.unwrap().to_vec()).unwrap()
                })
                .collect();
            assert_eq!(found, [r#"{"x":1}"#, r#"{"y":[2]}"#, r#"{"z":3}"#, "{}"]);
            assert!(!source.starts.mapped.get(), "all found from their keys");
        });
    }

    /// The payload at node 2 of `{"p":...}`, if it may be copied as sent.
    fn copied(payload: &str, max_depth: usize, scratch: &mut CompactScratch) -> Option<String> {
        let text = format!("{{\"p\":{payload}}}");
        with_source(&text, |nodes, source| {
            let Node::String(key) = nodes[1] else {
                panic!("the member's key precedes it")
            };
            source
                .compact_text(2, Some(key), max_depth, scratch)
                .map(|t| String::from_utf8(t.to_vec()).unwrap())
        })
    }

    #[test]
    fn a_low_byte_is_found_wherever_it_is() {
        for len in 0..70 {
            let clean = vec![b'a'; len];
            assert!(!has_low_byte(&clean), "{len} bytes");
            for at in 0..len {
                for low in [b' ', b'\n', 0, b'\t'] {
                    let mut span = clean.clone();
                    span[at] = low;
                    assert!(has_low_byte(&span), "{len} bytes, {low} at {at}");
                }
                let mut span = clean.clone();
                span[at] = b'!';
                assert!(!has_low_byte(&span), "{len} bytes, '!' at {at}");
            }
        }
    }

    #[test]
    fn a_flat_object_is_judged_as_the_general_walk_judges_it() {
        // Objects of scalars with keys from a small set (so that some repeat), values
        // that hold spaces, braces and quotes, gaps in random places, and sizes on both
        // sides of the pairwise limit.
        let mut rng = super::super::TestRng(0x2545_f491_4f6c_dd1d);
        let mut next = |below: u64| rng.below(below);
        let values = [
            r#""x y""#,
            "-1.5e3",
            "true",
            "null",
            r#""{[\"]}""#,
            "0",
            r#""""#,
        ];
        let (mut copied_whole, mut repeats, mut gapped) = (0, 0, 0);
        for _ in 0..3_000 {
            let members = match next(4) {
                0 => next(3),
                1 => PAIRWISE_LIMIT as u64 - 1 + next(3),
                _ => next(8),
            };
            let key_choices = if next(2) == 0 { members * 4 + 1 } else { 6 };
            // Tokens, each preceded by a gap now and then.
            let mut tokens = vec!["{".to_owned()];
            for member in 0..members {
                if member > 0 {
                    tokens.push(",".to_owned());
                }
                // Keys of many lengths (some past 63), and some of one length.
                let stem = "k".repeat(if next(2) == 0 { 1 } else { next(70) as usize });
                tokens.push(format!(r#""{stem}{}""#, next(key_choices)));
                tokens.push(":".to_owned());
                tokens.push(values[next(values.len() as u64) as usize].to_owned());
            }
            tokens.push("}".to_owned());
            let mut has_gap = false;
            let mut payload = String::new();
            for token in tokens {
                if next(40) == 0 {
                    has_gap |= !payload.is_empty();
                    payload.push(' ');
                }
                payload += &token;
            }
            let text = format!(r#"{{"p":{payload}}}"#);
            with_source(&text, |_, source| {
                let first = 3; // after `{`, the key's quote and its colon
                let mut scratch = CompactScratch::default();
                let flat = source.flat_object(first, &mut scratch);
                let walked = source.walked_span(first, 32, &mut scratch);
                assert_eq!(flat, Some(walked.clone()), "{text}");
                match (walked, has_gap) {
                    (Some(_), _) => copied_whole += 1,
                    (None, false) => repeats += 1,
                    (None, true) => gapped += 1,
                }
            });
        }
        assert!(
            copied_whole > 500 && repeats > 100 && gapped > 100,
            "{copied_whole} copied, {repeats} with a repeated key, {gapped} with a gap"
        );
        // A container among the values is for the general walk.
        with_source(r#"{"p":{"a":1,"b":[2]}}"#, |_, source| {
            assert_eq!(source.flat_object(3, &mut CompactScratch::default()), None);
        });
    }

    #[test]
    fn a_payload_that_breaks_a_rule_is_not_copied() {
        let mut scratch = CompactScratch::default();
        let fine = |payload: &str, depth, scratch: &mut CompactScratch| {
            assert_eq!(copied(payload, depth, scratch).as_deref(), Some(payload));
        };
        let refused = |payload: &str, depth, scratch: &mut CompactScratch| {
            assert_eq!(copied(payload, depth, scratch), None, "{payload}");
        };
        // Depth: the payload counts as 1, arrays as much as objects.
        fine(r#"{"a":{"b":[]}}"#, 3, &mut scratch);
        refused(r#"{"a":{"b":[1]}}"#, 2, &mut scratch);
        refused(r#"[[[]]]"#, 2, &mut scratch);
        refused("{}", 0, &mut scratch);
        // A key repeated within one object, at any depth, before and after a nested one.
        refused(r#"{"a":1,"a":2}"#, 32, &mut scratch);
        refused(r#"{"a":{"x":1,"y":[{"z":1,"z":1}]}}"#, 32, &mut scratch);
        refused(r#"{"a":{"b":1},"a":2}"#, 32, &mut scratch);
        // Not repeats: the same key in sibling or nested objects, a key's text as a value,
        // keys that only share a prefix.
        fine(
            r#"{"x":{"x":{"x":1}},"y":{"x":2},"z":"x"}"#,
            32,
            &mut scratch,
        );
        fine(
            r#"{"ab":1,"a":2,"abc":3,"b":["ab","ab"]}"#,
            32,
            &mut scratch,
        );
        // Objects beyond the pairwise limit, with the repeat anywhere in them.
        for size in [PAIRWISE_LIMIT, PAIRWISE_LIMIT + 1, 100] {
            let keys: Vec<String> = (0..size).map(|i| format!("\"k{i}\":{i}")).collect();
            fine(&format!("{{{}}}", keys.join(",")), 32, &mut scratch);
            for (from, to) in [(0, size - 1), (size - 2, size - 1), (size / 2, 1)] {
                let mut repeated = keys.clone();
                repeated[to] = format!("\"k{from}\":0");
                refused(&format!("{{{}}}", repeated.join(",")), 32, &mut scratch);
            }
        }
        // What a refused payload left behind does not leak into the next one.
        refused(r#"{"a":{"a":1,"a":1}}"#, 32, &mut scratch);
        fine(r#"{"a":1}"#, 32, &mut scratch);
    }
}
