//! Turning a request body into validated, encoded events.
//!
//! `batch` frames the body (object, array, NDJSON) and applies all-or-nothing semantics,
//! `validate` holds the rules for one event, `source` maps parsed values back to the text
//! as sent, `json_text` copies or re-emits payloads, `numbers` lets simd-json take numbers
//! it cannot represent, `timestamp` reads event times and `ids` makes the ids of events
//! sent without one. Each event leaves
//! in the binary form `crate::encoded` defines, which every later stage carries.

mod batch;
mod ids;
mod json_text;
mod numbers;
mod source;
mod timestamp;
mod validate;

/// A small deterministic generator for the tests' random documents, so that a failure
/// names its seed.
#[cfg(test)]
struct TestRng(u64);

#[cfg(test)]
impl TestRng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

pub use batch::{
    Arrival, BatchError, BatchLimits, BatchParser, BodyFormat, EncodedBatch, EventError,
};
pub use validate::{cut_at_char_boundary, EventLimits};
