//! Kafka producer sink: one idempotent producer per connection, shared by every sink on it.
//!
//! A send enqueues the record in librdkafka (waiting while its queue is full: that queue is
//! the in-flight window) and the confirmation is the delivery report. With the idempotent
//! producer, records of one partition are written in enqueue order even when librdkafka
//! retries internally. Errors that will not change on retry (record too large, unknown
//! topic or partition, invalid topic, not authorized) are permanent.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::config::{HeaderNames, TopicPath};
use super::mapping;
use crate::adapter::{Confirmation, Receipt, SendError, Sink};
use crate::message::Message;

/// Whether a producer error can go away by itself.
pub fn classify(error: &KafkaError) -> SendError {
    use RDKafkaErrorCode::*;
    let permanent = matches!(
        error.rdkafka_error_code(),
        Some(
            MessageSizeTooLarge
                | InvalidMessageSize
                | InvalidMessage
                | InvalidRecord
                | UnknownTopicOrPartition
                | UnknownTopic
                | UnknownPartition
                | InvalidTopic
                | TopicAuthorizationFailed
        )
    );
    // librdkafka keeps a record queued while no broker answers, up to
    // `message.timeout.ms`; these say that time ran out, that no broker is reachable, or
    // that the broker failed rather than the record. An unknown server error is the
    // broker's own fault (tansu answers it while its storage is unavailable), so it is
    // waited out like an outage instead of dead-lettering the record.
    let unreachable = matches!(
        error.rdkafka_error_code(),
        Some(
            AllBrokersDown
                | BrokerTransportFailure
                | MessageTimedOut
                | RequestTimedOut
                | Unknown
                | NetworkException
                | LeaderNotAvailable
                | NotLeaderForPartition
                | NotEnoughReplicas
                | NotEnoughReplicasAfterAppend
                | KafkaStorageError
        )
    );
    let message = format!("Kafka refused the record: {error}");
    if permanent {
        SendError::permanent(message)
    } else if unreachable {
        SendError::unavailable(format!("no Kafka broker took the record: {error}"))
    } else {
        SendError::transient(message)
    }
}

pub struct KafkaSink {
    pub producer: Arc<FutureProducer>,
    pub target: TopicPath,
    pub names: HeaderNames,
}

#[async_trait]
impl Sink for KafkaSink {
    async fn send(&self, message: &Message) -> Result<Confirmation, SendError> {
        let outgoing = crate::adapter::map_large(message.headers.len(), || {
            mapping::outgoing(message, &self.names)
        });
        let mut headers = Some(outgoing.headers);
        loop {
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.target.topic)
                .headers(headers.take().expect("headers are put back on retry"));
            if !outgoing.null_value {
                record = record.payload(&message.body[..]);
            }
            if let Some(key) = &message.key {
                record = record.key(&key[..]);
            }
            if let Some(partition) = self.target.partition {
                record = record.partition(partition);
            }
            if let Some(ms) = outgoing.timestamp_ms {
                record = record.timestamp(ms);
            }
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    return Ok(Box::pin(async move {
                        match delivery.await {
                            Ok(Ok(delivered)) => Ok(Receipt {
                                partition: Some(delivered.partition),
                                offset: Some(delivered.offset),
                                ..Receipt::default()
                            }),
                            Ok(Err((error, _))) => Err(classify(&error)),
                            Err(_) => Err(SendError::transient(
                                "the Kafka producer was closed before confirming",
                            )),
                        }
                    }));
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), record)) => {
                    headers = record.headers;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((error, _)) => return Err(classify(&error)),
            }
        }
    }

    async fn flush(&self) {
        let producer = self.producer.clone();
        let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(30))).await;
    }
}
