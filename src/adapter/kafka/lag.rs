//! Consumer-group lag of a Kafka source, as `kafka-consumer-groups --describe` reports it:
//! per partition of the topic, the high watermark minus the group's committed offset.
//!
//! A partition the group has never committed counts from its low watermark when the
//! source starts at the earliest offset, and as 0 when it starts at the latest (nothing
//! there is waiting for this group yet). The probe holds the consumer weakly, so it never
//! delays the consumer's leaving the group on close.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};

use super::source::GroupConsumer;
use crate::adapter::{AdapterError, Backlog};

const TIMEOUT: Duration = Duration::from_secs(10);

pub struct ConsumerLag {
    pub consumer: Weak<GroupConsumer>,
    pub topic: String,
    pub from_earliest: bool,
}

/// The lag of one partition; `committed` is `None` when the group has no offset there.
pub fn partition_lag(low: i64, high: i64, committed: Option<i64>, from_earliest: bool) -> u64 {
    let start = match committed {
        Some(offset) => offset.max(low),
        None if from_earliest => low,
        None => high,
    };
    u64::try_from(high - start).unwrap_or(0)
}

fn measure(consumer: &GroupConsumer, topic: &str, from_earliest: bool) -> Result<u64, String> {
    let metadata = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(|e| format!("metadata of `{topic}`: {e}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut wanted = TopicPartitionList::new();
    for partition in &partitions {
        wanted.add_partition(topic, *partition);
    }
    let committed = consumer
        .committed_offsets(wanted, TIMEOUT)
        .map_err(|e| format!("committed offsets of `{topic}`: {e}"))?;
    let mut lag = 0;
    for partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, TIMEOUT)
            .map_err(|e| format!("watermarks of `{topic}` [{partition}]: {e}"))?;
        let offset = committed
            .find_partition(topic, partition)
            .and_then(|e| match e.offset() {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            });
        lag += partition_lag(low, high, offset, from_earliest);
    }
    Ok(lag)
}

#[async_trait]
impl Backlog for ConsumerLag {
    async fn messages(&self) -> Result<u64, AdapterError> {
        let Some(consumer) = self.consumer.upgrade() else {
            return Err(AdapterError::Unavailable("the consumer is closed".into()));
        };
        let topic = self.topic.clone();
        let from_earliest = self.from_earliest;
        tokio::task::spawn_blocking(move || measure(&consumer, &topic, from_earliest))
            .await
            .map_err(|e| AdapterError::Unavailable(e.to_string()))?
            .map_err(AdapterError::Unavailable)
    }
}

/// Builds the probe for a consumer the source owns.
pub fn probe(consumer: &Arc<GroupConsumer>, topic: &str, from_earliest: bool) -> Arc<dyn Backlog> {
    Arc::new(ConsumerLag {
        consumer: Arc::downgrade(consumer),
        topic: topic.to_owned(),
        from_earliest,
    })
}

#[cfg(test)]
mod tests {
    use super::partition_lag;

    #[test]
    fn lag_counts_from_the_committed_offset() {
        assert_eq!(partition_lag(0, 100, Some(40), true), 60);
        assert_eq!(partition_lag(0, 100, Some(100), false), 0);
    }

    #[test]
    fn a_committed_offset_below_retention_counts_from_the_low_watermark() {
        assert_eq!(partition_lag(50, 100, Some(10), true), 50);
    }

    #[test]
    fn an_uncommitted_partition_depends_on_where_the_source_starts() {
        assert_eq!(partition_lag(5, 100, None, true), 95);
        assert_eq!(partition_lag(5, 100, None, false), 0);
    }
}
