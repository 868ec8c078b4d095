//! NATS with JetStream (`type: nats`), through the official `async-nats` client. Tested
//! against nats-server 2.9.
//!
//! Endpoints: `NAME:stream/STREAM` (source; tail), `NAME:subject/SUBJECT` (sink: JetStream
//! publish, confirmed; tail: a core subscription) and `NAME:core/SUBJECT` (sink: core
//! publish, at most once; tail).
//!
//! - Source ([`source`]): a durable pull consumer (`from.options.consumer`, default
//!   `bridge-ROUTE`) with explicit acks and `max_ack_pending` set to the route's window; ack
//!   = `+ACK`, retry = `-NAK` with a delay, reject = `+TERM`; in-progress acks while a
//!   message is held longer than half the ack wait. JetStream keeps no dead letters:
//!   routes from NATS need a `dead_letter`.
//! - Sinks ([`sink`]): JetStream publish confirmed by the stream's PubAck, the message id
//!   as `Nats-Msg-Id` (the stream's duplicate window drops resends); core publish only on
//!   `core/` endpoints. Subjects starting with `$` (the JetStream API, system subjects) are
//!   refused.
//! - Mapping ([`mapping`]): headers, with base64 for binary values and for text a header
//!   cannot carry; envelope fields as headers; names come back sorted.
//! - Tail ([`tail`]): an ephemeral consumer acknowledging nothing, or a core subscription.
//! - Replies: a requester's reply-to travels in the `reply-to` header (JetStream stores no
//!   reply subject); replies to `_INBOX.` subjects go by core publish (at most once).
//! - Credentials: token, user and password, NKey seed, or a credentials file; TLS with a
//!   CA and a client certificate.

mod client;
mod config;
mod mapping;
mod sink;
mod source;
mod tail;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_trait::async_trait;
use tokio::sync::Semaphore;

use client::NatsClient;
pub use config::Config;
use config::{Deliver, SourceOptions as NatsSourceOptions, Target};

use super::{
    Adapter, AdapterError, ConnectContext, Connection, Connector, FieldError, OriginField, Role,
    Sink, Source, SourceOptions, SourceSettings, TailSettings,
};
use crate::address::Endpoint;

/// The prefix of reply subjects that requesters wait on with a core subscription.
const INBOX_PREFIX: &str = "_INBOX.";

/// The `nats` system (`type: nats`, `--url nats://HOST:PORT`).
pub struct Nats;

impl Adapter for Nats {
    fn type_name(&self) -> &'static str {
        "nats"
    }

    fn url_schemes(&self) -> &'static [&'static str] {
        &["nats"]
    }

    fn parse(&self, fields: serde_json::Value) -> crate::adapter::contract::Parsed {
        crate::adapter::contract::parse_connection::<Config>(fields)
    }

    fn parse_url(&self, url: &str) -> Result<Arc<dyn Connection>, String> {
        Ok(Arc::new(Config::with_url(url)))
    }
}

fn check_config(config: &Config) -> Result<(), FieldError> {
    for server in config.url.expose().split(',').map(str::trim) {
        if !(server.starts_with("nats://") || server.starts_with("tls://")) {
            return Err(FieldError::at(
                "url",
                format!(
                    "`{}` is not nats://HOST:PORT or tls://HOST:PORT",
                    crate::secret::redact_url(server)
                ),
            ));
        }
    }
    let ways = [
        config.token.is_some(),
        config.username.is_some() || config.password.is_some(),
        config.nkey_seed.is_some(),
        config.credentials_file.is_some(),
    ];
    if ways.iter().filter(|&&way| way).count() > 1 {
        return Err(FieldError::whole(
            "give one way to authenticate: `token`, `username` and `password`, `nkey_seed` or `credentials_file`",
        ));
    }
    if config.username.is_some() != config.password.is_some() {
        return Err(FieldError::whole("`username` and `password` go together"));
    }
    if let Some(tls) = &config.tls {
        tls.check().map_err(|e| FieldError::at("tls", e))?;
    }
    for stream in &config.declare.streams {
        config::check_name("stream", &stream.name).map_err(|e| FieldError::at("declare", e))?;
        if stream.subjects.is_empty() {
            return Err(FieldError::at(
                "declare",
                format!("stream `{}` needs at least one subject", stream.name),
            ));
        }
        for subject in &stream.subjects {
            config::check_subject(subject, true).map_err(|e| FieldError::at("declare", e))?;
        }
    }
    for consumer in &config.declare.consumers {
        config::check_name("consumer", &consumer.name).map_err(|e| FieldError::at("declare", e))?;
        config::check_name("stream", &consumer.stream).map_err(|e| FieldError::at("declare", e))?;
    }
    Ok(())
}

#[async_trait]
impl Connection for Config {
    /// NATS has no key: only messages bridge wrote carry one (`bridge-key`).
    fn source_has_keys(&self, _path: &str) -> bool {
        false
    }

    fn type_name(&self) -> &'static str {
        "nats"
    }

    fn check(&self) -> Result<(), FieldError> {
        check_config(self)
    }

    fn check_endpoint(&self, path: &str, role: Role) -> Result<(), String> {
        match (role, Target::parse(path)?) {
            (Role::Source, Target::Stream(_)) => Ok(()),
            (Role::Source, Target::Subject(subject) | Target::Core(subject)) => Err(format!(
                "a route reads a JetStream stream, not subject `{subject}`: declare a stream that captures it and read stream/NAME"
            )),
            (Role::Sink, Target::Stream(name)) => Err(format!(
                "NATS publishes to subjects; `{name}` is a stream: write subject/SUBJECT (a subject the stream captures)"
            )),
            (Role::Sink, Target::Subject(subject) | Target::Core(subject)) => {
                config::check_publish_subject(&subject)
            }
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
        let options: NatsSourceOptions = crate::strict::parse_strict(options.clone())
            .map_err(|e| format!("NATS source options: {e}"))?;
        if let Some(consumer) = &options.consumer {
            config::check_name("consumer", consumer)?;
        }
        if let Some(filter) = &options.filter_subject {
            config::check_subject(filter, true)?;
        }
        if options.ack_wait_seconds == Some(0) {
            return Err("`ack_wait_seconds` must be at least 1".into());
        }
        Ok(SourceOptions::new(options))
    }

    fn check_reject_without_dead_letter(&self, _: &str, _: &SourceOptions) -> Result<(), String> {
        Err("JetStream keeps no dead letters: a message it cannot deliver would be terminated and lost".into())
    }

    /// A subject reaches a reader of `subject/` or `core/`; a stream's subjects are known
    /// only to the server (routes reading one name `reply.address`).
    fn reply_address(&self, path: &str) -> Option<String> {
        match Target::parse(path).ok()? {
            Target::Subject(subject) | Target::Core(subject) => {
                config::check_publish_subject(&subject)
                    .ok()
                    .map(|()| subject)
            }
            Target::Stream(_) => None,
        }
    }

    /// Which stream captures a subject is known only to the server.
    fn may_feed(&self, _sink: Option<&str>, _source: &str) -> bool {
        true
    }

    /// The stream sequence (offset) and the delivery count.
    fn origin_fields(&self) -> &'static [OriginField] {
        &[
            OriginField::Offset,
            OriginField::ReceiveCount,
            OriginField::Named("subject"),
            OriginField::Named("stream"),
        ]
    }

    /// nats-server's default `max_payload` (1 MiB), headers included.
    fn max_message_bytes(&self) -> usize {
        1 << 20
    }

    fn describe(&self) -> String {
        format!("NATS at {}", self.url.redacted())
    }

    async fn connect(&self, _context: &ConnectContext) -> Result<Arc<dyn Connector>, AdapterError> {
        let nats = NatsClient::connect(self).await?;
        nats.declare(self).await?;
        Ok(Arc::new(NatsConnector { nats }))
    }
}

struct NatsConnector {
    nats: NatsClient,
}

#[async_trait]
impl Connector for NatsConnector {
    async fn open_source(
        &self,
        endpoint: &Endpoint,
        settings: &SourceSettings,
    ) -> Result<Box<dyn Source>, AdapterError> {
        let Target::Stream(name) = Target::parse(&endpoint.path).map_err(AdapterError::Invalid)?
        else {
            return Err(AdapterError::Invalid(format!("{endpoint} is not a stream")));
        };
        let options: NatsSourceOptions = settings.options.get()?;
        let stream = self.nats.stream(&name).await?;
        let consumer_name = options
            .consumer
            .clone()
            .unwrap_or_else(|| config::consumer_name(&settings.route));
        let ack_wait = Duration::from_secs(
            options
                .ack_wait_seconds
                .unwrap_or_else(config::default_ack_wait),
        );
        let config = pull::Config {
            durable_name: Some(consumer_name.clone()),
            ack_policy: AckPolicy::Explicit,
            ack_wait,
            max_ack_pending: i64::try_from(settings.max_in_flight).unwrap_or(i64::MAX),
            filter_subject: options.filter_subject.clone().unwrap_or_default(),
            deliver_policy: match options.deliver {
                Deliver::All => DeliverPolicy::All,
                Deliver::New => DeliverPolicy::New,
            },
            ..pull::Config::default()
        };
        let consumer = stream
            .get_or_create_consumer(&consumer_name, config)
            .await
            .map_err(|e| {
                self.nats
                    .api_error(&format!("opening consumer `{consumer_name}`"), e)
            })?;
        tracing::info!(stream = %name, consumer = %consumer_name, window = settings.max_in_flight, "consuming from JetStream");
        Ok(Box::new(source::NatsSource::start(source::PullSpec {
            consumer,
            client: self.nats.client.clone(),
            endpoint: endpoint.to_string(),
            window: settings.max_in_flight,
            ack_wait,
            settle: true,
        })))
    }

    async fn open_sink(&self, endpoint: &Endpoint) -> Result<Arc<dyn Sink>, AdapterError> {
        match Target::parse(&endpoint.path).map_err(AdapterError::Invalid)? {
            Target::Stream(name) => Err(AdapterError::Invalid(format!(
                "{endpoint}: publish to a subject stream `{name}` captures (subject/SUBJECT)"
            ))),
            Target::Subject(subject) => {
                config::check_publish_subject(&subject).map_err(AdapterError::Invalid)?;
                self.nats
                    .jetstream
                    .stream_by_subject(subject.clone())
                    .await
                    .map_err(|e| {
                        self.nats.api_error(
                            &format!("finding the stream that captures `{subject}` (declare one under `declare.streams`)"),
                            e,
                        )
                    })?;
                Ok(Arc::new(sink::JetStreamSink {
                    context: self.nats.jetstream.clone(),
                    client: self.nats.client.clone(),
                    subject: subject.into(),
                    window: Arc::new(Semaphore::new(sink::MAX_UNCONFIRMED)),
                }))
            }
            Target::Core(subject) => {
                config::check_publish_subject(&subject).map_err(AdapterError::Invalid)?;
                Ok(Arc::new(sink::CoreSink {
                    client: self.nats.client.clone(),
                    subject: subject.into(),
                }))
            }
        }
    }

    async fn open_tail(
        &self,
        endpoint: &Endpoint,
        settings: &TailSettings,
    ) -> Result<Box<dyn Source>, AdapterError> {
        tail::open(self, endpoint, settings).await
    }

    /// Dead letters are taken through a durable consumer of their own (`bridge-dlq`, or
    /// the `--group` of `bridge dlq redrive`).
    fn dead_letter_reader_options(&self, reader: &str) -> SourceOptions {
        let options = NatsSourceOptions {
            consumer: Some(reader.into()),
            ..NatsSourceOptions::default()
        };
        SourceOptions::new(options)
    }

    /// A stream is fed through its subjects: a redrive goes to the one subject a stream
    /// captures; a stream with several, or with wildcards, needs `--to subject/...`.
    async fn redrive_path(&self, source_path: &str) -> Result<String, AdapterError> {
        let Target::Stream(name) = Target::parse(source_path).map_err(AdapterError::Invalid)?
        else {
            return Ok(source_path.to_owned());
        };
        let mut stream = self.nats.stream(&name).await?;
        let subjects = stream
            .info()
            .await
            .map_err(|e| self.nats.api_error(&format!("reading stream `{name}`"), e))?
            .config
            .subjects
            .clone();
        match subjects.as_slice() {
            [subject] if !subject.split('.').any(|t| t == "*" || t == ">") => {
                Ok(format!("subject/{subject}"))
            }
            _ => Err(AdapterError::Invalid(format!(
                "stream `{name}` captures {} subjects: which one its dead letters go back to is not recorded; give --to CONNECTION:subject/SUBJECT",
                if subjects.is_empty() {
                    "no".to_owned()
                } else {
                    format!("the subjects {}", subjects.join(", "))
                }
            ))),
        }
    }

    /// Reads new messages only, through an ephemeral consumer or a subscription.
    async fn open_reply_reader(
        &self,
        endpoint: &Endpoint,
    ) -> Result<Box<dyn Source>, AdapterError> {
        tail::open(self, endpoint, &TailSettings::default()).await
    }

    /// A subject; an `_INBOX.` subject (a requester's core subscription) by core publish.
    fn reply_path(&self, address: &str) -> Result<String, String> {
        config::check_publish_subject(address)?;
        if address.starts_with(INBOX_PREFIX) {
            Ok(format!("core/{address}"))
        } else {
            Ok(format!("subject/{address}"))
        }
    }

    /// A subject to publish to: never a wildcard or a `$` (system) subject.
    fn is_plain_reply_address(&self, address: &str) -> bool {
        config::check_publish_subject(address).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(fields: serde_json::Value) -> Result<Config, String> {
        let config: Config = crate::strict::parse_strict(fields).map_err(|e| e.to_string())?;
        check_config(&config).map_err(|e| e.message)?;
        Ok(config)
    }

    #[test]
    fn one_way_to_authenticate_and_a_nats_url() {
        assert!(config(serde_json::json!({"url": "nats://127.0.0.1:4222"})).is_ok());
        assert!(config(serde_json::json!({"url": "nats://a:1, tls://b:2"})).is_ok());
        assert!(config(serde_json::json!({"url": "http://127.0.0.1:4222"})).is_err());
        assert!(
            config(serde_json::json!({"url": "nats://h:1", "token": "t", "nkey_seed": "SU"}))
                .is_err()
        );
        assert!(config(serde_json::json!({"url": "nats://h:1", "username": "u"})).is_err());
        assert!(config(serde_json::json!({"url": "nats://h:1", "bogus": 1})).is_err());
    }

    #[test]
    fn sources_read_streams_and_sinks_publish_to_subjects() {
        let config = config(serde_json::json!({"url": "nats://h:1"})).unwrap();
        assert!(config.check_endpoint("stream/ORDERS", Role::Source).is_ok());
        assert!(
            config
                .check_endpoint("subject/orders", Role::Source)
                .is_err()
        );
        assert!(
            config
                .check_endpoint("subject/orders.eu", Role::Sink)
                .is_ok()
        );
        assert!(config.check_endpoint("core/orders.eu", Role::Sink).is_ok());
        assert!(config.check_endpoint("stream/ORDERS", Role::Sink).is_err());
        assert!(
            config
                .check_endpoint("subject/$JS.API.STREAM.DELETE.ORDERS", Role::Sink)
                .is_err()
        );
        assert!(
            config
                .check_endpoint("subject/orders.*", Role::Sink)
                .is_err()
        );
        assert_eq!(
            config.reply_address("subject/replies.a"),
            Some("replies.a".into())
        );
        assert_eq!(config.reply_address("subject/replies.*"), None);
        assert_eq!(config.reply_address("stream/REPLIES"), None);
    }

    #[test]
    fn source_options_are_parsed_once_and_checked() {
        let config = config(serde_json::json!({"url": "nats://h:1"})).unwrap();
        let options = config
            .source_options(
                "stream/ORDERS",
                &serde_json::json!({"consumer": "c1", "filter_subject": "orders.>", "deliver": "new"}),
            )
            .unwrap();
        let typed: NatsSourceOptions = options.get().unwrap();
        assert_eq!(typed.consumer.as_deref(), Some("c1"));
        assert_eq!(typed.deliver, Deliver::New);
        assert!(
            config
                .source_options("stream/ORDERS", &serde_json::json!({"consumer": "a.b"}))
                .is_err()
        );
        assert!(
            config
                .source_options("stream/ORDERS", &serde_json::json!({"ack_wait_seconds": 0}))
                .is_err()
        );
        assert!(
            config
                .check_reject_without_dead_letter("stream/ORDERS", &options)
                .is_err()
        );
    }
}
