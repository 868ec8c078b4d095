//! Kafka consumer-group source.
//!
//! A reader task polls the consumer and hands records to the router through a bounded
//! channel (backpressure: when the router is full, polling waits; after ten seconds of
//! that the reader pauses its partitions and polls on, so rebalances are still served).
//! Offsets are committed by a committer task every `commit_interval_ms`, or as soon as
//! an eighth of a window was settled, only up to the lowest unsettled offset of each
//! partition ([`super::offsets`]). Commits are synchronous, one at a time, so the source
//! knows what the broker has. Once two windows (twice `max_in_flight`) of records handed
//! to the router are past the confirmed commit points, the source hands out no more until
//! commits catch up, so a crash makes a sink receive again at most that many records (the
//! duplicates of at-least-once are bounded). Two, because the route's own window is then
//! still free to fill while a commit travels: with one, the route waited for nearly every
//! commit (docs/performance.md). Records waiting in the channel do not count:
//! after a crash they are read again, but no sink had them. On a rebalance the settled
//! offsets of revoked partitions are committed synchronously before they are given up,
//! and settlements that arrive for them afterwards are ignored (the new owner redelivers
//! them: at-least-once). Retry hands the same record out again from memory, the offset
//! held back meanwhile. Kafka has no reject of its own, so routes from Kafka must have a
//! dead letter; a reject that arrives anyway is logged and treated as a retry.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::{ClientContext, Message as _, Offset, TopicPartitionList};
use tokio::sync::{Notify, mpsc};
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
            let commits = tracker.commits_for(&revoked);
            if !commits.is_empty() {
                let commit = || consumer.commit(&commit_list(&commits), CommitMode::Sync);
                match without_holding_up_the_runtime(commit) {
                    Ok(()) => tracker.confirm(&commits),
                    Err(error) => {
                        tracing::warn!(%error, "commit before giving up partitions failed; they will be redelivered")
                    }
                }
            }
            for partition in &revoked {
                tracker.revoke(partition);
            }
            tracing::info!(partitions = ?revoked, "Kafka partitions revoked");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let assigned = partitions_of(list);
            let mut tracker = self.tracker.lock().expect("offset tracker lock");
            // While the reader is paused, a new partition must be paused too. Otherwise a
            // partition paused before it was revoked would stay paused when it comes back.
            // (Resume only after a pause: resuming a partition whose fetch has not started
            // can skip its start offset.)
            let paused_or_resumed = if tracker.paused {
                consumer.pause(list)
            } else if tracker.ever_paused {
                consumer.resume(list)
            } else {
                Ok(())
            };
            if let Err(error) = paused_or_resumed {
                tracing::debug!(%error, "pausing or resuming newly assigned partitions");
            }
            for partition in &assigned {
                tracker.assign(partition.clone());
            }
            tracing::info!(partitions = ?assigned, "Kafka partitions assigned");
        }
    }
}

/// Runs a blocking librdkafka call made from a rebalance callback, which runs inside the
/// reader's poll on a runtime worker: on a multi-threaded runtime the worker's other tasks
/// move elsewhere meanwhile, so a commit that waits for the broker (up to its socket
/// timeout when the network is gone) does not stall every other task with it.
fn without_holding_up_the_runtime<T>(call: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|handle| handle.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(call),
        _ => call(),
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
    /// Settlements since the last commit; past `commit_batch` the committer runs early.
    settled_since_commit: AtomicUsize,
    commit_batch: usize,
    commit_now: Notify,
    /// Handed-out records past the confirmed commit points at which the source hands out
    /// no more: two windows.
    unconfirmed_limit: usize,
    /// Set while `unconfirmed_limit` is reached: then every settlement asks for a commit.
    at_unconfirmed_limit: AtomicBool,
    /// Signalled after each confirmed commit.
    committed: Notify,
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
            let settled = shared.settled_since_commit.fetch_add(1, Ordering::Relaxed) + 1;
            if settled == shared.commit_batch || shared.at_unconfirmed_limit.load(Ordering::Relaxed)
            {
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

/// A running consumer-group source. After a crash, at most twice `window` records (handed
/// out past the last confirmed commit) reach a sink again.
pub struct KafkaSource {
    deliveries: mpsc::Receiver<Read>,
    shared: Arc<Shared>,
    retries: mpsc::UnboundedReceiver<Delivery>,
    consumer: Arc<GroupConsumer>,
    /// Stops the reader and committer, also when the source is dropped without `close`.
    stop: tokio_util::sync::DropGuard,
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

    /// Starts reading `consumer` (already subscribed) for `endpoint`, reading ahead at most
    /// `window` records and handing out at most twice `window` past the confirmed commit
    /// points.
    pub fn start(
        consumer: GroupConsumer,
        tracker: Arc<Mutex<OffsetTracker>>,
        endpoint: String,
        names: HeaderNames,
        window: usize,
        commit_interval: Duration,
    ) -> KafkaSource {
        let window = window.max(1);
        let consumer = Arc::new(consumer);
        let (deliveries_tx, deliveries) = mpsc::channel(window);
        let (retries_tx, retries) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            tracker,
            retries: retries_tx,
            settled_since_commit: AtomicUsize::new(0),
            // A commit starts once an eighth of a window was settled, so that commits run
            // nearly back to back under load. With one window as the bound, half a window
            // measured Kafka -> Kafka at 0.86x of the raw pipe against 1.00x for an eighth
            // (tansu, no hop header, an earlier run); later runs found the cadence to matter
            // little next to the bound (docs/performance.md, late night of 2026-11-27).
            commit_batch: (window / 8).max(1),
            commit_now: Notify::new(),
            // With one window, the route waited for nearly every commit (a commit takes 2.6
            // to 5.6 ms on tansu under load): 0.85x of the raw pipe, 0.87x with 1.25 windows,
            // 1.00x with 1.5 and 1.02x with 2 (Kafka -> Kafka 1 KiB, three rounds each).
            unconfirmed_limit: 2 * window,
            at_unconfirmed_limit: AtomicBool::new(false),
            committed: Notify::new(),
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
            shared.clone(),
            commit_interval,
            stop.clone(),
        ));
        KafkaSource {
            deliveries,
            shared,
            retries,
            consumer,
            stop: stop.drop_guard(),
            tasks: vec![reader, committer],
            backlog: None,
        }
    }
}

/// A record read and mapped, with where it came from.
struct Read {
    position: Position,
    delivery: Delivery,
}

/// How long the reader waits for room in the channel to the router before it pauses its
/// partitions. Not polling delays rebalances (the group waits for every member), and
/// pausing makes librdkafka drop what it fetched ahead, which the broker then serves
/// again. Ten seconds: a saturated broker holds the route's window for seconds at a time,
/// and with one second Kafka -> Kafka 100 B on tansu ran at about half the raw pipe's
/// rate, tansu reading the dropped records twice (docs/performance.md).
const HANDOFF_PATIENCE: Duration = Duration::from_secs(10);

async fn read(
    consumer: Arc<GroupConsumer>,
    shared: Arc<Shared>,
    endpoint: String,
    names: HeaderNames,
    deliveries: mpsc::Sender<Read>,
    stop: CancellationToken,
) {
    let mut last_error_log = None::<tokio::time::Instant>;
    // A source reads one topic: its name is allocated once, not for every record.
    let mut topic: Arc<str> = Arc::from("");
    // Records read but not yet in the channel: one, or more when records arrived while
    // the partitions were being paused.
    let mut held = std::collections::VecDeque::<Read>::new();
    let mut paused = false;
    loop {
        let handing_out = !held.is_empty();
        // select! builds every branch's future, disabled or not, on every turn (once or
        // twice per record); the timers are in async blocks so that they are only set up
        // when a branch is polled.
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            room = deliveries.reserve(), if handing_out => match room {
                Ok(room) => room.send(held.pop_front().expect("a record is held")),
                Err(_) => break,
            },
            _ = async { tokio::time::sleep(HANDOFF_PATIENCE).await }, if handing_out && !paused => {
                paused = pause(&consumer, &shared);
            }
            _ = async { tokio::time::sleep(Duration::from_millis(100)).await }, if paused && !handing_out => {
                paused = !resume(&consumer, &shared);
            }
            // Polling while paused fetches nothing but serves rebalances.
            record = consumer.recv(), if !handing_out || paused => match record {
                Ok(record) => {
                    if *topic != *record.topic() {
                        topic = record.topic().into();
                    }
                    held.push_back(read_one(&record, topic.clone(), &shared, &endpoint, &names));
                }
                Err(error) => {
                    if last_error_log.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(%error, endpoint = %endpoint, "Kafka consumer error; librdkafka keeps retrying");
                        last_error_log = Some(tokio::time::Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    // Never handed out: the offsets stay uncommitted and the next consumer reads them.
    for read in held {
        read.delivery.ack.abandon();
    }
}

/// Maps a record and notes it in the tracker as read.
fn read_one(
    record: &rdkafka::message::BorrowedMessage<'_>,
    topic: Arc<str>,
    shared: &Arc<Shared>,
    endpoint: &str,
    names: &HeaderNames,
) -> Read {
    let partition = (topic, record.partition());
    let offset = record.offset();
    let generation = {
        let mut tracker = shared.tracker.lock().expect("offset tracker lock");
        let generation = tracker.generation(&partition);
        tracker.read(&partition, offset);
        generation
    };
    let headers = record.headers().map_or(0, rdkafka::message::Headers::count);
    let message = crate::adapter::map_large(headers, || mapping::incoming(record, endpoint, names));
    let position = Position {
        partition,
        generation,
        offset,
    };
    Read {
        position: position.clone(),
        delivery: delivery(shared.clone(), position, message, 1),
    }
}

/// Stops fetching every assigned partition, because the router has taken nothing for
/// [`HANDOFF_PATIENCE`]. librdkafka drops what it had fetched ahead and fetches again from
/// the next record on resume. Returns whether the partitions are paused.
fn pause(consumer: &GroupConsumer, shared: &Shared) -> bool {
    // Under the tracker's lock, so that a rebalance sees the assignment and the flag agree.
    let mut tracker = shared.tracker.lock().expect("offset tracker lock");
    let paused = consumer
        .assignment()
        .and_then(|assigned| consumer.pause(&assigned));
    if let Err(error) = paused {
        tracing::warn!(%error, "cannot pause Kafka partitions; reading on");
        return false;
    }
    tracker.paused = true;
    tracker.ever_paused = true;
    true
}

/// Resumes every assigned partition; returns whether it did.
fn resume(consumer: &GroupConsumer, shared: &Shared) -> bool {
    let mut tracker = shared.tracker.lock().expect("offset tracker lock");
    if let Err(error) = consumer
        .assignment()
        .and_then(|assigned| consumer.resume(&assigned))
    {
        tracing::warn!(%error, "cannot resume Kafka partitions; trying again");
        return false;
    }
    tracker.paused = false;
    true
}

/// Returns once fewer than `unconfirmed_limit` handed-out records are past the confirmed
/// commit points, asking for commits meanwhile. A rebalance also makes room, by taking
/// partitions away: hence the tick.
async fn room_in_window(shared: &Shared) {
    loop {
        let unconfirmed = shared
            .tracker
            .lock()
            .expect("offset tracker lock")
            .unconfirmed();
        if unconfirmed < shared.unconfirmed_limit {
            shared.at_unconfirmed_limit.store(false, Ordering::Relaxed);
            return;
        }
        shared.at_unconfirmed_limit.store(true, Ordering::Relaxed);
        shared.commit_now.notify_one();
        tokio::select! {
            _ = shared.committed.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// The next record from the reader, once the window has room for it. A record of a
/// partition taken away since it was read is left unsettled instead: its new owner reads
/// it again, so delivering it here would only make a duplicate.
async fn next_in_window(
    shared: &Shared,
    deliveries: &mut mpsc::Receiver<Read>,
) -> Result<Option<Delivery>, AdapterError> {
    room_in_window(shared).await;
    loop {
        let Some(Read { position, delivery }) = deliveries.recv().await else {
            return Err(AdapterError::Unavailable("the Kafka reader stopped".into()));
        };
        let mut tracker = shared.tracker.lock().expect("offset tracker lock");
        if tracker.is_current(&position.partition, position.generation) {
            tracker.handed_out(&position.partition, position.generation, position.offset);
            return Ok(Some(delivery));
        }
        drop(tracker);
        delivery.ack.abandon();
    }
}

/// Commits `commits` and waits for the broker's answer; true when it accepted them.
async fn commit_sync(consumer: &Arc<GroupConsumer>, commits: &[(TopicPartition, i64)]) -> bool {
    let list = commit_list(commits);
    let consumer = consumer.clone();
    match tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync)).await {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            tracing::warn!(%error, "Kafka offset commit failed; it is retried with the next commit");
            false
        }
        Err(_) => false,
    }
}

/// Commits every `interval`, or sooner once `commit_batch` deliveries were settled or the
/// reader waits for room; one commit at a time, so a later one never overtakes an earlier.
async fn commit_periodically(
    consumer: Arc<GroupConsumer>,
    shared: Arc<Shared>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
            _ = shared.commit_now.notified() => {}
        }
        shared.settled_since_commit.store(0, Ordering::Relaxed);
        let commits = shared
            .tracker
            .lock()
            .expect("offset tracker lock")
            .take_commits();
        if commits.is_empty() {
            continue;
        }
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = commit_sync(&consumer, &commits) => accepted,
        };
        if accepted {
            shared
                .tracker
                .lock()
                .expect("offset tracker lock")
                .confirm(&commits);
            shared.committed.notify_one();
        }
    }
}

#[async_trait]
impl Source for KafkaSource {
    async fn recv(&mut self) -> Result<Option<Delivery>, AdapterError> {
        tokio::select! {
            biased;
            Some(retry) = self.retries.recv() => Ok(Some(retry)),
            next = next_in_window(&self.shared, &mut self.deliveries) => next,
        }
    }

    fn backlog(&self) -> Option<Arc<dyn Backlog>> {
        self.backlog.clone()
    }

    async fn close(self: Box<Self>) {
        let KafkaSource {
            consumer,
            stop,
            tasks,
            deliveries,
            shared,
            retries,
            backlog: _,
        } = *self;
        drop(stop);
        for task in tasks {
            let _ = task.await;
        }
        // Records read ahead but never handed out stay uncommitted: the next consumer
        // reads them again. (A retry here would only put them back into `retries`.)
        let (mut deliveries, mut retries) = (deliveries, retries);
        while let Ok(read) = deliveries.try_recv() {
            read.delivery.ack.abandon();
        }
        while let Ok(delivery) = retries.try_recv() {
            delivery.ack.abandon();
        }
        let commits = shared
            .tracker
            .lock()
            .expect("offset tracker lock")
            .all_commits();
        if !commits.is_empty() {
            commit_sync(&consumer, &commits).await;
        }
        let _ = tokio::task::spawn_blocking(move || consumer.unsubscribe()).await;
    }
}
