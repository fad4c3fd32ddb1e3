//! A sink that stores nothing, so benchmarks can measure the ingest path without storage.

use super::{Sink, SinkError};
use crate::encoded::EventBatch;

#[derive(Default)]
pub struct Blackhole;

impl Sink for Blackhole {
    async fn write_batch(&mut self, _batch: &EventBatch) -> Result<(), SinkError> {
        Ok(())
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}
