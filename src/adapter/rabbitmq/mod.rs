//! RabbitMQ, AMQP 0-9-1 (`type: rabbitmq`), through `lapin`.
//!
//! Endpoints: `NAME:queue/QUEUE` (source; as a sink it publishes through the default
//! exchange) and `NAME:exchange/EXCHANGE/ROUTING_KEY` (sink; tail).
//!
//! - Source ([`source`]): consumes a queue with prefetch; ack = basic.ack, retry =
//!   basic.nack with requeue, reject = basic.nack without requeue (the queue's dead-letter
//!   exchange). Reconnects by itself with backoff.
//! - Sink ([`sink`]): publisher confirms and `mandatory`; unroutable = permanent error.
//! - Tail: an exchange is read through a temporary exclusive queue bound with the routing
//!   key (default `#`); a queue can only be peeked with `--disturb`: messages are read with
//!   basic.get, held unacknowledged and all requeued when tail ends (they come back with
//!   the redelivered flag).
//! - Mapping ([`mapping`]): every AMQP property and header type is kept, reversibly.
//! - Exchanges, queues and bindings listed in `declare` are declared at start-up.

mod client;
mod config;
mod mapping;
mod sink;
mod source;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, ExchangeKind};

use client::AmqpClient;
pub use config::Config;
use config::{SourceOptions, Target};

use super::spec::FieldError;
use super::{AdapterError, Connector, Delivery, Role, Sink, Source, SourceSettings, TailSettings};
use crate::ack::AckHandle;
use crate::address::Endpoint;

/// Whether the URI's credentials end where a URI parser ends its authority: a `/`, `?` or
/// `#` written raw in the password makes the parser take part of it for the host, port or
/// path.
fn credentials_parse_as_written(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return true;
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    !rest[authority_end..].contains('@')
}

pub(super) fn check_config(config: &Config) -> Result<(), FieldError> {
    if !credentials_parse_as_written(config.url.expose()) {
        return Err(FieldError::at(
            "url",
            format!(
                "`{}`: the user name or password holds a `/`, `?` or `#`; percent-encode it (`%2F`, `%3F`, `%23`)",
                config.url.redacted()
            ),
        ));
    }
    let uri = client::parse_uri(config.url.expose()).map_err(|e| FieldError::at("url", e))?;
    if let Some(tls) = &config.tls {
        tls.check().map_err(|e| FieldError::at("tls", e))?;
        if uri.scheme != lapin::uri::AMQPScheme::AMQPS {
            return Err(FieldError::at("url", "`tls` needs an `amqps://` url"));
        }
    }
    Ok(())
}

/// A queue may reject only into a dead-letter exchange bridge knows of: one declared with
/// the queue in `declare`, or one the route vouches for with `broker_dead_letter: true`.
pub(super) fn check_reject(
    config: &Config,
    path: &str,
    options: &serde_json::Value,
) -> Result<(), String> {
    let Ok(Target::Queue(queue)) = Target::parse(path) else {
        return Ok(());
    };
    let vouched = super::spec::parse_strict::<SourceOptions>(options.clone())
        .map(|o| o.broker_dead_letter)
        .unwrap_or(false);
    let declared = config.declare.queues.iter().any(|q| {
        q.name == queue
            && (q.dead_letter_exchange.is_some()
                || q.arguments.contains_key("x-dead-letter-exchange"))
    });
    if vouched || declared {
        Ok(())
    } else {
        Err(format!(
            "queue `{queue}` has no dead-letter exchange that bridge knows of, so RabbitMQ would drop rejected messages; declare the queue with `dead_letter_exchange`, or set `from.options.broker_dead_letter: true` if a policy gives it one"
        ))
    }
}

/// Whether a message published to `sink` can reach a source on `source`: a queue only
/// itself, an exchange any queue (its bindings are the broker's, not the routes file's).
pub(super) fn may_feed(sink: &str, source: &str) -> bool {
    match (Target::parse(sink), Target::parse(source)) {
        (Ok(Target::Queue(sink)), Ok(Target::Queue(source))) => sink == source,
        _ => true,
    }
}

pub(super) fn check_endpoint(
    path: &str,
    role: Role,
    options: &serde_json::Value,
) -> Result<(), String> {
    let target = Target::parse(path)?;
    match role {
        Role::Source => {
            if let Target::Exchange { name, .. } = &target {
                return Err(format!(
                    "a route reads a queue, not exchange `{name}`: bind a queue to the exchange (see `declare`) and read queue/NAME"
                ));
            }
            if !options.is_null() {
                let options = super::spec::parse_strict::<SourceOptions>(options.clone())
                    .map_err(|e| format!("RabbitMQ source options: {e}"))?;
                if options.prefetch == Some(0) {
                    return Err("`prefetch` is at least 1".into());
                }
            }
        }
        Role::Sink if !options.is_null() => return Err("RabbitMQ sinks take no options".into()),
        Role::Sink => {}
    }
    Ok(())
}

/// `amqp://` and `amqps://` URIs for `--url`.
pub(super) fn from_url(url: &str) -> Result<Config, String> {
    let config: Config =
        serde_json::from_value(serde_json::json!({ "url": url })).map_err(|e| e.to_string())?;
    check_config(&config).map_err(|e| e.message)?;
    Ok(config)
}

pub(super) fn describe(config: &Config) -> String {
    // The host of a parsed URI is never the password: a password with a raw `/` or `@`
    // does not parse, and one starting with digits (`u:1234/x@h`) would be read as a port.
    match client::parse_uri(config.url.expose()) {
        Ok(uri) if credentials_parse_as_written(config.url.expose()) => {
            format!("RabbitMQ at {}:{}", uri.authority.host, uri.authority.port)
        }
        _ => format!("RabbitMQ at {}", config.url.redacted()),
    }
}

pub(super) async fn connect(config: &Config) -> Result<Arc<dyn Connector>, AdapterError> {
    let client = Arc::new(AmqpClient::new(config.clone())?);
    // Connecting also declares the configured topology.
    client.channel().await?;
    Ok(Arc::new(RabbitConnector {
        publisher: Arc::new(sink::Publisher::new(client.clone())),
        client,
    }))
}

struct RabbitConnector {
    client: Arc<AmqpClient>,
    publisher: Arc<sink::Publisher>,
}

impl RabbitConnector {
    /// Fails with a clear message when the queue or exchange does not exist.
    async fn require(&self, target: &Target) -> Result<(), AdapterError> {
        let channel = self.client.channel().await?;
        let passive = match target {
            Target::Queue(name) => {
                let options = QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                };
                self.client
                    .bounded(
                        &format!("queue `{name}` does not exist or is not accessible"),
                        channel.queue_declare(name.as_str().into(), options, FieldTable::default()),
                    )
                    .await
                    .map(|_| ())
            }
            Target::Exchange { name, .. } => {
                let options = ExchangeDeclareOptions {
                    passive: true,
                    ..ExchangeDeclareOptions::default()
                };
                self.client
                    .bounded(
                        &format!("exchange `{name}` does not exist or is not accessible"),
                        channel.exchange_declare(
                            name.as_str().into(),
                            ExchangeKind::Topic,
                            options,
                            FieldTable::default(),
                        ),
                    )
                    .await
            }
        };
        let _ = channel.close(200, "checked".into()).await;
        passive
    }
}

#[async_trait]
impl Connector for RabbitConnector {
    async fn open_source(
        &self,
        endpoint: &Endpoint,
        settings: &SourceSettings,
    ) -> Result<Box<dyn Source>, AdapterError> {
        let target = Target::parse(&endpoint.path).map_err(AdapterError::Invalid)?;
        let Target::Queue(queue) = &target else {
            return Err(AdapterError::Invalid(format!("{endpoint} is not a queue")));
        };
        let options: SourceOptions = if settings.options.is_null() {
            SourceOptions::default()
        } else {
            super::spec::parse_strict(settings.options.clone())
                .map_err(|e| AdapterError::Invalid(e.to_string()))?
        };
        self.require(&target).await?;
        let prefetch = options
            .prefetch
            .unwrap_or_else(|| u16::try_from(settings.max_in_flight).unwrap_or(u16::MAX))
            .max(1);
        Ok(Box::new(source::RabbitSource::start(
            self.client.clone(),
            source::ConsumeSpec {
                queue: queue.clone(),
                prefetch,
                endpoint: endpoint.to_string(),
                consumer_tag: format!("bridge-{}-{}", settings.route, std::process::id()),
            },
        )))
    }

    async fn open_sink(&self, endpoint: &Endpoint) -> Result<Arc<dyn Sink>, AdapterError> {
        let target = Target::parse(&endpoint.path).map_err(AdapterError::Invalid)?;
        if let Target::Exchange { .. } = target {
            self.require(&target).await?;
        }
        Ok(Arc::new(sink::RabbitSink {
            publisher: self.publisher.clone(),
            target: Arc::new(target),
        }))
    }

    /// A reply-to is a queue name (the default exchange routes to it; direct reply-to
    /// names too), or `EXCHANGE/ROUTING_KEY`.
    /// A queue name (RabbitMQ's own `:` included) or a direct reply-to address; never
    /// `EXCHANGE/KEY`.
    fn is_plain_reply_address(&self, address: &str) -> bool {
        address.starts_with(config::DIRECT_REPLY_TO)
            || (!address.is_empty() && !address.contains('/'))
    }

    fn reply_path(&self, address: &str) -> Result<String, String> {
        // A direct reply-to address is a queue name even when its token holds a `/`.
        let path = if address.contains('/') && !address.starts_with(config::DIRECT_REPLY_TO) {
            format!("exchange/{address}")
        } else {
            format!("queue/{address}")
        };
        Target::parse(&path).map(|_| path)
    }

    async fn open_tail(
        &self,
        endpoint: &Endpoint,
        settings: &TailSettings,
    ) -> Result<Box<dyn Source>, AdapterError> {
        let target = Target::parse(&endpoint.path).map_err(AdapterError::Invalid)?;
        self.require(&target).await?;
        let channel = self.client.channel().await?;
        match target {
            Target::Exchange { name, routing_key } => {
                let options = QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                };
                let queue = self
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
                self.client
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
                let consumer = self
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
