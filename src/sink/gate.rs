//! A test-only wrapper that stalls a sink while a gate file exists.
//!
//! Backpressure tests need a sink that stops taking writes and later resumes, driven from
//! another process (the test). A file is the simplest signal both sides can see: while it
//! exists, `write_batch` waits; once it is removed, the wrapped sink is written as usual.
//! Enabled only by the hidden `--test-stall-file` option; never used in production.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

use super::{Sink, SinkError};

pub struct Gate<S> {
    inner: S,
    stall_file: PathBuf,
}

impl<S> Gate<S> {
    pub fn new(inner: S, stall_file: PathBuf) -> Self {
        Gate { inner, stall_file }
    }
}

impl<S: Sink> Sink for Gate<S> {
    async fn write_batch(&mut self, batch: &[Bytes]) -> Result<(), SinkError> {
        while self.stall_file.exists() {
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
        self.inner.write_batch(batch).await
    }

    async fn tick(&mut self) -> Result<(), SinkError> {
        self.inner.tick().await
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        self.inner.close().await
    }
}
