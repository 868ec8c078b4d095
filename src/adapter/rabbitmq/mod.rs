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
mod tail;

use std::sync::Arc;

use async_trait::async_trait;
use lapin::ExchangeKind;
use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

use client::AmqpClient;
pub use config::Config;
use config::{SourceOptions as RabbitSourceOptions, Target};

use super::{
    Adapter, AdapterError, ConnectContext, Connection, Connector, FieldError, OriginField, Role,
    Sink, Source, SourceOptions, SourceSettings, TailSettings,
};
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

fn check_config(config: &Config) -> Result<(), FieldError> {
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

/// The `rabbitmq` system (`type: rabbitmq`, `--url amqp://...` or `amqps://...`).
pub struct RabbitMq;

impl Adapter for RabbitMq {
    fn type_name(&self) -> &'static str {
        "rabbitmq"
    }

    fn url_schemes(&self) -> &'static [&'static str] {
        &["amqp", "amqps"]
    }

    fn parse(&self, fields: serde_json::Value) -> crate::adapter::contract::Parsed {
        crate::adapter::contract::parse_connection::<Config>(fields)
    }

    fn parse_url(&self, url: &str) -> Result<Arc<dyn Connection>, String> {
        parse_url(url).map(|c| Arc::new(c) as Arc<dyn Connection>)
    }
}

#[async_trait]
impl Connection for Config {
    /// AMQP has no key: only messages bridge wrote carry one (`bridge-key`).
    fn source_has_keys(&self, _path: &str) -> bool {
        false
    }

    fn type_name(&self) -> &'static str {
        "rabbitmq"
    }

    fn check(&self) -> Result<(), FieldError> {
        check_config(self)
    }

    fn check_endpoint(&self, path: &str, role: Role) -> Result<(), String> {
        let target = Target::parse(path)?;
        if let (Role::Source, Target::Exchange { name, .. }) = (role, &target) {
            return Err(format!(
                "a route reads a queue, not exchange `{name}`: bind a queue to the exchange (see `declare`) and read queue/NAME"
            ));
        }
        Ok(())
    }

    fn source_options(
        &self,
        path: &str,
        options: &serde_json::Value,
    ) -> Result<SourceOptions, String> {
        self.check_endpoint(path, Role::Source)?;
        if options.is_null() {
            return Ok(SourceOptions::none());
        }
        let options = crate::strict::parse_strict::<RabbitSourceOptions>(options.clone())
            .map_err(|e| format!("RabbitMQ source options: {e}"))?;
        if options.prefetch == Some(0) {
            return Err("`prefetch` is at least 1".into());
        }
        Ok(SourceOptions::new(options))
    }

    /// A queue may reject only into a dead-letter exchange bridge knows of: one declared
    /// with the queue in `declare`, or one the route vouches for with
    /// `broker_dead_letter: true`.
    fn check_reject_without_dead_letter(
        &self,
        path: &str,
        options: &SourceOptions,
    ) -> Result<(), String> {
        let Ok(Target::Queue(queue)) = Target::parse(path) else {
            return Ok(());
        };
        let vouched = options
            .get::<RabbitSourceOptions>()
            .is_ok_and(|o| o.broker_dead_letter);
        let declared = self.declare.queues.iter().any(|q| {
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

    fn reply_address(&self, path: &str) -> Option<String> {
        path.strip_prefix("queue/").map(str::to_owned)
    }

    fn may_feed(&self, sink: Option<&str>, source: &str) -> bool {
        sink.is_none_or(|sink| may_feed(sink, source))
    }

    /// At least 2 for a redelivered message.
    fn origin_fields(&self) -> &'static [OriginField] {
        &[
            OriginField::ReceiveCount,
            OriginField::Named("exchange"),
            OriginField::Named("routing_key"),
            OriginField::Named("redelivered"),
        ]
    }

    /// RabbitMQ 3's default `max_message_size` (128 MiB).
    fn max_message_bytes(&self) -> usize {
        128 << 20
    }

    fn describe(&self) -> String {
        describe(self)
    }

    async fn connect(&self, _context: &ConnectContext) -> Result<Arc<dyn Connector>, AdapterError> {
        connect(self).await
    }
}

/// Whether a message published to `sink` can reach a source on `source`: a queue only
/// itself, an exchange any queue (its bindings are the broker's, not the routes file's).
fn may_feed(sink: &str, source: &str) -> bool {
    match (Target::parse(sink), Target::parse(source)) {
        (Ok(Target::Queue(sink)), Ok(Target::Queue(source))) => sink == source,
        _ => true,
    }
}

/// `amqp://` and `amqps://` URIs for `--url`.
fn parse_url(url: &str) -> Result<Config, String> {
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

async fn connect(config: &Config) -> Result<Arc<dyn Connector>, AdapterError> {
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
        let options: RabbitSourceOptions = settings.options.get()?;
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
        tail::open(self, endpoint, settings).await
    }
}
