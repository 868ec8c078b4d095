//! `bridge tail` on Kafka, and `bridge request`'s reply reader: every partition of the
//! topic (or the one named) assigned from the end, or from the beginning with
//! `--from-beginning`, in a throw-away group that never commits, so no consumer group's
//! offsets or partitions are touched.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

use super::client::{ClientRole, apply_options, base_config, settings_error};
use super::config::{self, TopicPath};
use super::{KafkaConnector, mapping};
use crate::ack::AckHandle;
use crate::adapter::{AdapterError, Delivery, Source, TailSettings};
use crate::address::Endpoint;

/// Opens a reader of `endpoint` that leaves every consumer group alone.
pub(super) async fn open(
    connector: &KafkaConnector,
    endpoint: &Endpoint,
    settings: &TailSettings,
) -> Result<Box<dyn Source>, AdapterError> {
    let target = TopicPath::parse(&endpoint.path).map_err(AdapterError::Invalid)?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut client = base_config(&connector.config);
    client
        .set(
            "group.id",
            format!("bridge-tail-{}-{nanos}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    apply_options(&mut client, &connector.config, ClientRole::Consumer);
    let consumer: StreamConsumer = client.create().map_err(|e| settings_error("consumer", e))?;
    let consumer = Arc::new(consumer);
    let partitions = connector
        .require_topic(consumer.clone(), &target.topic)
        .await?;
    let start = if settings.from_beginning {
        Offset::Beginning
    } else {
        Offset::End
    };
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        if target.partition.is_none_or(|p| p == partition) {
            let _ = assignment.add_partition_offset(&target.topic, partition, start);
        }
    }
    consumer
        .assign(&assignment)
        .map_err(|e| AdapterError::Invalid(format!("cannot read `{}`: {e}", target.topic)))?;
    Ok(Box::new(TailReader {
        consumer,
        endpoint: endpoint.to_string(),
        names: connector.config.header_names.clone(),
    }))
}

/// Reads assigned partitions without a group or commits; acks do nothing.
struct TailReader {
    consumer: Arc<StreamConsumer>,
    endpoint: String,
    names: config::HeaderNames,
}

#[async_trait]
impl Source for TailReader {
    async fn recv(&mut self) -> Result<Option<Delivery>, AdapterError> {
        loop {
            match self.consumer.recv().await {
                Ok(record) => {
                    return Ok(Some(Delivery {
                        message: mapping::incoming(&record, &self.endpoint, &self.names),
                        ack: AckHandle::noop(),
                    }));
                }
                Err(error) => {
                    tracing::warn!(%error, "Kafka read error; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn close(self: Box<Self>) {}
}
