//! The one retry loop: every path that must get a batch into a sink — the shard's writer,
//! the overflow drain, the replay tool — retries through here, with the same capped
//! exponential backoff, and decides only what a failure means to it.

use std::time::Duration;

use crate::encoded::EventBatch;
use crate::sink::{Sink, SinkError};

/// Capped exponential backoff.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff { next: first, max }
    }

    /// The wait before the next attempt; each is twice the last, up to the cap.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }
}

/// What a caller wants after a failed write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Wait out the backoff and try again.
    After,
    /// Give up on this batch; the error is returned.
    Stop,
}

/// Writes `batch` until the sink takes it (`Ok`), or `on_failure` says to stop (the last
/// error). The sink promises all of a batch or nothing, so a retry never duplicates part of
/// one. Must run on a glommio executor.
pub async fn store_with_retries<S: Sink>(
    sink: &mut S,
    batch: &EventBatch,
    mut backoff: Backoff,
    mut on_failure: impl AsyncFnMut(&SinkError) -> Retry,
) -> Result<(), SinkError> {
    loop {
        match sink.write_batch(batch).await {
            Ok(()) => return Ok(()),
            Err(err) => {
                if on_failure(&err).await == Retry::Stop {
                    return Err(err);
                }
                glommio::timer::sleep(backoff.next_wait()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(50));
        let waits: Vec<u64> = (0..5)
            .map(|_| backoff.next_wait().as_millis() as u64)
            .collect();
        assert_eq!(waits, [10, 20, 40, 50, 50]);
    }

    /// Fails its first `failures` writes, then stores.
    struct Flaky {
        failures: usize,
        stored: Vec<Bytes>,
    }

    impl Sink for Flaky {
        async fn write_batch(&mut self, batch: &EventBatch) -> Result<(), SinkError> {
            if self.failures > 0 {
                self.failures -= 1;
                return Err(SinkError::Scylla("flaky".into()));
            }
            self.stored.extend(batch.to_owned_events());
            Ok(())
        }

        async fn close(&mut self) -> Result<(), SinkError> {
            Ok(())
        }
    }

    #[test]
    fn retries_until_stored_or_told_to_stop() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let batch: EventBatch = [Bytes::from_static(b"e")].into_iter().collect();
                let quick = || Backoff::new(Duration::from_millis(1), Duration::from_millis(1));
                let mut sink = Flaky {
                    failures: 3,
                    stored: Vec::new(),
                };
                let mut seen = 0;
                let stored =
                    store_with_retries(&mut sink, &batch, quick(), async |_: &SinkError| {
                        seen += 1;
                        Retry::After
                    })
                    .await;
                assert!(stored.is_ok());
                assert_eq!((seen, sink.stored.len()), (3, 1));

                sink.failures = 5;
                let mut seen = 0;
                let stopped =
                    store_with_retries(&mut sink, &batch, quick(), async |_: &SinkError| {
                        seen += 1;
                        if seen == 2 {
                            Retry::Stop
                        } else {
                            Retry::After
                        }
                    })
                    .await;
                assert!(stopped.is_err());
                assert_eq!(
                    (seen, sink.stored.len()),
                    (2, 1),
                    "nothing stored after a stop"
                );
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
