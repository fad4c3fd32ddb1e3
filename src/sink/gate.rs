//! A test-only wrapper that stalls or fails a sink on command.
//!
//! Backpressure and failure tests need a sink that stops taking writes, or refuses them,
//! and later recovers, driven from another process (the test). Files are the simplest
//! signal both sides can see: while the stall file exists, `write_batch` waits; while the
//! fail file exists, it returns an error. Enabled only by the hidden `--test-stall-file`
//! and `--test-fail-file` options; never used in production.

use std::path::PathBuf;
use std::time::Duration;

use super::{Sink, SinkError};
use crate::encoded::EventBatch;

/// The files that control a gate.
#[derive(Debug, Clone, Default)]
pub struct GateFiles {
    pub stall: Option<PathBuf>,
    pub fail: Option<PathBuf>,
}

impl GateFiles {
    pub fn is_empty(&self) -> bool {
        self.stall.is_none() && self.fail.is_none()
    }
}

pub struct Gate<S> {
    inner: S,
    files: GateFiles,
}

impl<S> Gate<S> {
    pub fn new(inner: S, files: GateFiles) -> Self {
        Gate { inner, files }
    }
}

impl<S: Sink> Sink for Gate<S> {
    async fn write_batch(&mut self, batch: &EventBatch) -> Result<(), SinkError> {
        if let Some(stall) = &self.files.stall {
            while stall.exists() {
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
        }
        if self.files.fail.as_ref().is_some_and(|f| f.exists()) {
            return Err(SinkError::InjectedFault);
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
