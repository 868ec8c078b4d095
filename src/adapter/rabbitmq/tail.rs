//! `bridge tail` on RabbitMQ: an exchange is read through a temporary exclusive queue bound
//! with the routing key (default `#`), which disappears with the channel; a queue can only
//! be peeked with `--disturb` (basic.get, held unacknowledged and requeued together when
//! tail ends, so they come back marked redelivered).

use std::time::Duration;

use async_trait::async_trait;
use lapin::Channel;
use lapin::options::{BasicConsumeOptions, BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

use super::config::Target;
use super::{RabbitConnector, mapping};
use crate::ack::AckHandle;
use crate::adapter::{AdapterError, Delivery, Source, TailSettings};
use crate::address::Endpoint;

/// Opens a reader of `endpoint` for `bridge tail`.
pub(super) async fn open(
    connector: &RabbitConnector,
    endpoint: &Endpoint,
    settings: &TailSettings,
) -> Result<Box<dyn Source>, AdapterError> {
    let target = Target::parse(&endpoint.path).map_err(AdapterError::Invalid)?;
    connector.require(&target).await?;
    let channel = connector.client.channel().await?;
    match target {
        Target::Exchange { name, routing_key } => {
            let options = QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            };
            let queue = connector
                .client
                .bounded(
                    "declaring a tail queue",
                    channel.queue_declare("".into(), options, FieldTable::default()),
                )
                .await?;
            let binding = if routing_key.is_empty() {
                "#".to_owned()
            } else {
                routing_key
            };
            connector
                .client
                .bounded(
                    "binding the tail queue",
                    channel.queue_bind(
                        queue.name().clone(),
                        name.as_str().into(),
                        binding.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    ),
                )
                .await?;
            let options = BasicConsumeOptions {
                no_ack: true,
                exclusive: true,
                ..BasicConsumeOptions::default()
            };
            let consumer = connector
                .client
                .bounded(
                    "consuming the tail queue",
                    channel.basic_consume(
                        queue.name().clone(),
                        "bridge-tail".into(),
                        options,
                        FieldTable::default(),
                    ),
                )
                .await?;
            Ok(Box::new(ExchangeTail {
                _channel: channel,
                consumer,
                endpoint: endpoint.to_string(),
            }))
        }
        Target::Queue(queue) => {
            if !settings.disturb {
                return Err(AdapterError::Invalid(format!(
                    "reading queue `{queue}` takes messages from its consumers; tail an exchange instead, or pass --disturb to peek (messages are requeued when tail ends, marked redelivered)"
                )));
            }
            Ok(Box::new(QueuePeek {
                channel,
                queue,
                endpoint: endpoint.to_string(),
            }))
        }
    }
}

/// Reads a temporary queue bound to an exchange; the queue disappears with the channel.
struct ExchangeTail {
    _channel: Channel,
    consumer: lapin::Consumer,
    endpoint: String,
}

#[async_trait]
impl Source for ExchangeTail {
    async fn recv(&mut self) -> Result<Option<Delivery>, AdapterError> {
        use futures::StreamExt;
        match self.consumer.next().await {
            Some(Ok(delivery)) => Ok(Some(Delivery {
                message: mapping::incoming(&delivery, &self.endpoint),
                ack: AckHandle::noop(),
            })),
            Some(Err(error)) => Err(AdapterError::Unavailable(format!(
                "tail consumer failed: {error}"
            ))),
            None => Ok(None),
        }
    }

    async fn close(self: Box<Self>) {}
}

/// Peeks a queue with basic.get, holding messages until the channel closes (requeue).
struct QueuePeek {
    channel: Channel,
    queue: String,
    endpoint: String,
}

#[async_trait]
impl Source for QueuePeek {
    async fn recv(&mut self) -> Result<Option<Delivery>, AdapterError> {
        loop {
            let got = self
                .channel
                .basic_get(
                    self.queue.as_str().into(),
                    BasicGetOptions { no_ack: false },
                )
                .await
                .map_err(|e| AdapterError::Unavailable(format!("basic.get failed: {e}")))?;
            match got {
                Some(message) => {
                    return Ok(Some(Delivery {
                        message: mapping::incoming(&message.delivery, &self.endpoint),
                        ack: AckHandle::noop(),
                    }));
                }
                None => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    async fn close(self: Box<Self>) {
        let _ = self.channel.close(200, "tail done; requeue".into()).await;
    }
}
