//! Google Cloud Pub/Sub (`type: pubsub`), through Google's official `google-cloud-pubsub`
//! crate (gRPC for publishing and streaming pull, REST for administration).
//!
//! Endpoints: `NAME:topic/TOPIC` (sink; tail) and `NAME:subscription/SUBSCRIPTION`
//! (source). Short ids are in the connection's `project`; full resource names work too.
//!
//! - Source ([`source`]): streaming pull with flow control; ack after the router's ack;
//!   leases extended while in flight; retry and reject nack (reject reaches the
//!   subscription's dead-letter policy after `max_delivery_attempts`; a subscription without
//!   one needs a route `dead_letter`, checked when the route starts).
//! - Sink ([`sink`]): batched publish, attributes, ordering keys; the message id is the
//!   confirmation; limits checked before sending.
//! - Mapping ([`mapping`]): attributes are strings; binary values are base64, listed in
//!   `bridge-binary-headers`.
//! - Tail: a topic is read through a temporary subscription, deleted afterwards; reading a
//!   subscription needs `--disturb` (messages are held while tail runs and nacked back
//!   together when it ends, which counts one delivery attempt each).
//! - Credentials: application default credentials, or none (`credentials: anonymous`,
//!   the default for a plain `http://` endpoint such as the emulator).

mod client;
mod config;
mod mapping;
mod sink;
mod source;
mod tail;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Semaphore;

use client::PubSubClients;
pub use config::Config;
use config::{SourceOptions as PubSubSourceOptions, Target};

use super::{
    Adapter, AdapterError, ConnectContext, Connection, Connector, DeadLetterRead, OriginField,
    Role, Sink, Source, SourceOptions, SourceSettings, TailSettings,
};
use crate::address::Endpoint;

/// The `pubsub` system (`type: pubsub`, `--url pubsub://PROJECT`).
pub struct PubSub;

impl Adapter for PubSub {
    fn type_name(&self) -> &'static str {
        "pubsub"
    }

    fn url_schemes(&self) -> &'static [&'static str] {
        &["pubsub"]
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
    fn type_name(&self) -> &'static str {
        "pubsub"
    }

    fn check_endpoint(&self, path: &str, role: Role) -> Result<(), String> {
        match (role, Target::parse(path)?) {
            (Role::Source, Target::Topic(topic)) => Err(format!(
                "a route reads a subscription, not topic `{topic}`: create a subscription (see `declare`) and read subscription/NAME"
            )),
            (Role::Sink, Target::Subscription(name)) => Err(format!(
                "Pub/Sub publishes to topics; `{name}` is a subscription: write topic/NAME"
            )),
            _ => Ok(()),
        }
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
        let options: PubSubSourceOptions = crate::strict::parse_strict(options.clone())
            .map_err(|e| format!("Pub/Sub source options: {e}"))?;
        if options
            .lease_seconds
            .is_some_and(|s| !(10..=600).contains(&s))
        {
            return Err("`lease_seconds` is between 10 and 600".into());
        }
        Ok(SourceOptions::new(options))
    }

    /// Checked when the source opens: the subscription needs a dead-letter policy.
    fn check_reject_without_dead_letter(&self, _: &str, _: &SourceOptions) -> Result<(), String> {
        Ok(())
    }

    fn reply_address(&self, path: &str) -> Option<String> {
        path.strip_prefix("topic/").map(str::to_owned)
    }

    /// Any subscription may be attached to a topic.
    fn may_feed(&self, _sink: Option<&str>, _source: &str) -> bool {
        true
    }

    /// The delivery attempt (subscriptions with a dead-letter policy) and the message id.
    fn origin_fields(&self) -> &'static [OriginField] {
        &[
            OriginField::ReceiveCount,
            OriginField::BrokerMessageId,
            OriginField::Named("subscription"),
            OriginField::Named("ordering_key"),
            OriginField::Named("publish_time"),
        ]
    }

    /// Pub/Sub's limit for a message with its attributes.
    fn max_message_bytes(&self) -> usize {
        10_000_000
    }

    fn describe(&self) -> String {
        describe(self)
    }

    async fn connect(&self, _context: &ConnectContext) -> Result<Arc<dyn Connector>, AdapterError> {
        connect(self).await
    }
}

/// `pubsub://PROJECT[?endpoint=URL]` for `--url`.
fn parse_url(url: &str) -> Result<Config, String> {
    let rest = url
        .strip_prefix("pubsub://")
        .ok_or_else(|| format!("`{url}` is not pubsub://PROJECT[?endpoint=URL]"))?;
    let (project, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut fields = serde_json::Map::new();
    fields.insert("project".into(), project.trim_end_matches('/').into());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("endpoint", value)) => {
                fields.insert("endpoint".into(), value.into());
            }
            _ => {
                return Err(format!(
                    "unknown pubsub:// parameter `{pair}`; use endpoint=URL"
                ));
            }
        }
    }
    serde_json::from_value(serde_json::Value::Object(fields)).map_err(|e| e.to_string())
}

fn describe(config: &Config) -> String {
    match &config.endpoint {
        Some(endpoint) => format!(
            "Pub/Sub at {} (project {})",
            endpoint.redacted(),
            config.project
        ),
        None => format!("Google Cloud Pub/Sub (project {})", config.project),
    }
}

async fn connect(config: &Config) -> Result<Arc<dyn Connector>, AdapterError> {
    let clients = Arc::new(PubSubClients::new(config).await?);
    clients.probe().await?;
    clients.declare(&config.declare).await?;
    Ok(Arc::new(PubSubConnector { clients }))
}

struct PubSubConnector {
    clients: Arc<PubSubClients>,
}

impl PubSubConnector {
    fn spec(
        &self,
        subscription: &str,
        endpoint: &Endpoint,
        lease_seconds: u64,
        outstanding: usize,
        mode: source::AckMode,
    ) -> source::StreamSpec {
        source::StreamSpec {
            subscriber: self.clients.subscriber.clone(),
            subscription: subscription.to_owned(),
            endpoint: endpoint.to_string(),
            lease: Duration::from_secs(lease_seconds),
            outstanding,
            mode,
        }
    }
}

/// Dead letters a peek holds at once (`bridge dlq stats` and `show`).
const DEAD_LETTER_PEEK: usize = 10_000;

#[async_trait]
impl Connector for PubSubConnector {
    /// A peek at dead letters holds up to 10,000 of them, where `tail` holds 100: `dlq
    /// stats` must see them all.
    async fn open_dead_letters(
        &self,
        endpoint: &Endpoint,
        read: DeadLetterRead<'_>,
    ) -> Result<Box<dyn Source>, AdapterError> {
        match (
            read,
            Target::parse(&endpoint.path).map_err(AdapterError::Invalid)?,
        ) {
            (DeadLetterRead::Peek { disturb }, Target::Subscription(name)) => {
                let settings = DeadLetterRead::tail_settings(disturb);
                tail::peek_subscription(self, endpoint, &name, &settings, DEAD_LETTER_PEEK).await
            }
            (DeadLetterRead::Take { reader, window }, _) => {
                let options = self.dead_letter_reader_options(reader);
                let settings = DeadLetterRead::take_settings(reader, options, window);
                self.open_source(endpoint, &settings).await
            }
            (DeadLetterRead::Peek { disturb }, _) => {
                self.open_tail(endpoint, &DeadLetterRead::tail_settings(disturb))
                    .await
            }
        }
    }

    /// A subscription is fed by its topic: a redrive publishes there (so every
    /// subscription of that topic receives the message again).
    async fn redrive_path(&self, source_path: &str) -> Result<String, AdapterError> {
        match Target::parse(source_path).map_err(AdapterError::Invalid)? {
            Target::Subscription(name) => {
                let subscription = self.clients.subscription(&name);
                let topic = self.clients.subscription_topic(&subscription).await?;
                Ok(format!("topic/{topic}"))
            }
            Target::Topic(_) => Ok(source_path.to_owned()),
        }
    }

    async fn open_source(
        &self,
        endpoint: &Endpoint,
        settings: &SourceSettings,
    ) -> Result<Box<dyn Source>, AdapterError> {
        let Target::Subscription(name) =
            Target::parse(&endpoint.path).map_err(AdapterError::Invalid)?
        else {
            return Err(AdapterError::Invalid(format!(
                "{endpoint} is not a subscription"
            )));
        };
        let options: PubSubSourceOptions = settings.options.get()?;
        let subscription = self.clients.subscription(&name);
        let has_dead_letter = self
            .clients
            .subscription_has_dead_letter(&subscription)
            .await?;
        if !has_dead_letter && !settings.dead_letter {
            return Err(AdapterError::Invalid(format!(
                "Pub/Sub subscription {subscription} has no dead-letter policy and route `{}` has no `dead_letter`: a message that cannot be delivered would be redelivered forever; add either",
                settings.route
            )));
        }
        let spec = self.spec(
            &subscription,
            endpoint,
            options.lease_seconds.unwrap_or(60),
            settings.max_in_flight,
            source::AckMode::Settle,
        );
        Ok(Box::new(source::PubSubSource::start(
            spec,
            settings.max_in_flight,
        )))
    }

    async fn open_sink(&self, endpoint: &Endpoint) -> Result<Arc<dyn Sink>, AdapterError> {
        let Target::Topic(name) = Target::parse(&endpoint.path).map_err(AdapterError::Invalid)?
        else {
            return Err(AdapterError::Invalid(format!("{endpoint} is not a topic")));
        };
        let topic = self.clients.topic(&name);
        self.clients.require_topic(&topic).await?;
        let publisher = self.clients.publisher.publisher(topic.clone()).build();
        Ok(Arc::new(sink::PubSubSink {
            publisher,
            window: Arc::new(Semaphore::new(sink::MAX_UNCONFIRMED)),
            topic: endpoint.to_string(),
        }))
    }

    /// A topic id, or the full name of a topic of the connection's own project.
    fn is_plain_reply_address(&self, address: &str) -> bool {
        let own = format!("projects/{}/topics/", self.clients.config.project);
        crate::relay::allow::is_plain_name(address.strip_prefix(&own).unwrap_or(address))
    }

    /// A reply-to is a topic id or full topic name.
    fn reply_path(&self, address: &str) -> Result<String, String> {
        let path = format!("topic/{address}");
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
