//! Stage 2 of the data flow: turning a request body into validated, encoded events.
//!
//! `batch` frames the body (object, array, NDJSON) and applies all-or-nothing semantics,
//! `validate` holds the rules for one event, `json_text` re-emits payloads, and `encoded`
//! defines the binary form every later stage carries.

pub mod batch;
pub mod encoded;
pub mod json_text;
pub mod numbers;
pub mod timestamp;
pub mod validate;

pub use batch::{BatchError, BatchLimits, BatchParser, BodyFormat, EncodedBatch, EventError};
pub use encoded::EventView;
pub use validate::EventLimits;
