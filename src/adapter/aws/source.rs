//! SQS source (and SNS source, which reads an SQS queue subscribed to the topic).
//!
//! A poller long-polls ReceiveMessage (10 at a time) while the router has room. Every
//! received message is tracked until it is settled; an extender task pushes back the
//! visibility timeout of messages still in flight, so a slow fan-out never makes SQS hand
//! the message to another consumer. A settler task turns outcomes into calls: ack deletes
//! (DeleteMessageBatch, 10 at a time), retry makes the message visible again after a
//! backoff that grows with its receive count (1 s, 2 s, 4 s ... at most 5 minutes), reject
//! makes it visible at once so the queue's redrive policy counts it and moves it to the
//! queue's dead-letter queue after `maxReceiveCount` receives. The receive count is in the
//! origin. FIFO queues deliver one message group in order; the group id becomes the key,
//! so `ordering: key` keeps it in order while other groups run in parallel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageSystemAttributeName, QueueAttributeName,
};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::{AwsClients, classify};
use super::mapping::{self, Attribute};
use crate::ack::{AckHandle, Outcome};
use crate::adapter::ErrorClass;
use crate::adapter::{AdapterError, Backlog, Delivery, Source};
use crate::message::{Message, Origin, OriginValue};

const MAX_RETRY_DELAY_SECONDS: i32 = 300;
/// Consecutive permanent receive errors (queue deleted, access lost) before the source fails.
const MAX_REFUSALS: u32 = 5;

/// The `sns_topic` of a reader that unwraps notifications from any topic.
pub const ANY_TOPIC: &str = "*";

/// The longest long poll that a stopping source lets finish.
const SHORT_POLL_SECONDS: i32 = 2;

/// What to read and how.
#[derive(Clone)]
pub struct ReadSpec {
    pub queue_url: String,
    pub endpoint: String,
    /// SNS sources: unwrap notifications from this topic's ARN suffix (`:NAME`), or from
    /// any topic with [`ANY_TOPIC`] (readers of dead letters that a topic delivered).
    pub sns_topic: Option<String>,
    pub wait_seconds: i32,
    /// The queue's visibility timeout.
    pub visibility: Duration,
    /// Most messages held unsettled by the router.
    pub buffer: usize,
    /// Receive with this visibility and never delete or extend (tail with --disturb).
    pub peek: Option<Duration>,
    /// A retry makes the message visible at once instead of after a backoff that grows
    /// with its receive count, and closing waits up to a minute (not 10 s) for the
    /// settlements: `bridge dlq redrive` giving back the hundreds it left alone.
    pub retry_at_once: bool,
}

struct InFlight {
    receipt: String,
    extended_at: Instant,
}

enum Settle {
    Delete(u64),
    Visible(u64, i32),
    /// The source is closing: everything after this is ignored.
    Close,
}

struct Shared {
    /// Why the poller gave up, once it has.
    failure: Mutex<Option<String>>,
    clients: Arc<AwsClients>,
    spec: ReadSpec,
    in_flight: Mutex<HashMap<u64, InFlight>>,
    settle: mpsc::UnboundedSender<Settle>,
}

/// A running SQS reader.
pub struct SqsSource {
    deliveries: mpsc::Receiver<Delivery>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    settler: JoinHandle<()>,
}

impl SqsSource {
    pub fn start(clients: Arc<AwsClients>, spec: ReadSpec) -> SqsSource {
        let (deliveries_tx, deliveries) = mpsc::channel(spec.buffer.max(10));
        let (settle, settle_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            failure: Mutex::new(None),
            clients,
            spec,
            in_flight: Mutex::new(HashMap::new()),
            settle,
        });
        let stop = CancellationToken::new();
        let mut tasks = vec![tokio::spawn(poll(
            shared.clone(),
            deliveries_tx,
            stop.clone(),
        ))];
        tasks.push(tokio::spawn(extend(shared.clone(), stop.clone())));
        let settler = tokio::spawn(settle_outcomes(shared.clone(), settle_rx));
        SqsSource {
            deliveries,
            shared,
            stop,
            tasks,
            settler,
        }
    }
}

fn system_attribute(
    message: &aws_sdk_sqs::types::Message,
    name: MessageSystemAttributeName,
) -> Option<&str> {
    message
        .attributes()
        .and_then(|a| a.get(&name))
        .map(String::as_str)
}

/// Unwraps an SNS notification from `topic`; `None` when the body is not one (raw delivery).
/// What an SNS notification to an SQS queue carries.
struct Notification {
    /// The published body.
    message: String,
    attributes: Vec<(String, Attribute)>,
    /// The `Subject` it was published with.
    subject: Option<String>,
    /// The topic's name: its ARN's last part.
    topic: String,
}

/// The published body and attributes of a notification of `topic`.
#[cfg(test)]
fn unwrap_notification(body: &str, topic: &str) -> Option<(String, Vec<(String, Attribute)>)> {
    read_notification(body, topic).map(|n| (n.message, n.attributes))
}

fn read_notification(body: &str, topic: &str) -> Option<Notification> {
    let json: serde_json::Value = serde_json::from_str(body).ok()?;
    let arn = json.get("TopicArn")?.as_str()?;
    let is_ours = json.get("Type")?.as_str()? == "Notification"
        && (topic == ANY_TOPIC || arn.ends_with(&format!(":{topic}")));
    if !is_ours {
        return None;
    }
    let topic = arn.rsplit(':').next().unwrap_or(arn).to_owned();
    let message = json.get("Message")?.as_str()?.to_owned();
    let mut attributes = Vec::new();
    if let Some(map) = json.get("MessageAttributes").and_then(|m| m.as_object()) {
        for (name, value) in map {
            let kind = value
                .get("Type")
                .and_then(|t| t.as_str())
                .unwrap_or("String");
            let text = value
                .get("Value")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned();
            let attribute = match kind {
                "Binary" => {
                    use base64::Engine;
                    match base64::engine::general_purpose::STANDARD.decode(&text) {
                        Ok(bytes) => Attribute::Binary(Bytes::from(bytes)),
                        Err(_) => Attribute::String(text),
                    }
                }
                "Number" => Attribute::Number(text),
                _ => Attribute::String(text),
            };
            attributes.push((name.clone(), attribute));
        }
    }
    let subject = json
        .get("Subject")
        .and_then(|s| s.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    Some(Notification {
        message,
        attributes,
        subject,
        topic,
    })
}

/// The envelope of a received SQS message.
fn to_message(raw: &aws_sdk_sqs::types::Message, spec: &ReadSpec) -> Message {
    let body = raw.body().unwrap_or_default();
    let native: Vec<(String, Attribute)> = raw
        .message_attributes()
        .map(|attributes| {
            attributes
                .iter()
                .map(|(name, value)| {
                    let attribute = match (value.data_type(), value.binary_value()) {
                        (kind, Some(blob)) if kind.starts_with("Binary") => {
                            Attribute::Binary(Bytes::copy_from_slice(blob.as_ref()))
                        }
                        (kind, _) if kind.starts_with("Number") => {
                            Attribute::Number(value.string_value().unwrap_or_default().to_owned())
                        }
                        _ => Attribute::String(value.string_value().unwrap_or_default().to_owned()),
                    };
                    (name.clone(), attribute)
                })
                .collect()
        })
        .unwrap_or_default();
    let unwrapped = spec
        .sns_topic
        .as_deref()
        .and_then(|topic| read_notification(body, topic));
    let group = system_attribute(raw, MessageSystemAttributeName::MessageGroupId);
    let mut fields = vec![("queue", OriginValue::text(queue_name(&spec.queue_url)))];
    let mut message = match unwrapped {
        Some(notification) => {
            fields.push(("topic", OriginValue::text(&notification.topic)));
            if let Some(subject) = &notification.subject {
                fields.push(("subject", OriginValue::text(subject)));
            }
            mapping::decode(&notification.message, notification.attributes, group)
        }
        None => mapping::decode(body, native, group),
    };
    if message.timestamp.is_none() {
        message.timestamp = system_attribute(raw, MessageSystemAttributeName::SentTimestamp)
            .and_then(|ms| ms.parse::<u64>().ok())
            .map(|ms| std::time::UNIX_EPOCH + Duration::from_millis(ms));
    }
    let receive_count = system_attribute(raw, MessageSystemAttributeName::ApproximateReceiveCount)
        .and_then(|c| c.parse().ok());
    message.with_origin(Origin {
        endpoint: spec.endpoint.clone(),
        receive_count,
        broker_message_id: raw.message_id().map(str::to_owned),
        fields,
        ..Origin::default()
    })
}

/// The queue's name: the last segment of its URL.
fn queue_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

async fn poll(shared: Arc<Shared>, deliveries: mpsc::Sender<Delivery>, stop: CancellationToken) {
    let mut next_id = 0u64;
    let mut failures = 0u32;
    let mut refusals = 0u32;
    let spec = &shared.spec;
    // A short poll (the readers of `tail` and `dlq`) is let finish when the source stops,
    // so that what it received is released at once instead of staying invisible until its
    // visibility timeout runs out; a route's long poll is dropped (those messages come
    // back after the timeout, as after a crash).
    let finish_on_stop = spec.wait_seconds <= SHORT_POLL_SECONDS;
    loop {
        if stop.is_cancelled() {
            return;
        }
        // Receive only when the router can take a full batch, so nothing waits unseen.
        let permits = tokio::select! {
            _ = stop.cancelled() => return,
            permits = deliveries.reserve_many(10) => match permits { Ok(p) => p, Err(_) => return },
        };
        let mut request = shared
            .clients
            .sqs
            .receive_message()
            .queue_url(&spec.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(spec.wait_seconds)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All);
        if let Some(peek) = spec.peek {
            request = request.visibility_timeout(i32::try_from(peek.as_secs()).unwrap_or(60));
        }
        let timeout = Duration::from_secs(spec.wait_seconds as u64)
            + Duration::from_millis(shared.clients.config.timeout_ms);
        // The connection's timeout is for ordinary calls; a long poll may take its wait on top.
        let request = request.customize().config_override(
            aws_sdk_sqs::config::Builder::default().timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_timeout(timeout)
                    .build(),
            ),
        );
        let receiving = tokio::time::timeout(timeout + Duration::from_secs(5), request.send());
        let received = if finish_on_stop {
            receiving.await
        } else {
            tokio::select! {
                _ = stop.cancelled() => return,
                received = receiving => received,
            }
        };
        let output = match received {
            Ok(Ok(output)) => {
                failures = 0;
                refusals = 0;
                output
            }
            Ok(Err(error)) => {
                failures += 1;
                let (class, text) = classify(&error);
                if class == ErrorClass::Permanent {
                    refusals += 1;
                    if refusals >= MAX_REFUSALS {
                        tracing::error!(queue = %spec.queue_url, error = %text, "SQS keeps refusing to receive; stopping the source");
                        *shared.failure.lock().expect("failure lock") = Some(format!(
                            "SQS refuses to receive from {}: {text}",
                            spec.queue_url
                        ));
                        return;
                    }
                }
                if failures == 1 || failures.is_multiple_of(30) {
                    tracing::warn!(queue = %spec.queue_url, error = %text, "SQS receive failed; retrying");
                }
                tokio::time::sleep(Duration::from_millis(200 * u64::from(failures.min(25)))).await;
                continue;
            }
            Err(_) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(30) {
                    tracing::warn!(queue = %spec.queue_url, "SQS receive timed out; retrying");
                }
                continue;
            }
        };
        if output.messages().is_empty() && spec.wait_seconds == 0 {
            // Without long polling an empty queue would be asked again at once.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut permits = permits;
        for raw in output.messages() {
            let Some(receipt) = raw.receipt_handle() else {
                continue;
            };
            let id = next_id;
            next_id += 1;
            let message = to_message(raw, spec);
            shared.in_flight.lock().expect("in-flight lock").insert(
                id,
                InFlight {
                    receipt: receipt.to_owned(),
                    extended_at: Instant::now(),
                },
            );
            let receive_count = message.origin().and_then(|o| o.receive_count).unwrap_or(1);
            let retry_at_once = spec.retry_at_once;
            let ack = if spec.peek.is_some() {
                AckHandle::noop()
            } else {
                let settle = shared.settle.clone();
                AckHandle::new(move |outcome| {
                    let event = match outcome {
                        Outcome::Ack => Settle::Delete(id),
                        Outcome::Retry(_) if retry_at_once => Settle::Visible(id, 0),
                        Outcome::Retry(_) => {
                            let exponent = receive_count.saturating_sub(1).min(9);
                            Settle::Visible(id, (1i32 << exponent).min(MAX_RETRY_DELAY_SECONDS))
                        }
                        Outcome::Reject(_) => Settle::Visible(id, 0),
                    };
                    let _ = settle.send(event);
                })
            };
            match permits.next() {
                Some(permit) => permit.send(Delivery { message, ack }),
                None => unreachable!("SQS returns at most 10 messages and 10 slots were reserved"),
            }
        }
    }
}

/// Pushes back the visibility of messages still in flight, before it runs out.
async fn extend(shared: Arc<Shared>, stop: CancellationToken) {
    let visibility = shared.spec.visibility.max(Duration::from_secs(2));
    let every = visibility / 3;
    let mut ticks = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let due: Vec<(u64, String)> = {
            let mut in_flight = shared.in_flight.lock().expect("in-flight lock");
            let now = Instant::now();
            in_flight
                .iter_mut()
                .filter(|(_, m)| now.duration_since(m.extended_at) >= every)
                .map(|(id, m)| {
                    m.extended_at = now;
                    (*id, m.receipt.clone())
                })
                .collect()
        };
        let seconds = i32::try_from(visibility.as_secs()).unwrap_or(30);
        for chunk in due.chunks(10) {
            change_visibility(&shared, chunk, seconds).await;
        }
    }
}

async fn change_visibility(shared: &Shared, messages: &[(u64, String)], seconds: i32) {
    let mut request = shared
        .clients
        .sqs
        .change_message_visibility_batch()
        .queue_url(&shared.spec.queue_url);
    for (id, receipt) in messages {
        let entry = ChangeMessageVisibilityBatchRequestEntry::builder()
            .id(id.to_string())
            .receipt_handle(receipt)
            .visibility_timeout(seconds)
            .build()
            .expect("id and receipt are set");
        request = request.entries(entry);
    }
    match request.send().await {
        Ok(output) if output.failed().is_empty() => {}
        Ok(output) => {
            tracing::warn!(
                failed = output.failed().len(),
                "SQS refused some visibility changes; those messages may be redelivered"
            )
        }
        Err(error) => {
            tracing::warn!(error = %classify(&error).1, "SQS visibility change failed; the messages may be redelivered")
        }
    }
}

async fn delete(shared: &Shared, messages: &[(u64, String)]) {
    let mut request = shared
        .clients
        .sqs
        .delete_message_batch()
        .queue_url(&shared.spec.queue_url);
    for (id, receipt) in messages {
        let entry = DeleteMessageBatchRequestEntry::builder()
            .id(id.to_string())
            .receipt_handle(receipt)
            .build()
            .expect("id and receipt are set");
        request = request.entries(entry);
    }
    for attempt in 1..=3 {
        match request.clone().send().await {
            Ok(output) if output.failed().is_empty() => return,
            Ok(output) => {
                tracing::warn!(
                    failed = output.failed().len(),
                    "SQS refused some deletes; those messages will be redelivered"
                );
                return;
            }
            Err(error) if attempt < 3 => {
                tracing::debug!(error = %classify(&error).1, "SQS delete failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(error) => {
                tracing::warn!(error = %classify(&error).1, "SQS delete failed; the messages will be redelivered");
            }
        }
    }
}

/// Applies outcomes: deletes in batches of 10, visibility changes for retries and rejects.
/// When the source closes, messages still held (peeked by tail, or never handed out) are
/// made visible again at once.
async fn settle_outcomes(shared: Arc<Shared>, mut outcomes: mpsc::UnboundedReceiver<Settle>) {
    let mut closing = false;
    while !closing {
        let Some(first) = outcomes.recv().await else {
            break;
        };
        let mut events = vec![first];
        while events.len() < 10 {
            match outcomes.try_recv() {
                Ok(event) => events.push(event),
                Err(_) => break,
            }
        }
        let mut deletes = Vec::new();
        let mut visible: HashMap<i32, Vec<(u64, String)>> = HashMap::new();
        {
            let mut in_flight = shared.in_flight.lock().expect("in-flight lock");
            for event in events {
                let (id, delay) = match event {
                    Settle::Delete(id) => (id, None),
                    Settle::Visible(id, seconds) => (id, Some(seconds)),
                    Settle::Close => {
                        closing = true;
                        continue;
                    }
                };
                if let Some(entry) = in_flight.remove(&id) {
                    match delay {
                        None => deletes.push((id, entry.receipt)),
                        Some(seconds) => visible
                            .entry(seconds)
                            .or_default()
                            .push((id, entry.receipt)),
                    }
                }
            }
        }
        if !deletes.is_empty() {
            delete(&shared, &deletes).await;
        }
        for (seconds, messages) in visible {
            change_visibility(&shared, &messages, seconds).await;
        }
    }
    let held: Vec<(u64, String)> = shared
        .in_flight
        .lock()
        .expect("in-flight lock")
        .drain()
        .map(|(id, m)| (id, m.receipt))
        .collect();
    // Four calls at a time: a peek may hold hundreds, and a busy queue answers slowly.
    use futures::StreamExt;
    futures::stream::iter(held.chunks(10))
        .for_each_concurrent(4, |chunk| change_visibility(&shared, chunk, 0))
        .await;
}

/// The queue's approximate visible plus in-flight (not visible) messages.
struct QueueBacklog {
    clients: Arc<AwsClients>,
    queue_url: String,
}

#[async_trait]
impl Backlog for QueueBacklog {
    async fn messages(&self) -> Result<u64, AdapterError> {
        let attributes = self.clients.queue_attributes(&self.queue_url).await?;
        let count = |name: QueueAttributeName| {
            attributes
                .get(&name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(count(QueueAttributeName::ApproximateNumberOfMessages)
            + count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible))
    }
}

#[async_trait]
impl Source for SqsSource {
    fn backlog(&self) -> Option<Arc<dyn Backlog>> {
        Some(Arc::new(QueueBacklog {
            clients: self.shared.clients.clone(),
            queue_url: self.shared.spec.queue_url.clone(),
        }))
    }

    async fn recv(&mut self) -> Result<Option<Delivery>, AdapterError> {
        match self.deliveries.recv().await {
            Some(delivery) => Ok(Some(delivery)),
            None => Err(
                match self.shared.failure.lock().expect("failure lock").clone() {
                    Some(reason) => AdapterError::Invalid(reason),
                    None => AdapterError::Unavailable("the SQS poller stopped".into()),
                },
            ),
        }
    }

    async fn close(self: Box<Self>) {
        let SqsSource {
            mut deliveries,
            shared,
            stop,
            tasks,
            settler,
        } = *self;
        stop.cancel();
        for task in tasks {
            let _ = task.await;
        }
        // Messages received but never handed out are released by the settler on Close.
        while let Ok(delivery) = deliveries.try_recv() {
            delivery.ack.abandon();
        }
        drop(deliveries);
        let _ = shared.settle.send(Settle::Close);
        let patience = if shared.spec.retry_at_once {
            Duration::from_secs(60)
        } else {
            Duration::from_secs(10)
        };
        drop(shared);
        if tokio::time::timeout(patience, settler).await.is_err() {
            tracing::warn!(
                ?patience,
                "SQS deletes and visibility changes did not finish in time; those messages will be received again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_from_the_topic_are_unwrapped_and_others_left_alone() {
        let body = serde_json::json!({
            "Type": "Notification",
            "MessageId": "1",
            "TopicArn": "arn:aws:sns:us-east-1:123:orders",
            "Message": "hello",
            "MessageAttributes": {
                "a": {"Type": "String", "Value": "x"},
                "b": {"Type": "Binary", "Value": "AAE="},
                "n": {"Type": "Number", "Value": "3"},
            },
        })
        .to_string();
        let (message, attributes) = unwrap_notification(&body, "orders").unwrap();
        assert_eq!(message, "hello");
        assert!(attributes.contains(&("b".into(), Attribute::Binary(vec![0u8, 1].into()))));
        assert!(attributes.contains(&("n".into(), Attribute::Number("3".into()))));
        assert!(unwrap_notification(&body, "other").is_none());
        assert!(unwrap_notification("plain text", "orders").is_none());
    }
}

/// Bounded property tests of SNS notification unwrapping: any body is unwrapped or left
/// alone without panicking, and the notification SNS makes of what the SNS sink publishes
/// reads back as the message sent.
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::adapter::aws::mapping::fuzz::{
        as_read_back, becomes_a_field, bounded, message, packed_before_a_namesake,
    };
    use crate::adapter::aws::mapping::{Encoded, Mode};
    use crate::adapter::aws::sink::fifo_ids;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use proptest::prelude::*;
    use proptest::sample::Index;
    use serde_json::{Map, Value, json};

    /// The JSON body SNS delivers to a subscribed queue without raw message delivery.
    fn notification(topic_arn: &str, encoded: &Encoded) -> String {
        let attributes: Map<String, Value> = encoded
            .attributes
            .iter()
            .map(|(name, attribute)| {
                let value = match attribute {
                    Attribute::String(text) | Attribute::Number(text) => text.clone(),
                    Attribute::Binary(bytes) => BASE64.encode(bytes),
                };
                let typed = json!({"Type": attribute.data_type(), "Value": value});
                (name.clone(), typed)
            })
            .collect();
        let mut notification = json!({
            "Type": "Notification",
            "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
            "TopicArn": topic_arn,
            "Message": encoded.body,
            "Timestamp": "2024-02-29T12:00:00.123Z",
            "SignatureVersion": "1",
            "Signature": "EXAMPLE",
            "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService.pem",
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
        });
        // SNS leaves the field out when the message has no attributes.
        if !attributes.is_empty() {
            notification["MessageAttributes"] = Value::Object(attributes);
        }
        notification.to_string()
    }

    /// SNS topic names, standard and FIFO.
    fn topic() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_-]{1,20}(\\.fifo)?"
    }

    fn topic_arn(topic: &str) -> String {
        format!("arn:aws:sns:us-east-1:123456789012:{topic}")
    }

    /// Pieces of notifications, for bodies that are nearly one.
    const JSON_TOKENS: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"Type\"",
        "\"Notification\"",
        "\"TopicArn\"",
        "\"arn:aws:sns:us-east-1:123456789012:orders\"",
        "\"Message\"",
        "\"MessageAttributes\"",
        "\"Value\"",
        "\"String\"",
        "\"Number\"",
        "\"Binary\"",
        "\"AAE=\"",
        "\"x\"",
        "null",
        "1",
        "true",
        "\"\\u0000\"",
        "\"\\ud800\"",
        " ",
    ];

    /// Attribute types SNS writes, custom ones, and none.
    const ATTRIBUTE_TYPES: &[&str] = &[
        "String",
        "Number",
        "Binary",
        "String.Array",
        "Number.float",
        "Binary.jpg",
        "",
    ];

    fn attribute_type() -> impl Strategy<Value = Value> {
        prop::sample::select(ATTRIBUTE_TYPES).prop_map(Value::from)
    }

    fn attribute_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            ".{0,12}".prop_map(Value::from),
            "[A-Za-z0-9+/]{0,8}={0,2}".prop_map(Value::from),
            Just(json!(3)),
            Just(Value::Null),
        ]
    }

    /// An entry of `MessageAttributes`: an object with or without `Type` and `Value`, or
    /// something else.
    fn attribute_entry() -> impl Strategy<Value = Value> {
        let typed = (
            prop::option::of(prop_oneof![4 => attribute_type(), 1 => Just(json!(1))]),
            prop::option::of(attribute_value()),
        )
            .prop_map(|(kind, value)| {
                let mut entry = Map::new();
                if let Some(kind) = kind {
                    entry.insert("Type".to_owned(), kind);
                }
                if let Some(value) = value {
                    entry.insert("Value".to_owned(), value);
                }
                Value::Object(entry)
            });
        prop_oneof![4 => typed, 1 => Just(json!("x")), 1 => Just(Value::Null)]
    }

    /// Objects with each field of a notification of topic `orders` present, absent or of
    /// the wrong kind.
    fn notification_object() -> impl Strategy<Value = Value> {
        let kind = prop_oneof![
            3 => Just(json!("Notification")),
            1 => Just(json!("SubscriptionConfirmation")),
            1 => Just(json!(1)),
        ];
        let arn = prop_oneof![
            3 => Just(json!(topic_arn("orders"))),
            1 => Just(json!(topic_arn("orders-eu"))),
            1 => Just(json!("orders")),
            1 => Just(json!(["x"])),
        ];
        let message = prop_oneof![
            3 => ".{0,16}".prop_map(Value::from),
            1 => Just(json!(7)),
            1 => Just(Value::Null),
        ];
        let attributes = prop_oneof![
            4 => prop::collection::btree_map("[a-z.-]{0,8}", attribute_entry(), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            1 => Just(json!([])),
            1 => Just(Value::Null),
        ];
        (
            prop::option::of(kind),
            prop::option::of(arn),
            prop::option::of(message),
            prop::option::of(attributes),
        )
            .prop_map(|(kind, arn, message, attributes)| {
                let fields = [
                    ("Type", kind),
                    ("TopicArn", arn),
                    ("Message", message),
                    ("MessageAttributes", attributes),
                ];
                let object: Map<String, Value> = fields
                    .into_iter()
                    .filter_map(|(name, value)| Some((name.to_owned(), value?)))
                    .collect();
                Value::Object(object)
            })
    }

    /// Any text, notification tokens, notification-like objects, and such objects with a
    /// token inserted somewhere.
    fn body_text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            prop::collection::vec(prop::sample::select(JSON_TOKENS), 0..24)
                .prop_map(|tokens| tokens.concat()),
            notification_object().prop_map(|object| object.to_string()),
            (
                notification_object(),
                any::<Index>(),
                prop::sample::select(JSON_TOKENS)
            )
                .prop_map(|(object, at, token)| {
                    let mut text = object.to_string();
                    let boundaries: Vec<usize> = text
                        .char_indices()
                        .map(|(offset, _)| offset)
                        .chain([text.len()])
                        .collect();
                    text.insert_str(boundaries[at.index(boundaries.len())], token);
                    text
                }),
        ]
    }

    proptest! {
        #![proptest_config(bounded(256))]

        /// The notification SNS makes of what an SNS sink publishes unwraps to the
        /// published body and attributes and reads back as the message sent; another
        /// topic's notification is left alone.
        #[test]
        fn notifications_unwrap_to_the_message_the_sns_sink_sent(
            message in message(),
            topic in topic(),
            fifo in any::<bool>(),
        ) {
            let mode = Mode { fifo, sns: true, sns_binary: false };
            prop_assume!(!becomes_a_field(&message, mode) && !packed_before_a_namesake(&message));
            let encoded = mapping::encode(&message, mode);
            let body = notification(&topic_arn(&topic), &encoded);
            let (inner, mut unwrapped) = unwrap_notification(&body, &topic)
                .ok_or_else(|| TestCaseError::fail(format!("not unwrapped: {body}")))?;
            prop_assert_eq!(&inner, &encoded.body);
            let mut sent = encoded.attributes.clone();
            sent.sort_by(|a, b| a.0.cmp(&b.0));
            unwrapped.sort_by(|a, b| a.0.cmp(&b.0));
            prop_assert_eq!(&unwrapped, &sent);
            let group = fifo.then(|| fifo_ids(&message).0);
            let back = mapping::decode(&inner, unwrapped, group.as_deref());
            prop_assert_eq!(as_read_back(&back), as_read_back(&message));
            let other_topic = topic.clone() + "x";
            prop_assert!(unwrap_notification(&body, &other_topic).is_none());
        }

        /// Any body is unwrapped or left alone without panicking, and only a JSON
        /// notification of the topic is unwrapped, to its `Message` and one attribute
        /// for each of its `MessageAttributes`.
        #[test]
        fn only_notifications_of_the_topic_are_unwrapped(body in body_text()) {
            if let Some((message, attributes)) = unwrap_notification(&body, "orders") {
                let json: Value = serde_json::from_str(&body)
                    .map_err(|error| TestCaseError::fail(format!("{error}: {body}")))?;
                prop_assert_eq!(json["Type"].as_str(), Some("Notification"));
                let arn = json["TopicArn"].as_str().unwrap_or_default();
                prop_assert!(arn.ends_with(":orders"), "{arn}");
                prop_assert_eq!(json["Message"].as_str(), Some(message.as_str()));
                let declared = json["MessageAttributes"].as_object().map_or(0, Map::len);
                prop_assert_eq!(attributes.len(), declared);
            }
        }

        /// An unwrapped attribute is read by its declared type: `Number` as a number,
        /// `Binary` as its decoded bytes (text when the base64 is broken), anything else as
        /// text; a missing or non-text value reads as empty.
        #[test]
        fn notification_attributes_are_read_by_their_declared_type(object in notification_object()) {
            let ours = object["Type"].as_str() == Some("Notification")
                && object["TopicArn"].as_str().is_some_and(|arn| arn.ends_with(":orders"))
                && object["Message"].is_string();
            let unwrapped = unwrap_notification(&object.to_string(), "orders");
            prop_assert_eq!(unwrapped.is_some(), ours);
            if let Some((message, attributes)) = unwrapped {
                prop_assert_eq!(Some(message.as_str()), object["Message"].as_str());
                let declared = object["MessageAttributes"].as_object().cloned().unwrap_or_default();
                prop_assert_eq!(attributes.len(), declared.len());
                for (name, attribute) in attributes {
                    let entry = declared
                        .get(&name)
                        .ok_or_else(|| TestCaseError::fail(format!("{name} was not sent")))?;
                    let text = entry["Value"].as_str().unwrap_or_default().to_owned();
                    let expected = match entry["Type"].as_str() {
                        Some("Number") => Attribute::Number(text),
                        Some("Binary") => match BASE64.decode(&text) {
                            Ok(bytes) => Attribute::Binary(bytes.into()),
                            Err(_) => Attribute::String(text),
                        },
                        _ => Attribute::String(text),
                    };
                    prop_assert_eq!(attribute, expected, "{}", name);
                }
            }
        }
    }
}
