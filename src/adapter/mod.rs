//! The contract between the router and the brokers, and the adapters that implement it.
//!
//! [`systems`] lists every system; each implements [`Adapter`] (reading its connections)
//! and [`Connection`] (a validated connection: endpoint paths, source options, reply
//! addresses, loops, limits; connecting), in `contract`. A connected connection is a
//! [`Connector`]: it opens sources, sinks, `tail` readers, reply readers and readers of
//! dead letters. A [`Source`]
//! yields [`Delivery`]s (a message plus its [`AckHandle`]); a [`Sink`] enqueues messages in
//! call order and hands back a [`Confirmation`] that resolves only when the broker has
//! confirmed. Nothing outside `adapter` names a system.
//!
//! Each adapter classifies its client's errors at its own boundary into [`ErrorClass`]:
//! `Transient` (worth retrying: timeouts, lost connections, throttling) or `Permanent`
//! (will fail the same way again: too large, unroutable, invalid). No blanket conversion
//! picks a class.

#[cfg(feature = "aws")]
pub mod aws;
mod contract;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod memory;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "pubsub")]
pub mod pubsub;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
#[cfg(feature = "redis")]
pub mod redis_streams;
pub mod stdio;
#[cfg(any(
    feature = "kafka",
    feature = "rabbitmq",
    feature = "nats",
    feature = "mqtt"
))]
pub mod tls;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;

use crate::ack::AckHandle;
use crate::address::Endpoint;
use crate::message::Message;

pub use contract::{
    Adapter, ConnectContext, Connection, DEAD_LETTER_READER, DeadLetterRead, FieldError,
    OriginField, Role, SourceOptions, SourceSettings, TailSettings,
};

/// A system this project knows: its `type` name, the cargo feature that builds it (none
/// for the built-in ones), and its adapter when this build has it.
#[derive(Clone, Copy)]
pub struct System {
    pub type_name: &'static str,
    pub feature: Option<&'static str>,
    pub adapter: Option<&'static dyn Adapter>,
}

/// A system of this build, or one a cargo feature left out.
macro_rules! system {
    ($feature:literal, $type_name:literal, $adapter:path) => {{
        #[cfg(feature = $feature)]
        let adapter: Option<&'static dyn Adapter> = Some(&$adapter);
        #[cfg(not(feature = $feature))]
        let adapter: Option<&'static dyn Adapter> = None;
        System {
            type_name: $type_name,
            feature: Some($feature),
            adapter,
        }
    }};
}

/// Every system, the one place that lists them (docs/adding-a-system.md).
pub fn systems() -> [System; 9] {
    [
        System {
            type_name: "memory",
            feature: None,
            adapter: Some(&memory::Memory),
        },
        System {
            type_name: "stdio",
            feature: None,
            adapter: Some(&stdio::Stdio),
        },
        system!("kafka", "kafka", kafka::Kafka),
        system!("rabbitmq", "rabbitmq", rabbitmq::RabbitMq),
        system!("aws", "aws", aws::Aws),
        system!("pubsub", "pubsub", pubsub::PubSub),
        system!("nats", "nats", nats::Nats),
        system!("redis", "redis", redis_streams::Redis),
        system!("mqtt", "mqtt", mqtt::Mqtt),
    ]
}

/// The system whose `type` is `name`.
pub fn system(name: &str) -> Option<System> {
    systems().into_iter().find(|s| s.type_name == name)
}

/// A connection from a URL given on the command line (`memory:`, `stdio:`, and the URL
/// forms of each broker adapter, docs/cli.md). The URL's password is remembered as a
/// secret, and no error shows it.
pub fn connection_from_url(url: &str) -> Result<Arc<dyn Connection>, String> {
    for password in crate::secret::url_passwords(url) {
        crate::secret::remember(&password);
    }
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or_default();
    let adapter = systems()
        .into_iter()
        .filter_map(|system| system.adapter)
        .find(|adapter| adapter.url_schemes().contains(&scheme));
    let Some(adapter) = adapter else {
        let schemes: Vec<String> = systems()
            .into_iter()
            .filter_map(|system| system.adapter)
            .flat_map(|adapter| adapter.url_schemes().iter().map(|s| format!("{s}:")))
            .collect();
        return Err(format!(
            "unsupported URL scheme in `{}`; use {}",
            redact_url(url),
            schemes.join(", ")
        ));
    };
    adapter
        .parse_url(url)
        .and_then(|connection| {
            connection
                .check()
                .map(|()| connection)
                .map_err(|e| e.message)
        })
        .map_err(|e| crate::secret::hide_url_secrets(&e, url))
}

/// A connection written as JSON with its `type`, as in a routes file, for programs that
/// embed bridge. Errors name the field at fault; a routes file gets the same checks with
/// YAML paths and lines from `bridge::config`.
pub fn connection_from_json(connection: &serde_json::Value) -> Result<Arc<dyn Connection>, String> {
    let mut fields = connection.clone();
    let type_name = fields
        .as_object_mut()
        .and_then(|fields| fields.remove("type"))
        .ok_or("a connection is a mapping with a `type`")?;
    let type_name = type_name.as_str().ok_or("`type` is one word")?;
    let system =
        system(type_name).ok_or_else(|| format!("unknown connection type `{type_name}`"))?;
    let adapter = system.adapter.ok_or_else(|| {
        format!(
            "this bridge was built without the `{}` feature",
            system.feature.unwrap_or_default()
        )
    })?;
    let connection = adapter.parse(fields).map_err(|e| e.to_string())?;
    connection.check().map_err(|e| match e.field {
        Some(field) => format!("{field}: {}", e.message),
        None => e.message,
    })?;
    Ok(connection)
}

pub use crate::secret::redact_url;

/// This host's name, for the names of consumers and sessions that must stay the same
/// across restarts of one replica and differ between replicas on different hosts (Redis
/// consumers, MQTT client ids); `None` where it cannot be read.
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// Messages with more headers than this are mapped off the runtime's worker queue (see
/// [`map_large`]).
const LARGE_MESSAGE_HEADERS: usize = 4096;

/// Runs the mapping of a message with `headers` headers. A message with very many headers
/// (allowed by a raised `limits.max_headers`) takes milliseconds to map; on the
/// multi-threaded runtime that work runs under `block_in_place`, so the runtime moves this
/// worker's other tasks (other routes) to another thread instead of making them wait.
pub fn map_large<T>(headers: usize, map: impl FnOnce() -> T) -> T {
    let shared_runtime = tokio::runtime::Handle::try_current().is_ok_and(|runtime| {
        runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
    });
    if headers > LARGE_MESSAGE_HEADERS && shared_runtime {
        tokio::task::block_in_place(map)
    } else {
        map()
    }
}

/// Whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// A later attempt may succeed (a nack, throttling, a server error, a confirm timeout).
    Transient,
    /// The broker cannot be reached (connection refused or lost, no answer at all): the
    /// message waits for it, retried without using up its attempts, so that an outage
    /// causes backpressure rather than dead letters.
    Unavailable,
    /// The same message will fail the same way (too large, unroutable, invalid).
    Permanent,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::Permanent => "permanent",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message that a sink could not deliver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub class: ErrorClass,
    pub message: String,
}

impl SendError {
    pub fn transient(message: impl Into<String>) -> Self {
        SendError {
            class: ErrorClass::Transient,
            message: message.into(),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        SendError {
            class: ErrorClass::Unavailable,
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        SendError {
            class: ErrorClass::Permanent,
            message: message.into(),
        }
    }
}

/// Opening a source or sink, or a source's stream, failed.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// The broker could not be reached or refused the session; `bridge run` retries these.
    #[error("{0}")]
    Unavailable(String),
    /// The endpoint or its options are wrong; retrying will not help.
    #[error("{0}")]
    Invalid(String),
}

impl AdapterError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, AdapterError::Unavailable(_))
    }
}

/// What a broker said when it accepted a message, for `bridge send` and the logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receipt {
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub message_id: Option<String>,
    pub sequence_number: Option<String>,
}

impl fmt::Display for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(p) = self.partition {
            parts.push(format!("partition={p}"));
        }
        if let Some(o) = self.offset {
            parts.push(format!("offset={o}"));
        }
        if let Some(id) = &self.message_id {
            parts.push(format!("message_id={id}"));
        }
        if let Some(seq) = &self.sequence_number {
            parts.push(format!("sequence_number={seq}"));
        }
        if parts.is_empty() {
            f.write_str("confirmed")
        } else {
            f.write_str(&parts.join(" "))
        }
    }
}

/// One received message and the handle that settles it.
#[derive(Debug)]
pub struct Delivery {
    pub message: Message,
    pub ack: AckHandle,
}

/// Resolves when the broker has confirmed (or refused) one enqueued message.
pub type Confirmation = BoxFuture<'static, Result<Receipt, SendError>>;

/// A stream of deliveries from one endpoint.
///
/// Contract: `recv` is cancel-safe (dropping its future loses nothing); a source recovers
/// from broker outages by itself and only returns an error it cannot recover from; the
/// outcome given to each ack handle reaches the broker (possibly batched) before `close`
/// returns.
#[async_trait]
pub trait Source: Send {
    /// The next delivery, or `None` when a finite source has no more.
    async fn recv(&mut self) -> Result<Option<Delivery>, AdapterError>;

    /// Stops receiving and settles every outcome already given (commits, deletes, acks).
    async fn close(self: Box<Self>);

    /// A way to ask the broker how many messages wait at this source, where it has one.
    fn backlog(&self) -> Option<Arc<dyn Backlog>> {
        None
    }
}

/// Asks a broker how many messages wait at one source (the `bridge_source_backlog_messages`
/// gauge): Kafka consumer-group lag, RabbitMQ ready messages, SQS visible + in flight.
#[async_trait]
pub trait Backlog: Send + Sync {
    async fn messages(&self) -> Result<u64, AdapterError>;
}

/// Delivers messages to one endpoint.
///
/// Contract: `send` waits for room in the sink's bounded in-flight window, enqueues the
/// message in call order (so per-key order holds while many confirmations are
/// outstanding) and returns a [`Confirmation`] that resolves only once the broker has
/// confirmed. An error from `send` itself means the message was not enqueued.
#[async_trait]
pub trait Sink: Send + Sync {
    async fn send(&self, message: &Message) -> Result<Confirmation, SendError>;

    /// Waits until everything enqueued so far is confirmed or failed (used on shutdown).
    async fn flush(&self);
}

/// One named connection of the routes file.
#[async_trait]
pub trait Connector: Send + Sync {
    /// Opens a consuming source on `endpoint` for `bridge run`.
    async fn open_source(
        &self,
        endpoint: &Endpoint,
        settings: &SourceSettings,
    ) -> Result<Box<dyn Source>, AdapterError>;

    /// Opens a sink on `endpoint`. Sinks of one connection share its client.
    async fn open_sink(&self, endpoint: &Endpoint) -> Result<Arc<dyn Sink>, AdapterError>;

    /// Opens a reader for `bridge tail` that leaves the data undisturbed where the broker
    /// allows it.
    async fn open_tail(
        &self,
        endpoint: &Endpoint,
        settings: &TailSettings,
    ) -> Result<Box<dyn Source>, AdapterError>;

    /// Opens a reader for `bridge request` to wait for a reply on `endpoint`. By default a
    /// source with no options (others' replies are handed back); a system where a source
    /// would take part in a consumer group reads from the end instead.
    async fn open_reply_reader(
        &self,
        endpoint: &Endpoint,
    ) -> Result<Box<dyn Source>, AdapterError> {
        let settings = SourceSettings {
            route: "request".into(),
            options: SourceOptions::none(),
            max_in_flight: 16,
            dead_letter: true,
        };
        self.open_source(endpoint, &settings).await
    }

    /// The source options of the reader `reader` that takes dead letters. By default none:
    /// the source of route `reader`. A system whose sources share a consumer group with
    /// routes gives the take a group or durable consumer named `reader` here.
    fn dead_letter_reader_options(&self, _reader: &str) -> SourceOptions {
        SourceOptions::none()
    }

    /// Whether taking a dead letter only moves the reader's position and removes nothing
    /// (a Kafka consumer group): `bridge dlq redrive` then passes a dead letter it leaves
    /// alone by acknowledging it, since holding it would hold back the position of every
    /// later one. Elsewhere it holds such dead letters and releases them (retry) at the end.
    fn dead_letter_take_is_positional(&self) -> bool {
        false
    }

    /// Opens a reader of the dead letters at `endpoint` (a route's `dead_letter`, read as
    /// a source): a peek is a `tail` from the oldest message, a take a source for the
    /// route named by the take with [`dead_letter_reader_options`](Self::dead_letter_reader_options).
    async fn open_dead_letters(
        &self,
        endpoint: &Endpoint,
        read: DeadLetterRead<'_>,
    ) -> Result<Box<dyn Source>, AdapterError> {
        match read {
            DeadLetterRead::Peek { disturb } => {
                self.open_tail(endpoint, &DeadLetterRead::tail_settings(disturb))
                    .await
            }
            DeadLetterRead::Take { reader, window } => {
                let options = self.dead_letter_reader_options(reader);
                let settings = DeadLetterRead::take_settings(reader, options, window);
                self.open_source(endpoint, &settings).await
            }
        }
    }

    /// The sink path that puts a message back where a source of path `source_path`
    /// receives it (`bridge dlq redrive`). By default the same path: a queue, a topic.
    /// A system whose sources read something that cannot be sent to (a Pub/Sub
    /// subscription, a NATS stream) finds what feeds it, or says to give `--to`.
    async fn redrive_path(&self, source_path: &str) -> Result<String, AdapterError> {
        Ok(source_path.to_owned())
    }

    /// The endpoint path that reaches a reply address written by a requester in this
    /// system's own terms (an AMQP reply-to, a Kafka topic, an SQS queue URL ...).
    fn reply_path(&self, address: &str) -> Result<String, String> {
        Err(format!("cannot send a reply to `{address}` on this system"))
    }

    /// Whether a requester's reply address is a plain one of this system, where
    /// `reply.allow: [default]` lets replies go: by default one name without `/` or `:`
    /// (never a partition, an exchange with a routing key or a queue URL).
    fn is_plain_reply_address(&self, address: &str) -> bool {
        crate::relay::allow::is_plain_name(address)
    }
}
