//! JetStream source: a durable pull consumer with explicit acknowledgements.
//!
//! A pull task fetches batches from the consumer and hands messages to the route; the
//! consumer's `max_ack_pending` is the route's window, so the server never has more
//! unacknowledged messages out than the route holds. A settle task sends each outcome:
//! ack = `+ACK`; retry = `-NAK` with a delay that grows with the delivery count (1 s per
//! delivery, at most 30 s); reject = `+TERM` (JetStream keeps no dead letters, so routes
//! from NATS need a `dead_letter`). While bridge holds a message longer than half the ack
//! wait, the settle task sends `+WPI` (in progress) so the server does not deliver it
//! again meanwhile. The client reconnects by itself; a pull that fails is opened again
//! with backoff. The delivery count is the receive count, the stream sequence the offset.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::PullConsumer;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::mapping;
use crate::ack::{AckHandle, Outcome};
use crate::adapter::{AdapterError, Backlog, Delivery, Source};
use crate::message::{Origin, OriginValue};

/// The longest delay of a retry.
const MAX_NAK_DELAY: Duration = Duration::from_secs(30);

/// What to read and how.
pub struct PullSpec {
    pub consumer: PullConsumer,
    pub client: async_nats::Client,
    pub endpoint: String,
    pub window: usize,
    pub ack_wait: Duration,
    /// Acknowledge nothing (tail): outcomes are dropped.
    pub settle: bool,
}

/// A running pull consumer.
pub struct NatsSource {
    deliveries: mpsc::Receiver<Delivery>,
    stop: CancellationToken,
    puller: JoinHandle<()>,
    settler: Option<JoinHandle<()>>,
    pending: Arc<Pending>,
}

impl NatsSource {
    pub fn start(spec: PullSpec) -> NatsSource {
        let (deliveries_tx, deliveries) = mpsc::channel(spec.window.max(1));
        let stop = CancellationToken::new();
        let pending = Arc::new(Pending {
            consumer: spec.consumer.clone(),
        });
        let (settler, settlements) = if spec.settle {
            let (tx, rx) = mpsc::unbounded_channel();
            let task = tokio::spawn(settle(rx, spec.client.clone(), spec.ack_wait));
            (Some(task), Some(tx))
        } else {
            (None, None)
        };
        let puller = tokio::spawn(pull(spec, deliveries_tx, settlements, stop.clone()));
        NatsSource {
            deliveries,
            stop,
            puller,
            settler,
            pending,
        }
    }
}

/// The consumer's `num_pending`: messages in the stream it has not delivered yet.
struct Pending {
    consumer: PullConsumer,
}

#[async_trait::async_trait]
impl Backlog for Pending {
    async fn messages(&self) -> Result<u64, AdapterError> {
        let info = self
            .consumer
            .get_info()
            .await
            .map_err(|e| AdapterError::Unavailable(format!("JetStream consumer info: {e}")))?;
        Ok(info.num_pending)
    }
}

/// What the settle task is told.
enum Settlement {
    /// A message handed to the route, held until its outcome.
    Held(u64, Box<jetstream::Message>),
    /// The outcome of the message with this stream sequence.
    Settled(u64, Outcome),
}

async fn pull(
    spec: PullSpec,
    deliveries: mpsc::Sender<Delivery>,
    settlements: Option<mpsc::UnboundedSender<Settlement>>,
    stop: CancellationToken,
) {
    let mut wait = Duration::from_millis(200);
    let batch = spec.window.clamp(1, 256);
    loop {
        let opened = spec
            .consumer
            .stream()
            .max_messages_per_batch(batch)
            .expires(Duration::from_secs(30))
            .heartbeat(Duration::from_secs(5))
            .messages()
            .await;
        let mut messages = match opened {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, endpoint = %spec.endpoint, retry_in = ?wait, "JetStream pull failed; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                next = messages.next() => next,
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    use jetstream::consumer::pull::MessagesErrorKind;
                    match error.kind() {
                        // The client pulls again after a reconnect by itself.
                        MessagesErrorKind::MissingHeartbeat => {
                            tracing::debug!(endpoint = %spec.endpoint, "JetStream heartbeat missed");
                            continue;
                        }
                        _ => {
                            tracing::warn!(%error, endpoint = %spec.endpoint, "JetStream pull ended; opening it again");
                            break;
                        }
                    }
                }
                None => break,
            };
            wait = Duration::from_millis(200);
            let Some(delivery) = deliver(&spec, message, settlements.as_ref()) else {
                continue;
            };
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

/// Maps one message and gives it an ack handle; `None` for a message without JetStream
/// metadata (nothing to acknowledge, nothing to read).
fn deliver(
    spec: &PullSpec,
    message: jetstream::Message,
    settlements: Option<&mpsc::UnboundedSender<Settlement>>,
) -> Option<Delivery> {
    let info = match message.info() {
        Ok(info) => (
            info.stream_sequence,
            info.delivered,
            std::time::SystemTime::from(info.published),
            OriginValue::text(info.stream),
        ),
        Err(error) => {
            tracing::warn!(%error, endpoint = %spec.endpoint, "a JetStream message without metadata; skipped");
            return None;
        }
    };
    let (sequence, delivered, published, stream) = info;
    let pairs = message
        .headers
        .as_ref()
        .map(mapping::header_pairs)
        .unwrap_or_default();
    let decoded = crate::adapter::map_large(pairs.len(), || {
        mapping::decode(message.payload.clone(), pairs, Some(published))
    });
    let decoded = decoded.with_origin(Origin {
        endpoint: spec.endpoint.clone(),
        offset: i64::try_from(sequence).ok(),
        receive_count: u32::try_from(delivered).ok(),
        fields: vec![
            ("subject", OriginValue::text(message.subject.as_str())),
            ("stream", stream),
        ],
        ..Origin::default()
    });
    let ack = match settlements {
        Some(settlements) => {
            let _ = settlements.send(Settlement::Held(sequence, Box::new(message)));
            let outcomes = settlements.clone();
            AckHandle::new(move |outcome| {
                let _ = outcomes.send(Settlement::Settled(sequence, outcome));
            })
        }
        None => AckHandle::noop(),
    };
    Some(Delivery {
        message: decoded,
        ack,
    })
}

/// How long a retried message waits before the server delivers it again.
fn nak_delay(delivered: i64) -> Duration {
    let seconds = u64::try_from(delivered.max(1)).unwrap_or(1);
    Duration::from_secs(seconds).min(MAX_NAK_DELAY)
}

/// Sends each outcome, in the order given, and in-progress acknowledgements for messages
/// held longer than half the ack wait. Ends when every sender is gone, after flushing.
async fn settle(
    mut settlements: mpsc::UnboundedReceiver<Settlement>,
    client: async_nats::Client,
    ack_wait: Duration,
) {
    let mut held: HashMap<u64, (Box<jetstream::Message>, Instant)> = HashMap::new();
    let mut progress = tokio::time::interval((ack_wait / 3).max(Duration::from_millis(100)));
    progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next = tokio::select! {
            next = settlements.recv() => next,
            _ = progress.tick() => {
                let now = Instant::now();
                for (message, since) in held.values_mut() {
                    if now.duration_since(*since) >= ack_wait / 2 {
                        if let Err(error) = message.ack_with(AckKind::Progress).await {
                            tracing::debug!(%error, "in-progress acknowledgement failed");
                        }
                        *since = now;
                    }
                }
                continue;
            }
        };
        match next {
            Some(Settlement::Held(sequence, message)) => {
                held.insert(sequence, (message, Instant::now()));
            }
            Some(Settlement::Settled(sequence, outcome)) => {
                let Some((message, _)) = held.remove(&sequence) else {
                    continue;
                };
                let kind = match outcome {
                    Outcome::Ack => AckKind::Ack,
                    Outcome::Retry(_) => {
                        let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
                        AckKind::Nak(Some(nak_delay(delivered)))
                    }
                    Outcome::Reject(_) => AckKind::Term,
                };
                if let Err(error) = message.ack_with(kind).await {
                    tracing::debug!(%error, "acknowledgement failed; the server delivers the message again after the ack wait");
                }
            }
            None => break,
        }
    }
    if tokio::time::timeout(Duration::from_secs(10), client.flush())
        .await
        .is_err()
    {
        tracing::warn!(
            "JetStream acknowledgements were not flushed within 10 s; the server will deliver those messages again"
        );
    }
}

#[async_trait::async_trait]
impl Source for NatsSource {
    async fn recv(&mut self) -> Result<Option<Delivery>, AdapterError> {
        match self.deliveries.recv().await {
            Some(delivery) => Ok(Some(delivery)),
            None => Err(AdapterError::Unavailable(
                "the JetStream consumer stopped".into(),
            )),
        }
    }

    fn backlog(&self) -> Option<Arc<dyn Backlog>> {
        Some(self.pending.clone())
    }

    async fn close(self: Box<Self>) {
        let NatsSource {
            mut deliveries,
            stop,
            puller,
            settler,
            pending: _,
        } = *self;
        stop.cancel();
        let _ = puller.await;
        // Messages fetched but never handed out are delivered again after a short delay.
        while let Ok(delivery) = deliveries.try_recv() {
            delivery.ack.retry("source closed");
        }
        drop(deliveries);
        if let Some(settler) = settler
            && tokio::time::timeout(Duration::from_secs(15), settler)
                .await
                .is_err()
        {
            tracing::warn!(
                "JetStream acknowledgements did not finish within 15 s; the server will deliver again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_longer_with_each_delivery_up_to_a_limit() {
        assert_eq!(nak_delay(1), Duration::from_secs(1));
        assert_eq!(nak_delay(3), Duration::from_secs(3));
        assert_eq!(nak_delay(1_000), MAX_NAK_DELAY);
        assert_eq!(nak_delay(0), Duration::from_secs(1));
    }
}
