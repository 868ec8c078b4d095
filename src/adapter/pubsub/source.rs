//! Pub/Sub source: streaming pull from a subscription.
//!
//! A reader task takes messages from the stream (flow control: at most `max_in_flight`
//! outstanding) and hands them to the router. The client library extends each message's
//! lease while it is unsettled (up to an hour), so slow sinks do not cause redeliveries.
//! Ack acknowledges; retry and reject nack, so the message is delivered again at once; on
//! a subscription with a dead-letter policy, Pub/Sub moves it to the dead-letter topic
//! after `max_delivery_attempts`. The delivery attempt is in the origin (only with a
//! dead-letter policy). With ordering enabled on the subscription, messages of one
//! ordering key arrive in order; the ordering key is the message key, so `ordering: key`
//! keeps them in order through bridge while other keys run in parallel. A stream that
//! fails with a transient error is opened again with backoff.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use google_cloud_pubsub::client::Subscriber;
use google_cloud_pubsub::subscriber::handler::Handler;
use google_cloud_pubsub::subscriber::{MessageStream, ShutdownToken};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::client::classify;
use super::mapping;
use crate::ack::{AckHandle, Outcome};
use crate::adapter::{AdapterError, Delivery, ErrorClass, Source};
use crate::message::{Origin, OriginValue};

/// What an acknowledgement does to the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// Ack acknowledges, retry and reject nack (routes, tails of a temporary subscription).
    Settle,
    /// Nothing is settled while reading: messages stay leased and are all nacked back
    /// together when the source closes (peeking a subscription that others consume).
    Peek,
}

/// What to read.
pub struct StreamSpec {
    pub subscriber: Subscriber,
    pub subscription: String,
    pub endpoint: String,
    pub lease: Duration,
    pub outstanding: usize,
    pub mode: AckMode,
}

impl StreamSpec {
    fn open(&self) -> MessageStream {
        self.subscriber
            .subscribe(&self.subscription)
            .set_max_lease_extension(self.lease)
            // Keep extending for as long as bridge holds a message (the library stops
            // after an hour by default, and the message would go to another consumer).
            .set_max_lease(Duration::from_secs(12 * 3600))
            .set_max_outstanding_messages(i64::try_from(self.outstanding).unwrap_or(i64::MAX))
            .build()
    }
}

struct Shared {
    /// Why the reader gave up, once it has.
    failure: Mutex<Option<String>>,
    /// The current stream's shutdown token.
    shutdown: Mutex<Option<ShutdownToken>>,
    /// Handlers held back by a peek, nacked on close.
    peeked: Mutex<Vec<Handler>>,
}

pub struct PubSubSource {
    deliveries: mpsc::Receiver<Delivery>,
    stop: CancellationToken,
    reader: JoinHandle<()>,
    shared: Arc<Shared>,
}

impl PubSubSource {
    pub fn start(spec: StreamSpec, buffer: usize) -> PubSubSource {
        let (deliveries_tx, deliveries) = mpsc::channel(buffer.max(1));
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            failure: Mutex::new(None),
            shutdown: Mutex::new(None),
            peeked: Mutex::new(Vec::new()),
        });
        let reader = tokio::spawn(read(spec, deliveries_tx, stop.clone(), shared.clone()));
        PubSubSource {
            deliveries,
            stop,
            reader,
            shared,
        }
    }
}

fn delivery(
    raw: google_cloud_pubsub::model::Message,
    handler: Handler,
    spec: &StreamSpec,
    shared: &Arc<Shared>,
) -> Delivery {
    let publish_time = raw
        .publish_time
        .and_then(|t| std::time::SystemTime::try_from(t).ok());
    let message = mapping::decode(
        raw.data.clone(),
        &raw.attributes,
        &raw.ordering_key,
        publish_time,
    );
    let mut fields = vec![("subscription", OriginValue::text(&spec.subscription))];
    if !raw.ordering_key.is_empty() {
        fields.push(("ordering_key", OriginValue::text(&raw.ordering_key)));
    }
    if let Some(ms) = publish_time
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_millis()).ok())
    {
        fields.push(("publish_time", OriginValue::Int(ms)));
    }
    let origin = Origin {
        endpoint: spec.endpoint.clone(),
        receive_count: handler
            .delivery_attempt()
            .and_then(|n| u32::try_from(n).ok()),
        broker_message_id: Some(raw.message_id.clone()),
        fields,
        ..Origin::default()
    };
    let ack = match spec.mode {
        AckMode::Settle => AckHandle::new(move |outcome| match outcome {
            Outcome::Ack => handler.ack(),
            Outcome::Retry(_) | Outcome::Reject(_) => handler.nack(),
        }),
        AckMode::Peek => {
            let shared = shared.clone();
            AckHandle::new(move |_| shared.peeked.lock().expect("peek lock").push(handler))
        }
    };
    Delivery {
        message: message.with_origin(origin),
        ack,
    }
}

async fn read(
    spec: StreamSpec,
    deliveries: mpsc::Sender<Delivery>,
    stop: CancellationToken,
    shared: Arc<Shared>,
) {
    let mut wait = Duration::from_millis(200);
    loop {
        let mut stream = spec.open();
        *shared.shutdown.lock().expect("shutdown lock") = Some(stream.shutdown_token());
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                next = stream.next() => next,
            };
            let (raw, handler) = match next {
                Some(Ok(received)) => received,
                Some(Err(error)) if classify(&error) != ErrorClass::Permanent => {
                    tracing::warn!(%error, endpoint = %spec.endpoint, retry_in = ?wait, "Pub/Sub stream failed; opening it again");
                    break;
                }
                Some(Err(error)) => {
                    tracing::error!(%error, endpoint = %spec.endpoint, "Pub/Sub stream failed");
                    *shared.failure.lock().expect("failure lock") = Some(format!(
                        "Pub/Sub stream for {} failed: {error}",
                        spec.endpoint
                    ));
                    return;
                }
                None => break,
            };
            wait = Duration::from_millis(200);
            let delivery = delivery(raw, handler, &spec, &shared);
            tokio::select! {
                _ = stop.cancelled() => return,
                sent = deliveries.send(delivery) => if sent.is_err() { return },
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(10));
    }
}

#[async_trait]
impl Source for PubSubSource {
    async fn recv(&mut self) -> Result<Option<Delivery>, AdapterError> {
        match self.deliveries.recv().await {
            Some(delivery) => Ok(Some(delivery)),
            None => Err(
                match self.shared.failure.lock().expect("failure lock").clone() {
                    Some(reason) => AdapterError::Invalid(reason),
                    None => AdapterError::Unavailable("the Pub/Sub reader stopped".into()),
                },
            ),
        }
    }

    async fn close(self: Box<Self>) {
        let PubSubSource {
            mut deliveries,
            stop,
            reader,
            shared,
        } = *self;
        stop.cancel();
        let _ = reader.await;
        // Messages read ahead but never handed out, and peeked ones, go back at once.
        while let Ok(delivery) = deliveries.try_recv() {
            delivery.ack.retry("source closed");
        }
        drop(deliveries);
        let peeked = std::mem::take(&mut *shared.peeked.lock().expect("peek lock"));
        for handler in peeked {
            handler.nack();
        }
        let token = shared.shutdown.lock().expect("shutdown lock").take();
        if let Some(token) = token
            && tokio::time::timeout(Duration::from_secs(10), token.shutdown())
                .await
                .is_err()
        {
            tracing::warn!(
                "Pub/Sub acknowledgements did not finish within 10 s; the messages will be redelivered"
            );
        }
    }
}
