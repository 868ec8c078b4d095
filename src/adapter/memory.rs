//! In-process queues for tests and demos (`type: memory`, endpoint `NAME:QUEUE`).
//!
//! All memory connections of one process share a [`MemoryBroker`], which is passed in
//! explicitly (no global state). A queue behaves like a small broker queue: a send is
//! confirmed once the message is stored; ack removes a delivered message; retry puts it back
//! at the head with its receive count raised; reject moves it to the queue's rejected list
//! (its "dead-letter mechanism"). A source on a queue that was [closed](MemoryQueue::close)
//! ends once nothing is ready or in flight. Tests steer sinks with
//! [`MemoryQueue::fail_next`] and [`MemoryQueue::hold`] to reproduce broker failures.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::sync::{Notify, oneshot};

use super::{
    Adapter, AdapterError, Backlog, Confirmation, ConnectContext, Connection, Connector, Delivery,
    OriginField, Receipt, Role, SendError, Sink, Source, SourceOptions, SourceSettings,
    TailSettings,
};
use crate::ack::{AckHandle, Outcome};
use crate::address::Endpoint;
use crate::message::{Message, Origin};

/// The `memory` system (`type: memory`, `--url memory:`).
pub struct Memory;

impl Adapter for Memory {
    fn type_name(&self) -> &'static str {
        "memory"
    }

    fn url_schemes(&self) -> &'static [&'static str] {
        &["memory"]
    }

    fn parse(&self, fields: serde_json::Value) -> super::contract::Parsed {
        super::contract::parse_connection::<Config>(fields)
    }

    fn parse_url(&self, _url: &str) -> Result<Arc<dyn Connection>, String> {
        Ok(Arc::new(Config::default()))
    }
}

/// `type: memory` takes no options.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}

fn check_path(path: &str) -> Result<(), String> {
    if path.contains('/') {
        return Err(format!("memory queue names have no `/`: `{path}`"));
    }
    Ok(())
}

#[async_trait]
impl Connection for Config {
    fn type_name(&self) -> &'static str {
        "memory"
    }

    fn check_endpoint(&self, path: &str, _role: Role) -> Result<(), String> {
        check_path(path)
    }

    fn source_options(
        &self,
        path: &str,
        options: &serde_json::Value,
    ) -> Result<SourceOptions, String> {
        check_path(path)?;
        if !options.is_null() && options.as_object().is_none_or(|o| !o.is_empty()) {
            return Err("memory endpoints take no options".to_owned());
        }
        Ok(SourceOptions::none())
    }

    /// A queue's rejected list takes what a route rejects.
    fn check_reject_without_dead_letter(&self, _: &str, _: &SourceOptions) -> Result<(), String> {
        Ok(())
    }

    fn reply_address(&self, path: &str) -> Option<String> {
        Some(path.to_owned())
    }

    fn may_feed(&self, sink: Option<&str>, source: &str) -> bool {
        sink.is_none_or(|sink| sink == source)
    }

    /// A queue's position and its redeliveries.
    fn origin_fields(&self) -> &'static [OriginField] {
        &[OriginField::Offset, OriginField::ReceiveCount]
    }

    fn max_message_bytes(&self) -> usize {
        16 << 20
    }

    fn describe(&self) -> String {
        "in-process memory queues".to_owned()
    }

    async fn connect(&self, context: &ConnectContext) -> Result<Arc<dyn Connector>, AdapterError> {
        Ok(Arc::new(MemoryConnector {
            broker: context.memory.clone(),
        }))
    }
}

/// The namespace of in-process queues, shared by every memory connection of a process.
#[derive(Debug, Clone, Default)]
pub struct MemoryBroker {
    queues: Arc<Mutex<HashMap<String, Arc<MemoryQueue>>>>,
}

impl MemoryBroker {
    pub fn new() -> Self {
        Self::default()
    }

    /// The queue called `name`, created empty on first use.
    pub fn queue(&self, name: &str) -> Arc<MemoryQueue> {
        let mut queues = self.queues.lock().expect("memory broker lock");
        queues.entry(name.to_owned()).or_default().clone()
    }
}

#[derive(Debug)]
struct Stored {
    message: Message,
    receive_count: u32,
}

/// Decides, per send, whether the send fails (tests only).
type SendHook = Box<dyn Fn(&Message) -> Option<SendError> + Send>;

#[derive(Default)]
struct QueueState {
    ready: VecDeque<Stored>,
    pending: VecDeque<(Message, oneshot::Sender<()>)>,
    in_flight: usize,
    acked: usize,
    retried: usize,
    rejected: Vec<(Message, String)>,
    closed: bool,
    held: bool,
    fail_plan: VecDeque<SendError>,
    send_hook: Option<SendHook>,
    next_offset: i64,
}

impl std::fmt::Debug for QueueState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueState")
            .field("ready", &self.ready.len())
            .field("in_flight", &self.in_flight)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// One in-process queue.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    state: Mutex<QueueState>,
    changed: Notify,
}

impl MemoryQueue {
    fn state(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().expect("memory queue lock")
    }

    /// Stores a message as if a producer had published it.
    pub fn push(&self, message: Message) {
        let mut state = self.state();
        state.ready.push_back(Stored {
            message,
            receive_count: 0,
        });
        drop(state);
        self.changed.notify_waiters();
    }

    /// No more messages will be pushed: sources end once the queue is drained and settled.
    pub fn close(&self) {
        self.state().closed = true;
        self.changed.notify_waiters();
    }

    /// Messages stored and not yet delivered, oldest first.
    pub fn messages(&self) -> Vec<Message> {
        self.state()
            .ready
            .iter()
            .map(|s| s.message.clone())
            .collect()
    }

    /// Number of stored, undelivered messages.
    pub fn len(&self) -> usize {
        self.state().ready.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Deliveries handed out and not settled yet.
    pub fn in_flight(&self) -> usize {
        self.state().in_flight
    }

    /// How many deliveries were acknowledged.
    pub fn acked(&self) -> usize {
        self.state().acked
    }

    /// How many deliveries were given back for redelivery.
    pub fn retried(&self) -> usize {
        self.state().retried
    }

    /// Deliveries rejected to this queue's own dead-letter list, with the reason.
    pub fn rejected(&self) -> Vec<(Message, String)> {
        self.state().rejected.clone()
    }

    /// Makes the next `errors.len()` sends to this queue fail with these errors, in order.
    pub fn fail_next(&self, errors: impl IntoIterator<Item = SendError>) {
        self.state().fail_plan.extend(errors);
    }

    /// Lets `hook` decide for every later send whether it fails, and how.
    pub fn fail_when(&self, hook: impl Fn(&Message) -> Option<SendError> + Send + 'static) {
        self.state().send_hook = Some(Box::new(hook));
    }

    /// Holds confirmations of sends to this queue until [`release`](Self::release).
    pub fn hold(&self) {
        self.state().held = true;
    }

    /// Stores held sends in the order they were made and confirms them.
    pub fn release(&self) {
        let mut state = self.state();
        state.held = false;
        while let Some((message, confirm)) = state.pending.pop_front() {
            state.ready.push_back(Stored {
                message,
                receive_count: 0,
            });
            let _ = confirm.send(());
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// Sends waiting for a confirmation while held.
    pub fn held(&self) -> usize {
        self.state().pending.len()
    }

    /// Waits until `condition` holds, checking at every change, for at most `timeout`.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        condition: impl Fn(&MemoryQueue) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            if condition(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return condition(self);
            }
        }
    }

    fn settle(&self, stored_message: Message, receive_count: u32, outcome: Outcome) {
        let mut state = self.state();
        state.in_flight -= 1;
        match outcome {
            Outcome::Ack => state.acked += 1,
            Outcome::Retry(_) => {
                state.retried += 1;
                state.ready.push_front(Stored {
                    message: stored_message,
                    receive_count,
                });
            }
            Outcome::Reject(reason) => state.rejected.push((stored_message, reason)),
        }
        drop(state);
        self.changed.notify_waiters();
    }

    fn send(&self, message: &Message) -> Result<oneshot::Receiver<()>, SendError> {
        let mut state = self.state();
        if let Some(error) = state.fail_plan.pop_front() {
            return Err(error);
        }
        if let Some(error) = state.send_hook.as_ref().and_then(|hook| hook(message)) {
            return Err(error);
        }
        let (confirm, confirmed) = oneshot::channel();
        let message = message.without_origin();
        if state.held {
            state.pending.push_back((message, confirm));
        } else {
            state.ready.push_back(Stored {
                message,
                receive_count: 0,
            });
            let _ = confirm.send(());
        }
        drop(state);
        self.changed.notify_waiters();
        Ok(confirmed)
    }

    /// Takes the next ready message; `None` when closed, drained and settled.
    async fn take(self: &Arc<Self>, endpoint: &str) -> Option<Delivery> {
        loop {
            let changed = self.changed.notified();
            {
                let mut state = self.state();
                if let Some(stored) = state.ready.pop_front() {
                    state.in_flight += 1;
                    state.next_offset += 1;
                    let offset = state.next_offset - 1;
                    drop(state);
                    let receive_count = stored.receive_count + 1;
                    let origin = Origin {
                        endpoint: endpoint.to_owned(),
                        offset: Some(offset),
                        receive_count: Some(receive_count),
                        ..Origin::default()
                    };
                    let kept = stored.message.clone();
                    let queue = self.clone();
                    let ack =
                        AckHandle::new(move |outcome| queue.settle(kept, receive_count, outcome));
                    return Some(Delivery {
                        message: stored.message.with_origin(origin),
                        ack,
                    });
                }
                if state.closed && state.in_flight == 0 {
                    return None;
                }
            }
            changed.await;
        }
    }
}

struct MemoryConnector {
    broker: MemoryBroker,
}

#[async_trait]
impl Connector for MemoryConnector {
    async fn open_source(
        &self,
        endpoint: &Endpoint,
        _settings: &SourceSettings,
    ) -> Result<Box<dyn Source>, AdapterError> {
        Ok(Box::new(MemorySource {
            queue: self.broker.queue(&endpoint.path),
            endpoint: endpoint.to_string(),
        }))
    }

    async fn open_sink(&self, endpoint: &Endpoint) -> Result<Arc<dyn Sink>, AdapterError> {
        Ok(Arc::new(MemorySink {
            queue: self.broker.queue(&endpoint.path),
        }))
    }

    fn reply_path(&self, address: &str) -> Result<String, String> {
        check_path(address).map(|()| address.to_owned())
    }

    async fn open_tail(
        &self,
        endpoint: &Endpoint,
        settings: &TailSettings,
    ) -> Result<Box<dyn Source>, AdapterError> {
        if !settings.disturb {
            return Err(AdapterError::Invalid(
                "reading a memory queue takes its messages; pass --disturb to tail it".into(),
            ));
        }
        self.open_source(
            endpoint,
            &SourceSettings {
                route: "tail".into(),
                options: SourceOptions::none(),
                max_in_flight: 1,
                dead_letter: false,
            },
        )
        .await
    }
}

struct MemorySource {
    queue: Arc<MemoryQueue>,
    endpoint: String,
}

#[async_trait]
impl Source for MemorySource {
    async fn recv(&mut self) -> Result<Option<Delivery>, AdapterError> {
        Ok(self.queue.take(&self.endpoint).await)
    }

    async fn close(self: Box<Self>) {}

    fn backlog(&self) -> Option<Arc<dyn Backlog>> {
        Some(self.queue.clone())
    }
}

/// Ready messages, like a RabbitMQ queue's depth.
#[async_trait]
impl Backlog for MemoryQueue {
    async fn messages(&self) -> Result<u64, AdapterError> {
        Ok(self.len() as u64)
    }
}

struct MemorySink {
    queue: Arc<MemoryQueue>,
}

#[async_trait]
impl Sink for MemorySink {
    async fn send(&self, message: &Message) -> Result<Confirmation, SendError> {
        let confirmed = self.queue.send(message);
        Ok(Box::pin(async move {
            match confirmed {
                Ok(confirmed) => confirmed
                    .await
                    .map(|()| Receipt::default())
                    .map_err(|_| SendError::transient("memory queue dropped the message")),
                Err(error) => Err(error),
            }
        }))
    }

    async fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retry_redelivers_at_the_head_with_a_higher_receive_count() {
        let broker = MemoryBroker::new();
        let queue = broker.queue("q");
        queue.push(Message::new("a"));
        queue.push(Message::new("b"));
        let first = queue.take("mem:q").await.unwrap();
        first.ack.retry("again");
        let again = queue.take("mem:q").await.unwrap();
        assert_eq!(again.message.body, "a");
        assert_eq!(again.message.origin().unwrap().receive_count, Some(2));
        again.ack.ack();
        assert_eq!((queue.acked(), queue.retried(), queue.len()), (1, 1, 1));
    }

    use crate::adapter::DeadLetterRead;

    /// The contract's default dead-letter reader: a take removes what it acks and leaves
    /// what it retries; a memory queue cannot be peeked without taking.
    #[tokio::test]
    async fn dead_letters_are_taken_by_default_through_a_source() {
        let broker = MemoryBroker::new();
        let connector = Config {}
            .connect(&ConnectContext {
                memory: broker.clone(),
            })
            .await
            .unwrap();
        let dead = Endpoint {
            connection: "mem".into(),
            path: "dlq".into(),
        };
        broker.queue("dlq").push(Message::new("a"));
        broker.queue("dlq").push(Message::new("b"));
        let peek = connector
            .open_dead_letters(&dead, DeadLetterRead::Peek { disturb: false })
            .await;
        assert!(peek.is_err(), "a memory queue has no peek");
        let mut take = connector
            .open_dead_letters(
                &dead,
                DeadLetterRead::Take {
                    reader: crate::adapter::DEAD_LETTER_READER,
                    window: 64,
                },
            )
            .await
            .unwrap();
        let first = take.recv().await.unwrap().unwrap();
        first.ack.ack();
        let second = take.recv().await.unwrap().unwrap();
        second.ack.retry("later");
        take.close().await;
        let left: Vec<_> = broker
            .queue("dlq")
            .messages()
            .into_iter()
            .map(|m| m.body)
            .collect();
        assert_eq!(left, vec!["b"]);
    }

    #[tokio::test]
    async fn held_sends_are_stored_in_call_order_on_release() {
        let queue = MemoryBroker::new().queue("q");
        queue.hold();
        let first = queue.send(&Message::new("1")).unwrap();
        let second = queue.send(&Message::new("2")).unwrap();
        assert!(queue.is_empty());
        queue.release();
        first.await.unwrap();
        second.await.unwrap();
        let bodies: Vec<_> = queue.messages().into_iter().map(|m| m.body).collect();
        assert_eq!(bodies, vec!["1", "2"]);
    }

    #[tokio::test]
    async fn closed_queue_ends_only_after_in_flight_settles() {
        let queue = MemoryBroker::new().queue("q");
        queue.push(Message::new("a"));
        queue.close();
        let delivery = queue.take("mem:q").await.unwrap();
        delivery.ack.reject("bad");
        assert!(queue.take("mem:q").await.is_none());
        assert_eq!(queue.rejected()[0].1, "bad");
    }
}
