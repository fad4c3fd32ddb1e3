//! The spill: a request its ring cannot take goes to the overflow topic instead, and is
//! answered 202 only once the broker has acknowledged every one of its events.
//!
//! One librdkafka producer serves every shard (it is thread-safe and runs its own I/O
//! threads); a shard awaits the delivery reports of its request on its own executor, so no
//! shard thread ever blocks on the broker. The producer uses acks=all, so a report of
//! success means every in-sync replica has the event, and is idempotent by default, so
//! librdkafka's own retries cannot duplicate or reorder it within a partition. Each event is keyed by its
//! user_id, so one user's spilled events stay in order within one partition.
//!
//! A request whose events cannot all be acknowledged within the deadline is refused (503).
//! Events of it that the broker took anyway stay in the topic and will be drained; they
//! are counted as orphaned, and a client retrying with the same event_id writes the same
//! row again, which is harmless (see the README).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use thiserror::Error;

use super::settings::KafkaSettings;
use super::stats::{OverflowStats, SpillFailure};
use crate::encoded::EventView;

#[derive(Debug, Error)]
pub enum OverflowError {
    #[error("cannot create the Kafka {what}: {source}")]
    Client {
        what: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error("cannot create the overflow topic {topic}: {message}")]
    Topic { topic: String, message: String },
}

/// Headers every spilled event carries, so that a consumer other than tidegate's drain can
/// route or deduplicate without decoding the value.
pub const HEADER_EVENT_ID: &str = "event_id";
pub const HEADER_SHARD: &str = "shard";
pub const HEADER_RECEIVED_AT: &str = "received_at";

/// What the drain and the producer share: the broker list and client basics.
pub fn client_config(config: &KafkaSettings) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", config.brokers.join(","))
        .set("client.id", "tidegate")
        .set("log_level", "4");
    client
}

/// Creates the overflow topic unless it exists. Brokers such as tansu do not create topics
/// on first use, and a producer writing to a missing topic only fails after its deadline.
pub fn ensure_topic(config: &KafkaSettings) -> Result<bool, OverflowError> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(config)
            .create()
            .map_err(|source| OverflowError::Client {
                what: "admin client",
                source,
            })?;
    let topic = NewTopic::new(
        &config.topic,
        config.partitions,
        TopicReplication::Fixed(config.replication_factor),
    );
    let options = AdminOptions::new()
        .request_timeout(Some(Duration::from_secs(10)))
        .operation_timeout(Some(Duration::from_secs(10)));
    let results =
        futures_lite::future::block_on(admin.create_topics([&topic], &options)).map_err(|e| {
            OverflowError::Topic {
                topic: config.topic.clone(),
                message: e.to_string(),
            }
        })?;
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(true),
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(false),
        Some(Err((_, code))) => Err(OverflowError::Topic {
            topic: config.topic.clone(),
            message: code.to_string(),
        }),
        None => Err(OverflowError::Topic {
            topic: config.topic.clone(),
            message: "the broker returned no result".into(),
        }),
    }
}

/// How much longer than librdkafka's own message timeout a shard waits for a report:
/// librdkafka fails a message it could not deliver in time, and that report should win.
const REPORT_GRACE: Duration = Duration::from_millis(250);

pub struct OverflowProducer {
    producer: FutureProducer,
    topic: String,
    deadline: Duration,
    queue_max_messages: usize,
    pub stats: Arc<OverflowStats>,
}

impl OverflowProducer {
    pub fn connect(
        config: &KafkaSettings,
        stats: Arc<OverflowStats>,
    ) -> Result<OverflowProducer, OverflowError> {
        let producer: FutureProducer = client_config(config)
            .set("acks", "all")
            .set("enable.idempotence", config.idempotence.to_string())
            // librdkafka gives up on (and reports) a message not delivered by the deadline.
            .set("message.timeout.ms", config.ack_deadline_ms.to_string())
            .set(
                "queue.buffering.max.messages",
                config.queue_max_messages.to_string(),
            )
            .set(
                "queue.buffering.max.kbytes",
                config.queue_max_kbytes.to_string(),
            )
            .set("linger.ms", config.linger_ms.to_string())
            .set("compression.type", config.compression.as_str())
            .create()
            .map_err(|source| OverflowError::Client {
                what: "producer",
                source,
            })?;
        stats
            .queue_max_messages
            .store(u64::from(config.queue_max_messages), Relaxed);
        Ok(OverflowProducer {
            producer,
            topic: config.topic.clone(),
            deadline: Duration::from_millis(config.ack_deadline_ms),
            queue_max_messages: config.queue_max_messages as usize,
            stats,
        })
    }

    /// Produces every event and waits for all acknowledgements; `Ok` only if every event
    /// was acknowledged within the deadline, with the time that took. The caller counts
    /// the request as spilled once its whole answer is decided. Must run on a glommio
    /// executor.
    pub async fn send(&self, shard: usize, events: &[Bytes]) -> Result<Duration, SpillFailure> {
        let started = Instant::now();
        let queued = self.producer.in_flight_count().max(0) as usize;
        self.stats.producer_queue.store(queued as u64, Relaxed);
        // Refuse up front rather than half-way: a request that cannot all fit in the queue
        // would leave its first events in the topic while being answered 503.
        if queued + events.len() > self.queue_max_messages {
            return Err(self.fail(SpillFailure::QueueFull));
        }

        let mut pending: Vec<DeliveryFuture> = Vec::with_capacity(events.len());
        let mut shard_text = itoa::Buffer::new();
        let shard_text = shard_text.format(shard).to_owned();
        for event in events {
            let Ok(view) = EventView::decode(event) else {
                // Only tidegate's own encoder produces these bytes; a failure is a bug.
                tracing::error!(shard, "an event in the spill path does not decode");
                self.orphan(pending, 0);
                return Err(self.fail(SpillFailure::Broker));
            };
            let mut id = uuid::Uuid::encode_buffer();
            let mut received_at = itoa::Buffer::new();
            let headers = OwnedHeaders::new_with_capacity(3)
                .insert(Header {
                    key: HEADER_EVENT_ID,
                    value: Some(view.event_id.hyphenated().encode_lower(&mut id).as_bytes()),
                })
                .insert(Header {
                    key: HEADER_SHARD,
                    value: Some(shard_text.as_bytes()),
                })
                .insert(Header {
                    key: HEADER_RECEIVED_AT,
                    value: Some(received_at.format(view.received_at_ms).as_bytes()),
                });
            let record = FutureRecord::to(&self.topic)
                .key(view.user_id.as_bytes())
                .payload(&event[..])
                .headers(headers);
            match self.producer.send_result(record) {
                Ok(report) => pending.push(report),
                Err((err, _)) => {
                    tracing::warn!(shard, error = %err, "cannot enqueue a spilled event");
                    self.orphan(pending, 0);
                    let why = match err {
                        KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => {
                            SpillFailure::QueueFull
                        }
                        _ => SpillFailure::Broker,
                    };
                    return Err(self.fail(why));
                }
            }
        }

        let mut acknowledged = 0;
        let mut error: Option<KafkaError> = None;
        let all_reported = futures_lite::future::or(
            async {
                while acknowledged < pending.len() {
                    match (&mut pending[acknowledged]).await {
                        Ok(Ok(_)) => acknowledged += 1,
                        Ok(Err((err, _))) => {
                            error = Some(err);
                            return true;
                        }
                        Err(_) => {
                            // The producer dropped the report: treat it as lost in time.
                            error = Some(KafkaError::MessageProduction(
                                RDKafkaErrorCode::MessageTimedOut,
                            ));
                            return true;
                        }
                    }
                }
                true
            },
            async {
                glommio::timer::Timer::new(self.deadline + REPORT_GRACE).await;
                false
            },
        )
        .await;

        if acknowledged == pending.len() {
            return Ok(started.elapsed());
        }
        // Whichever event failed is reported; the rest may still be acknowledged (orphans).
        let why = match &error {
            // librdkafka gave up at message.timeout.ms, which is the deadline.
            None | Some(KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut)) => {
                SpillFailure::Deadline
            }
            Some(err) => {
                tracing::warn!(shard, error = %err, "spill refused by the broker");
                SpillFailure::Broker
            }
        };
        let failed_at = acknowledged + usize::from(all_reported);
        let rest = pending.split_off(failed_at.min(pending.len()));
        self.orphan(rest, acknowledged);
        Err(self.fail(why))
    }

    fn fail(&self, why: SpillFailure) -> SpillFailure {
        self.stats.failed(why);
        why
    }

    /// Counts the events of a refused request that the broker has or will have anyway:
    /// `already` acknowledged, plus whichever of `reports` still succeed.
    pub fn orphan(&self, reports: Vec<DeliveryFuture>, already: usize) {
        self.stats
            .events_orphaned
            .fetch_add(already as u64, Relaxed);
        if reports.is_empty() {
            return;
        }
        let stats = self.stats.clone();
        glommio::spawn_local(async move {
            for report in reports {
                if let Ok(Ok(_)) = report.await {
                    stats.events_orphaned.fetch_add(1, Relaxed);
                }
            }
        })
        .detach();
    }

    /// Waits up to `timeout` for queued events to be delivered (at shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(err) = self.producer.flush(timeout) {
            tracing::warn!(error = %err, "the Kafka producer did not flush before shutdown");
        }
    }
}
