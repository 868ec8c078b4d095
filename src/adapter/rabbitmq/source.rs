//! RabbitMQ queue source: consume with prefetch, settle with basic.ack / basic.nack.
//!
//! A consumer task holds one channel and reconnects with backoff whenever the channel or
//! the connection fails; deliveries still unsettled on a lost channel are redelivered by
//! the broker. Ack sends basic.ack; retry sends basic.nack with requeue (the broker puts
//! the message back at its place in the queue); reject sends basic.nack without requeue,
//! so the queue's dead-letter exchange receives it (or the broker drops it when the queue
//! has none: configure `x-dead-letter-exchange` or a route `dead_letter`). One queue is
//! delivered in order; with several consumers or requeues that order is interleaved.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Acker, Channel};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::client::AmqpClient;
use super::mapping;
use crate::ack::{AckHandle, Outcome};
use crate::adapter::{AdapterError, Backlog, Delivery, Source};

use std::sync::Arc;

/// A running queue consumer.
pub struct RabbitSource {
    deliveries: mpsc::Receiver<Delivery>,
    stop: CancellationToken,
    consumer: JoinHandle<()>,
    acker: JoinHandle<()>,
    depth: Arc<QueueDepth>,
}

/// What to consume and how.
pub struct ConsumeSpec {
    pub queue: String,
    pub prefetch: u16,
    pub endpoint: String,
    pub consumer_tag: String,
}

impl RabbitSource {
    pub fn start(client: Arc<AmqpClient>, spec: ConsumeSpec) -> RabbitSource {
        let depth = Arc::new(QueueDepth {
            client: client.clone(),
            queue: spec.queue.clone(),
        });
        let (deliveries_tx, deliveries) = mpsc::channel(usize::from(spec.prefetch.max(1)));
        let (acks_tx, acks_rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let consumer = tokio::spawn(consume(client, spec, deliveries_tx, acks_tx, stop.clone()));
        let acker = tokio::spawn(settle(acks_rx));
        RabbitSource {
            deliveries,
            stop,
            consumer,
            acker,
            depth,
        }
    }
}

/// The ready messages of the source's queue (`queue.declare` passive, as `rabbitmqctl
/// list_queues messages_ready` reports it); unacknowledged ones held by consumers are not
/// counted (bridge's own are `bridge_messages_in_flight`).
struct QueueDepth {
    client: Arc<AmqpClient>,
    queue: String,
}

#[async_trait::async_trait]
impl Backlog for QueueDepth {
    async fn messages(&self) -> Result<u64, AdapterError> {
        let channel = self.client.channel().await?;
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let declared = self
            .client
            .bounded(
                "counting the queue's messages",
                channel.queue_declare(self.queue.as_str().into(), options, FieldTable::default()),
            )
            .await;
        let _ = channel.close(200, "done".into()).await;
        Ok(u64::from(declared?.message_count()))
    }
}

/// Sends each outcome to the broker, in the order given.
/// Each outcome travels with a handle on its channel: lapin closes a channel when its last
/// handle goes, and an acknowledgement must reach the broker before that.
type Settlement = (Acker, Outcome, Channel);

async fn settle(mut outcomes: mpsc::UnboundedReceiver<Settlement>) {
    while let Some((acker, outcome, channel)) = outcomes.recv().await {
        // The outcome of a delivery from a channel lost since is void (the broker has
        // requeued the delivery); sending it could wait forever and hold up the outcomes
        // of the channel that replaced it.
        if !channel.status().connected() {
            tracing::debug!("a delivery's channel is gone; the broker redelivers it");
            continue;
        }
        let settling = async {
            match outcome {
                Outcome::Ack => acker.ack(BasicAckOptions::default()).await,
                Outcome::Retry(_) => {
                    acker
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..BasicNackOptions::default()
                        })
                        .await
                }
                Outcome::Reject(_) => {
                    acker
                        .nack(BasicNackOptions {
                            requeue: false,
                            ..BasicNackOptions::default()
                        })
                        .await
                }
            }
        };
        match tokio::time::timeout(SETTLE_TIMEOUT, settling).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::debug!(%error, "settling a delivery failed; its channel is gone and the broker redelivers it");
            }
            Err(_) => {
                tracing::warn!(timeout = ?SETTLE_TIMEOUT, "settling a delivery did not finish; the broker redelivers it if its channel is gone");
            }
        }
    }
}

/// How long one acknowledgement may take to be written before the next is sent.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

enum Ended {
    Stopped,
}

async fn consume(
    client: Arc<AmqpClient>,
    spec: ConsumeSpec,
    deliveries: mpsc::Sender<Delivery>,
    acks: mpsc::UnboundedSender<Settlement>,
    stop: CancellationToken,
) {
    let mut wait = Duration::from_millis(200);
    loop {
        match consume_once(&client, &spec, &deliveries, &acks, &stop, &mut wait).await {
            Ok(Ended::Stopped) => return,
            Err(error) => {
                tracing::warn!(%error, queue = %spec.queue, retry_in = ?wait, "RabbitMQ consumer lost; reconnecting");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn consume_once(
    client: &AmqpClient,
    spec: &ConsumeSpec,
    deliveries: &mpsc::Sender<Delivery>,
    acks: &mpsc::UnboundedSender<Settlement>,
    stop: &CancellationToken,
    wait: &mut Duration,
) -> Result<Ended, AdapterError> {
    let channel = client.channel().await?;
    client
        .bounded(
            "basic.qos",
            channel.basic_qos(spec.prefetch, BasicQosOptions::default()),
        )
        .await?;
    let mut consumer = client
        .bounded(
            &format!("consuming queue `{}`", spec.queue),
            channel.basic_consume(
                spec.queue.as_str().into(),
                spec.consumer_tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
    tracing::info!(queue = %spec.queue, prefetch = spec.prefetch, "consuming from RabbitMQ");
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => {
                let cancel = channel.basic_cancel(spec.consumer_tag.as_str().into(), BasicCancelOptions::default());
                let _ = client.bounded("basic.cancel", cancel).await;
                return Ok(Ended::Stopped);
            }
            next = consumer.next() => next,
        };
        let delivery = match next {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => {
                return Err(AdapterError::Unavailable(format!(
                    "consumer failed: {error}"
                )));
            }
            None => {
                return Err(AdapterError::Unavailable(
                    "the broker cancelled the consumer".into(),
                ));
            }
        };
        *wait = Duration::from_millis(200);
        let message = mapping::incoming(&delivery, &spec.endpoint);
        let acker = delivery.acker;
        let outcomes = acks.clone();
        let held_channel = channel.clone();
        let ack = AckHandle::new(move |outcome| {
            let _ = outcomes.send((acker, outcome, held_channel));
        });
        tokio::select! {
            _ = stop.cancelled() => return Ok(Ended::Stopped),
            sent = deliveries.send(Delivery { message, ack }) => if sent.is_err() { return Ok(Ended::Stopped) },
        }
    }
}

#[async_trait::async_trait]
impl Source for RabbitSource {
    async fn recv(&mut self) -> Result<Option<Delivery>, AdapterError> {
        match self.deliveries.recv().await {
            Some(delivery) => Ok(Some(delivery)),
            None => Err(AdapterError::Unavailable(
                "the RabbitMQ consumer stopped".into(),
            )),
        }
    }

    fn backlog(&self) -> Option<Arc<dyn Backlog>> {
        Some(self.depth.clone())
    }

    async fn close(self: Box<Self>) {
        let RabbitSource {
            mut deliveries,
            stop,
            consumer,
            acker,
            depth: _,
        } = *self;
        stop.cancel();
        let _ = consumer.await;
        // Deliveries read ahead but never handed out go back to the queue.
        while let Ok(delivery) = deliveries.try_recv() {
            delivery.ack.retry("source closed");
        }
        drop(deliveries);
        if tokio::time::timeout(Duration::from_secs(10), acker)
            .await
            .is_err()
        {
            tracing::warn!(
                "RabbitMQ acknowledgements did not finish within 10 s; the broker will redeliver"
            );
        }
    }
}
