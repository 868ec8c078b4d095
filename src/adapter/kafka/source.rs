//! Kafka consumer-group source.
//!
//! A reader task polls the consumer and hands records to the router through a bounded
//! channel (backpressure: when the router is full, polling waits). Offsets are committed
//! by a committer task every `commit_interval_ms`, only up to the lowest unsettled offset
//! of each partition ([`super::offsets`]); on a rebalance the settled offsets of revoked
//! partitions are committed synchronously before they are given up, and settlements that
//! arrive for them afterwards are ignored (the new owner redelivers them: at-least-once).
//! Retry hands the same record out again from memory, the offset held back meanwhile.
//! Kafka has no reject of its own, so routes from Kafka must have a dead letter; a reject
//! that arrives anyway is logged and treated as a retry.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::{ClientContext, Message as _, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::config::HeaderNames;
use super::mapping;
use super::offsets::{OffsetTracker, TopicPartition};
use crate::ack::{AckHandle, Outcome};
use crate::adapter::{AdapterError, Backlog, Delivery, Source};
use crate::message::Message;

/// Consumer context that keeps the offset tracker in step with rebalances.
pub struct RebalanceContext {
    tracker: Arc<Mutex<OffsetTracker>>,
}

impl ClientContext for RebalanceContext {}

fn partitions_of(list: &TopicPartitionList) -> Vec<TopicPartition> {
    list.elements()
        .iter()
        .map(|e| (e.topic().into(), e.partition()))
        .collect()
}

fn commit_list(commits: &[(TopicPartition, i64)]) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset) in commits {
        let _ = list.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    list
}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let revoked = partitions_of(list);
            let mut tracker = self.tracker.lock().expect("offset tracker lock");
            let commits = tracker.take_commits_for(&revoked);
            if !commits.is_empty()
                && let Err(error) = consumer.commit(&commit_list(&commits), CommitMode::Sync)
            {
                tracing::warn!(%error, "commit before giving up partitions failed; they will be redelivered");
            }
            for partition in &revoked {
                tracker.revoke(partition);
            }
            tracing::info!(partitions = ?revoked, "Kafka partitions revoked");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let assigned = partitions_of(list);
            let mut tracker = self.tracker.lock().expect("offset tracker lock");
            for partition in &assigned {
                tracker.assign(partition.clone());
            }
            tracing::info!(partitions = ?assigned, "Kafka partitions assigned");
        }
    }
}

pub type GroupConsumer = StreamConsumer<RebalanceContext>;

pub fn context(tracker: Arc<Mutex<OffsetTracker>>) -> RebalanceContext {
    RebalanceContext { tracker }
}

/// State shared by the source, its tasks and its ack handles.
struct Shared {
    tracker: Arc<Mutex<OffsetTracker>>,
    retries: mpsc::UnboundedSender<Delivery>,
    /// Settlements since the last commit; past `commit_batch` the committer runs early,
    /// which bounds the records redelivered after a crash.
    settled_since_commit: std::sync::atomic::AtomicUsize,
    commit_batch: usize,
    commit_now: tokio::sync::Notify,
}

/// Where a delivery came from, for settling it.
#[derive(Clone)]
struct Position {
    partition: TopicPartition,
    generation: u64,
    offset: i64,
}

fn delivery(
    shared: Arc<Shared>,
    position: Position,
    message: Message,
    receive_count: u32,
) -> Delivery {
    let kept = message.clone();
    let ack = AckHandle::new(move |outcome: Outcome| match outcome {
        Outcome::Ack => {
            shared.tracker.lock().expect("offset tracker lock").settled(
                &position.partition,
                position.generation,
                position.offset,
            );
            let settled = shared
                .settled_since_commit
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            if settled == shared.commit_batch {
                shared.commit_now.notify_one();
            }
        }
        Outcome::Retry(_) | Outcome::Reject(_) => {
            if let Outcome::Reject(reason) = &outcome {
                tracing::error!(%reason, offset = position.offset, "Kafka has no reject; the record is retried instead");
            }
            let current = shared
                .tracker
                .lock()
                .expect("offset tracker lock")
                .is_current(&position.partition, position.generation);
            if current {
                let again = delivery(shared.clone(), position.clone(), kept, receive_count + 1);
                if let Err(closed) = shared.retries.send(again) {
                    // The source is closed: the offset stays uncommitted and is read again.
                    closed.0.ack.abandon();
                }
            }
        }
    });
    let mut message = message;
    if let Some(origin) = message.origin().cloned() {
        message = message.with_origin(crate::message::Origin {
            receive_count: Some(receive_count),
            ..origin
        });
    }
    Delivery { message, ack }
}

/// A running consumer-group source. After a crash, at most `max_in_flight` (held by the
/// router) + `buffer` (read ahead) + `buffer` (settled since the last commit) records are
/// read again.
pub struct KafkaSource {
    deliveries: mpsc::Receiver<Delivery>,
    retries: mpsc::UnboundedReceiver<Delivery>,
    consumer: Arc<GroupConsumer>,
    tracker: Arc<Mutex<OffsetTracker>>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    backlog: Option<Arc<dyn Backlog>>,
}

impl KafkaSource {
    pub fn consumer(&self) -> &Arc<GroupConsumer> {
        &self.consumer
    }

    pub fn with_backlog(self, backlog: Arc<dyn Backlog>) -> KafkaSource {
        KafkaSource {
            backlog: Some(backlog),
            ..self
        }
    }

    /// Starts reading `consumer` (already subscribed) for `endpoint`.
    pub fn start(
        consumer: GroupConsumer,
        tracker: Arc<Mutex<OffsetTracker>>,
        endpoint: String,
        names: HeaderNames,
        buffer: usize,
        commit_interval: Duration,
    ) -> KafkaSource {
        let consumer = Arc::new(consumer);
        let (deliveries_tx, deliveries) = mpsc::channel(buffer);
        let (retries_tx, retries) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            tracker: tracker.clone(),
            retries: retries_tx,
            settled_since_commit: std::sync::atomic::AtomicUsize::new(0),
            commit_batch: buffer.max(1),
            commit_now: tokio::sync::Notify::new(),
        });
        let stop = CancellationToken::new();
        let reader = tokio::spawn(read(
            consumer.clone(),
            shared.clone(),
            endpoint,
            names,
            deliveries_tx,
            stop.clone(),
        ));
        let committer = tokio::spawn(commit_periodically(
            consumer.clone(),
            shared,
            commit_interval,
            stop.clone(),
        ));
        KafkaSource {
            deliveries,
            retries,
            consumer,
            tracker,
            stop,
            tasks: vec![reader, committer],
            backlog: None,
        }
    }
}

async fn read(
    consumer: Arc<GroupConsumer>,
    shared: Arc<Shared>,
    endpoint: String,
    names: HeaderNames,
    deliveries: mpsc::Sender<Delivery>,
    stop: CancellationToken,
) {
    let mut last_error_log = None::<tokio::time::Instant>;
    // A source reads one topic: its name is allocated once, not for every record.
    let mut topic: Arc<str> = Arc::from("");
    loop {
        let record = tokio::select! {
            _ = stop.cancelled() => return,
            record = consumer.recv() => record,
        };
        let next = match record {
            Ok(record) => {
                if *topic != *record.topic() {
                    topic = record.topic().into();
                }
                let partition = (topic.clone(), record.partition());
                let offset = record.offset();
                let generation = {
                    let mut tracker = shared.tracker.lock().expect("offset tracker lock");
                    let generation = tracker.generation(&partition);
                    tracker.delivered(&partition, offset);
                    generation
                };
                let message = mapping::incoming(&record, &endpoint, &names);
                let position = Position {
                    partition,
                    generation,
                    offset,
                };
                delivery(shared.clone(), position, message, 1)
            }
            Err(error) => {
                if last_error_log.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(%error, endpoint = %endpoint, "Kafka consumer error; librdkafka keeps retrying");
                    last_error_log = Some(tokio::time::Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            sent = deliveries.send(next) => if sent.is_err() { return },
        }
    }
}

fn commit_now(
    consumer: &GroupConsumer,
    tracker: &Mutex<OffsetTracker>,
    mode: CommitMode,
    everything: bool,
) {
    let commits = {
        let mut tracker = tracker.lock().expect("offset tracker lock");
        if everything {
            tracker.all_commits()
        } else {
            tracker.take_commits()
        }
    };
    if commits.is_empty() {
        return;
    }
    if let Err(error) = consumer.commit(&commit_list(&commits), mode) {
        tracing::warn!(%error, "Kafka offset commit failed; it is retried with the next commit");
    }
}

/// Commits every `interval`, or sooner once `commit_batch` deliveries were settled.
async fn commit_periodically(
    consumer: Arc<GroupConsumer>,
    shared: Arc<Shared>,
    interval: Duration,
    stop: CancellationToken,
) {
    // Every tenth tick commits every partition again, so an asynchronous commit that
    // failed is repaired even when its partition has not moved since.
    let mut ticks = tokio::time::interval(interval);
    let mut count = 0u32;
    loop {
        let ticked = tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => true,
            _ = shared.commit_now.notified() => false,
        };
        shared
            .settled_since_commit
            .store(0, std::sync::atomic::Ordering::Relaxed);
        count += u32::from(ticked);
        let everything = ticked && count.is_multiple_of(10);
        commit_now(&consumer, &shared.tracker, CommitMode::Async, everything);
    }
}

#[async_trait]
impl Source for KafkaSource {
    async fn recv(&mut self) -> Result<Option<Delivery>, AdapterError> {
        tokio::select! {
            biased;
            Some(retry) = self.retries.recv() => Ok(Some(retry)),
            next = self.deliveries.recv() => match next {
                Some(delivery) => Ok(Some(delivery)),
                None => Err(AdapterError::Unavailable("the Kafka reader stopped".into())),
            },
        }
    }

    fn backlog(&self) -> Option<Arc<dyn Backlog>> {
        self.backlog.clone()
    }

    async fn close(self: Box<Self>) {
        let KafkaSource {
            consumer,
            tracker,
            stop,
            tasks,
            deliveries,
            retries,
            backlog: _,
        } = *self;
        stop.cancel();
        for task in tasks {
            let _ = task.await;
        }
        // Records read ahead but never handed out stay uncommitted: the next consumer
        // reads them again. (A retry here would only put them back into `retries`.)
        let (mut deliveries, mut retries) = (deliveries, retries);
        while let Ok(delivery) = deliveries.try_recv() {
            delivery.ack.abandon();
        }
        while let Ok(delivery) = retries.try_recv() {
            delivery.ack.abandon();
        }
        let consumer_for_commit = consumer.clone();
        let _ = tokio::task::spawn_blocking(move || {
            commit_now(&consumer_for_commit, &tracker, CommitMode::Sync, true);
            consumer_for_commit.unsubscribe();
        })
        .await;
    }
}
