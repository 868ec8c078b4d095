//! RabbitMQ publisher: one confirm-mode channel per connection, shared by its sinks.
//!
//! Publishes happen in call order on that channel with `mandatory` set. A send returns once
//! the publish is queued, and is confirmed by the broker's basic.ack; writing and
//! confirming share one `confirm_timeout_ms`. A message returned as unroutable (no queue
//! bound for its routing key) is a permanent error; a basic.nack, a confirm timeout or a
//! lost channel is transient (the channel is reopened on the next send), and a connection
//! that is down or cannot be opened makes the broker unavailable (the router waits for
//! it). A missing exchange or refused access is permanent. At most `max_unconfirmed`
//! publishes wait for confirms at once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Confirmation as AmqpConfirmation};
use tokio::sync::{Mutex, Semaphore};

use super::client::{AmqpClient, is_refusal};
use super::config::Target;
use super::mapping;
use crate::adapter::{AdapterError, Confirmation, Receipt, SendError, Sink};
use crate::message::Message;

/// The shared publishing channel of one connection.
pub struct Publisher {
    client: Arc<AmqpClient>,
    /// The channel in use and its generation (bumped whenever it is replaced).
    channel: Mutex<Option<(u64, Channel)>>,
    generations: std::sync::atomic::AtomicU64,
    window: Arc<Semaphore>,
    confirm_timeout: Duration,
}

impl Publisher {
    pub fn new(client: Arc<AmqpClient>) -> Publisher {
        let config = client.config();
        let window = Arc::new(Semaphore::new(config.max_unconfirmed.max(1)));
        let confirm_timeout = Duration::from_millis(config.confirm_timeout_ms);
        Publisher {
            client,
            channel: Mutex::new(None),
            generations: std::sync::atomic::AtomicU64::new(0),
            window,
            confirm_timeout,
        }
    }

    /// Forgets the channel of `generation` after a failure, so the next send opens a new one.
    async fn discard(&self, generation: u64) {
        let mut current = self.channel.lock().await;
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            current.take();
        }
    }

    async fn open_channel(&self) -> Result<Channel, AdapterError> {
        let channel = self.client.channel().await?;
        self.client
            .bounded(
                "confirm.select",
                channel.confirm_select(ConfirmSelectOptions::default()),
            )
            .await?;
        Ok(channel)
    }
}

fn send_error(what: &str, error: &lapin::Error) -> SendError {
    use lapin::ErrorKind;
    if is_refusal(error) {
        SendError::permanent(format!("RabbitMQ refused {what}: {error}"))
    } else if matches!(
        error.kind(),
        ErrorKind::IOError(_)
            | ErrorKind::InvalidConnectionState(_)
            | ErrorKind::MissingHeartbeatError
    ) {
        SendError::unavailable(format!("{what} failed, the connection is down: {error}"))
    } else {
        SendError::transient(format!("{what} failed: {error}"))
    }
}

pub struct RabbitSink {
    pub publisher: Arc<Publisher>,
    /// Shared with the confirmation, which names it in errors.
    pub target: Arc<Target>,
}

#[async_trait]
impl Sink for RabbitSink {
    async fn send(&self, message: &Message) -> Result<Confirmation, SendError> {
        let publisher = &self.publisher;
        let permit = publisher
            .window
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| SendError::transient("publisher closed"))?;
        mapping::check_short_strings(message).map_err(SendError::permanent)?;
        let properties = mapping::outgoing(message);
        let (exchange, routing_key) = self.target.publish_to();
        let mut current = publisher.channel.lock().await;
        let (generation, channel) = match current.as_ref().filter(|(_, c)| c.status().connected()) {
            Some((generation, channel)) => (*generation, channel.clone()),
            None => {
                let channel = publisher.open_channel().await.map_err(|e| match e {
                    AdapterError::Invalid(m) => SendError::permanent(m),
                    AdapterError::Unavailable(m) => SendError::unavailable(m),
                })?;
                let generation = publisher
                    .generations
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    + 1;
                *current = Some((generation, channel.clone()));
                (generation, channel)
            }
        };
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let (exchange_name, key, body) =
            (exchange.into(), routing_key.into(), message.body.clone());
        let publishing = async move {
            channel
                .basic_publish(exchange_name, key, options, &body, properties)
                .await
        };
        // lapin numbers the publish and queues its frames on the first poll, and resolves
        // the future only once its I/O thread has written them. Polling once under the
        // lock keeps publishes in call order; awaiting the write in the confirmation lets
        // the route go on meanwhile, so the I/O thread writes many publishes per wake-up
        // instead of one round trip between threads per message.
        let mut publishing = Box::pin(publishing);
        let written = futures::poll!(publishing.as_mut());
        drop(current);
        let written = match written {
            std::task::Poll::Ready(Err(error)) => {
                publisher.discard(generation).await;
                return Err(send_error("basic.publish", &error));
            }
            std::task::Poll::Ready(Ok(pending)) => Some(pending),
            std::task::Poll::Pending => None,
        };
        let timeout = publisher.confirm_timeout;
        let publisher = self.publisher.clone();
        // Named in errors only: described when one happens, not for every message.
        let target = self.target.clone();
        Ok(Box::pin(async move {
            // One timer for the write and the broker's confirm together.
            let confirmed = tokio::time::timeout(timeout, async move {
                let pending = match written {
                    Some(pending) => pending,
                    None => publishing.await?,
                };
                pending.await
            })
            .await;
            drop(permit);
            if !matches!(confirmed, Ok(Ok(_))) {
                publisher.discard(generation).await;
            }
            match confirmed {
                Ok(Ok(AmqpConfirmation::Ack(None))) | Ok(Ok(AmqpConfirmation::NotRequested)) => {
                    Ok(Receipt::default())
                }
                Ok(Ok(AmqpConfirmation::Ack(Some(returned)))) => {
                    Err(SendError::permanent(format!(
                        "unroutable: {} has no bound queue ({})",
                        target.described(),
                        returned.reply_text
                    )))
                }
                Ok(Ok(AmqpConfirmation::Nack(_))) => {
                    Err(SendError::transient("RabbitMQ nacked the message"))
                }
                Ok(Err(error)) => Err(send_error(
                    &format!("publishing to {}", target.described()),
                    &error,
                )),
                Err(_) => Err(SendError::transient(format!(
                    "no publisher confirm within {timeout:?}"
                ))),
            }
        }))
    }

    async fn flush(&self) {
        let channel = self.publisher.channel.lock().await.clone();
        if let Some((_, channel)) = channel {
            let _ =
                tokio::time::timeout(Duration::from_secs(30), channel.wait_for_confirms()).await;
        }
    }
}
