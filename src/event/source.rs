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
//! offset in the body; a binary search of the structurals finds the key's opening quote,
//! and the value starts two structurals on.
//!
//! A payload is copied out of the body when the copy is byte for byte what
//! re-emitting it from the tape would write: no whitespace between its tokens and no
//! escape in its strings. SDKs send compact JSON, so that is the usual case, and it costs
//! one copy instead of a walk that re-escapes every string. Any other payload is re-emitted
//! (`json_text`), its numbers still taken from the body as sent.

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

/// For each tape node, the index of the structural it starts at. Reused document after
/// document, and made only when a lookup needs it: a compact payload, the usual case, is
/// found from its key instead ([`Source::compact_text`]), and mapping every node of
/// every document was about 200 instructions per event.
#[derive(Debug, Default)]
pub struct ValueStarts {
    structural_of_node: RefCell<Vec<u32>>,
    mapped: Cell<bool>,
}

impl ValueStarts {
    /// Forgets the map of the last document: the next lookup maps the new one.
    pub fn forget(&mut self) {
        self.mapped.set(false);
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
        let at = self.structurals.binary_search(&quote).ok()?;
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
    /// whitespace between tokens) and holds no escape: then it is exactly what
    /// re-emitting the node would write. `key` is the tape's string for the member name
    /// the value follows, if it is an object member: it finds the value without the map.
    pub fn compact_text(&self, node: usize, key: Option<&str>) -> Option<&'t [u8]> {
        let first = match key.and_then(|key| self.structural_after_key(key)) {
            Some(first) => first,
            None => self.structural_of(node)?,
        };
        let span = self.container_span(first)?;
        let text = &self.text[span];
        let escaped = self.has_escape && memchr::memchr(b'\\', text).is_some();
        (!escaped).then_some(text)
    }

    /// Where the container at `node` is in the text, if no whitespace separates its
    /// tokens. Whitespace between two tokens ends just before the second one's structural,
    /// and a token never ends in whitespace (a string ends in its quote), so checking the
    /// byte before each structural finds every gap. In valid JSON the only bytes up to
    /// `b' '` found outside strings are whitespace.
    fn container_span(&self, first: usize) -> Option<Range<usize>> {
        let start = self.structurals[first] as usize;
        let mut depth = NESTING[usize::from(self.text[start])];
        if depth != 1 {
            return None; // not a container
        }
        for &offset in &self.structurals[first + 1..] {
            let offset = offset as usize;
            if self.text[offset - 1] <= b' ' {
                return None;
            }
            depth += NESTING[usize::from(self.text[offset])];
            if depth == 0 {
                return Some(start..offset + 1);
            }
        }
        None
    }
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
                let from_key = source.compact_text(2, Some(key));
                assert_eq!(
                    from_key.map(|t| std::str::from_utf8(t).unwrap()),
                    expected,
                    "{text}"
                );
                assert!(
                    !source.starts.mapped.get(),
                    "found from the key, without the map: {text}"
                );
                assert_eq!(source.compact_text(2, None), from_key, "{text}");
            });
        }
    }
}
