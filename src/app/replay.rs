//! `tidegate spool replay DIR`: write the events of a spool (or a dead-letter spool) into
//! ScyllaDB through the same routing, batching and retries as the live sink.
//!
//! Replaying is safe to repeat: rows are keyed by (user_id, event_time, event_id), so an
//! event written twice is the same row. Damaged records are skipped and reported, as
//! `spool cat` does; events ScyllaDB refuses for good go to the dead-letter spool.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;

use crate::encoded::EventBatch;
use crate::segment::{segment_files, Found, Scanner};
use crate::sink::{Sink, SinkError, SinkFactory, SinkRole, SinkSettings, SinkStartError};
use crate::writer::{store_with_retries, Backoff, Retry};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplaySummary {
    pub segments: usize,
    pub events: usize,
    pub damaged: usize,
}

#[derive(Debug, Error)]
pub enum ReplayError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Start(#[from] SinkStartError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("replay executor failed: {0}")]
    Executor(String),
}

/// Replays every intact event under `dir`, `chunk` events per write; reports damage and
/// retries to `report` as it goes.
pub fn replay(
    settings: SinkSettings,
    chunk: usize,
    dir: &Path,
    report: impl Fn(&str) + Send + 'static,
) -> Result<ReplaySummary, ReplayError> {
    let files = segment_files(dir).map_err(|source| ReplayError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let sinks = SinkFactory::start_replay(settings)?;
    let executor = glommio::LocalExecutorBuilder::default()
        .name("tidegate-replay")
        .spawn(move || async move {
            let mut sink = sinks.open(SinkRole::Replay).await?;
            let mut summary = ReplaySummary::default();
            for file in files {
                summary.segments += 1;
                let data = std::fs::read(&file).map_err(|source| ReplayError::Read {
                    path: file.clone(),
                    source,
                })?;
                let mut events = Vec::new();
                for found in Scanner::new(&data) {
                    match found {
                        Found::Record { payload, .. } => {
                            events.push(Bytes::copy_from_slice(payload))
                        }
                        other => {
                            summary.damaged += 1;
                            report(&format!("{}: skipped {other:?}", file.display()));
                        }
                    }
                }
                for batch in events.chunks(chunk) {
                    let batch: EventBatch = batch.iter().cloned().collect();
                    store_with_retries(
                        &mut sink,
                        &batch,
                        Backoff::new(Duration::from_millis(50), Duration::from_secs(5)),
                        async |err: &SinkError| {
                            report(&format!("retrying after: {err}"));
                            Retry::After
                        },
                    )
                    .await?;
                    summary.events += batch.len();
                }
            }
            sink.close().await?;
            Ok::<_, ReplayError>(summary)
        })
        .map_err(|e| ReplayError::Executor(e.to_string()))?;
    executor
        .join()
        .map_err(|e| ReplayError::Executor(e.to_string()))?
}
