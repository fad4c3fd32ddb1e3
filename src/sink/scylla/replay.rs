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

use super::dispatch::{DispatchError, Dispatcher};
use super::sink::ScyllaSink;
use crate::config::Config;
use crate::sink::spool::reader::segment_files;
use crate::sink::spool::record::{Found, Scanner};
use crate::sink::spool::SpoolConfig;
use crate::sink::{Sink, SinkError};

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
    Dispatch(#[from] DispatchError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("replay executor failed: {0}")]
    Executor(String),
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Replays every intact event under `dir`; reports damage to `report` as it goes.
pub fn replay(
    config: &Config,
    dir: &Path,
    report: impl Fn(&str) + Send + 'static,
) -> Result<ReplaySummary, ReplayError> {
    let files = segment_files(dir).map_err(|source| ReplayError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let dispatcher = Dispatcher::start(config)?;
    let dead_letter = SpoolConfig {
        dir: ScyllaSink::dead_letter_dir(&config.spool.data_dir),
        ..config.spool_config()
    };
    let chunk = config.batch.max_events;
    let executor = glommio::LocalExecutorBuilder::default()
        .name("tidegate-replay")
        .spawn(move || async move {
            let mut sink = ScyllaSink::open(0, dispatcher, dead_letter).await?;
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
                    let mut backoff = Duration::from_millis(50);
                    while let Err(err) = sink.write_batch(batch).await {
                        report(&format!("retrying after: {err}"));
                        glommio::timer::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
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
