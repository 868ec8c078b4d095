//! The adapter contract: what each system implements, once, so that the router, the
//! configuration and the command line never name a system.
//!
//! - An [`Adapter`] is a system as the routes file names it (`type: kafka`): it reads a
//!   connection's fields strictly, or a `--url`, into a [`Connection`].
//! - A [`Connection`] is one validated connection: it checks endpoint paths and parses a
//!   source's options once into the adapter's own type ([`SourceOptions`], kept in the
//!   plan), knows its reply-address rules, its loop rule, its largest message, the
//!   `origin` fields its sources set, and how to describe itself without secrets, and
//!   connects.
//! - A [`Connector`](super::Connector) is a connected connection: it opens sources, sinks,
//!   `tail` readers, reply readers and readers of dead letters ([`DeadLetterRead`]).
//!
//! [`systems`](super::systems) is the one list of every system this project knows, with
//! those a build left out (their cargo feature is named when a file uses them).
//! docs/adding-a-system.md is the checklist for adding one.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use super::{AdapterError, Connector, memory};
use crate::message::Origin;

/// A connection read from the routes file, or the first field at fault with its path.
pub type Parsed = Result<Arc<dyn Connection>, serde_path_to_error::Error<serde_json::Error>>;

/// Reads a connection whose fields are the serde type `C` strictly: what most adapters'
/// [`Adapter::parse`] is.
pub fn parse_connection<C>(fields: serde_json::Value) -> Parsed
where
    C: Connection + serde::de::DeserializeOwned + 'static,
{
    crate::strict::parse_strict::<C>(fields).map(|c| Arc::new(c) as Arc<dyn Connection>)
}

/// A system bridge connects to, as the routes file names it.
pub trait Adapter: Send + Sync {
    /// The `type` of its connections in the routes file.
    fn type_name(&self) -> &'static str;

    /// The URL schemes `--url` takes for it (`amqp`, `kafka`, ...), without `:`.
    fn url_schemes(&self) -> &'static [&'static str] {
        &[]
    }

    /// Reads a connection's fields (everything but `type`) strictly: unknown fields and a
    /// list where a mapping is expected are errors, each with its path inside the value.
    fn parse(&self, fields: serde_json::Value) -> Parsed;

    /// A connection from a URL given on the command line (one of [`url_schemes`]).
    ///
    /// [`url_schemes`]: Adapter::url_schemes
    fn parse_url(&self, _url: &str) -> Result<Arc<dyn Connection>, String> {
        Err(format!(
            "{} connections cannot be given as a URL",
            self.type_name()
        ))
    }
}

/// What an endpoint is used for in a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Source,
    Sink,
}

/// A connection's mistake, and the field it is in (`None`: the connection as a whole).
#[derive(Debug, PartialEq)]
pub struct FieldError {
    pub field: Option<&'static str>,
    pub message: String,
}

impl FieldError {
    pub fn at(field: &'static str, message: impl Into<String>) -> FieldError {
        FieldError {
            field: Some(field),
            message: message.into(),
        }
    }

    pub fn whole(message: impl Into<String>) -> FieldError {
        FieldError {
            field: None,
            message: message.into(),
        }
    }
}

/// A source's options, parsed once by its adapter when the routes file is validated and
/// kept in the plan; only that adapter reads them back ([`SourceOptions::get`]).
#[derive(Clone, Default)]
pub struct SourceOptions {
    typed: Option<Arc<dyn Any + Send + Sync>>,
    /// How they print (`Debug` of the adapter's type).
    shown: Arc<str>,
}

impl SourceOptions {
    /// No options: the adapter's defaults.
    pub fn none() -> SourceOptions {
        SourceOptions::default()
    }

    /// Options of the adapter's own type `T`.
    pub fn new<T: Any + Send + Sync + fmt::Debug>(options: T) -> SourceOptions {
        SourceOptions {
            shown: format!("{options:?}").into(),
            typed: Some(Arc::new(options)),
        }
    }

    /// The options as the adapter's type `T`; its defaults when none were given. An error
    /// when they were made by another adapter (a source opened on the wrong connection).
    pub fn get<T: Any + Default + Clone>(&self) -> Result<T, AdapterError> {
        match &self.typed {
            None => Ok(T::default()),
            Some(typed) => typed.downcast_ref::<T>().cloned().ok_or_else(|| {
                AdapterError::Invalid(format!(
                    "source options {} were made for another system",
                    self.shown
                ))
            }),
        }
    }
}

impl fmt::Debug for SourceOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.typed {
            None => f.write_str("none"),
            Some(_) => f.write_str(&self.shown),
        }
    }
}

/// A field of a message's `origin` (where it was received) that a system's sources may
/// set, beside the endpoint every source sets. Conditions and templates read them as
/// `origin.*`; the conformance suite checks that a source sets no other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginField {
    /// A partition of a log (Kafka).
    Partition,
    /// A position in an ordered log (Kafka offset, line number).
    Offset,
    /// How many times the broker has delivered the message.
    ReceiveCount,
    /// The broker's own id for the delivery, when it differs from the message id.
    BrokerMessageId,
    /// A field of the system's own (`Origin::fields`), e.g. RabbitMQ's `routing_key`.
    Named(&'static str),
}

impl OriginField {
    /// Its name under `origin.` in conditions and templates.
    pub fn name(self) -> &'static str {
        match self {
            OriginField::Partition => "partition",
            OriginField::Offset => "offset",
            OriginField::ReceiveCount => "receive_count",
            OriginField::BrokerMessageId => "broker_message_id",
            OriginField::Named(name) => name,
        }
    }

    /// The fields `origin` holds a value for.
    pub fn set_in(origin: &Origin) -> Vec<OriginField> {
        let set = [
            (OriginField::Partition, origin.partition.is_some()),
            (OriginField::Offset, origin.offset.is_some()),
            (OriginField::ReceiveCount, origin.receive_count.is_some()),
            (
                OriginField::BrokerMessageId,
                origin.broker_message_id.is_some(),
            ),
        ];
        set.into_iter()
            .filter_map(|(field, is_set)| is_set.then_some(field))
            .chain(
                origin
                    .fields
                    .iter()
                    .map(|(name, _)| OriginField::Named(name)),
            )
            .collect()
    }
}

/// Shared in-process state handed to every connection when it connects.
#[derive(Debug, Clone, Default)]
pub struct ConnectContext {
    /// The namespace of `memory` queues.
    pub memory: memory::MemoryBroker,
}

/// One validated connection of the routes file (or of `--url`).
#[async_trait]
pub trait Connection: fmt::Debug + Send + Sync {
    /// The `type` of the connection.
    fn type_name(&self) -> &'static str;

    /// Checks the fields that serde cannot (URIs and the like); an error names the field at
    /// fault, or none when it is about several.
    fn check(&self) -> Result<(), FieldError> {
        Ok(())
    }

    /// Checks an endpoint path (the part after `CONNECTION:`) for `role`, without any
    /// network access.
    fn check_endpoint(&self, path: &str, role: Role) -> Result<(), String>;

    /// Parses the options of a source on `path` (`from.options`, null for none) into the
    /// adapter's own type, checking them against the path.
    fn source_options(
        &self,
        path: &str,
        options: &serde_json::Value,
    ) -> Result<SourceOptions, String>;

    /// Checks that a source on `path` has somewhere to put the messages it rejects when its
    /// route has no `dead_letter`: a broker dead-letter mechanism bridge knows about.
    /// Without one, a rejected message would be dropped or redelivered forever.
    fn check_reject_without_dead_letter(
        &self,
        path: &str,
        options: &SourceOptions,
    ) -> Result<(), String>;

    /// Whether messages read from `path` carry a key of the system's own (a Kafka key, an
    /// SQS FIFO group, a Pub/Sub ordering key); without one, `ordering: key` has nothing to
    /// order by unless the route's `ordering_key` makes one, and `validate` warns.
    fn source_has_keys(&self, _path: &str) -> bool {
        true
    }

    /// The reply-to that repliers should use to reach a source on `path` (its queue or
    /// topic in the system's own terms), when it can be told from the path.
    fn reply_address(&self, path: &str) -> Option<String>;

    /// Whether a message this connection sends to `sink` may come back through a source on
    /// `source`, a path of a connection of the same system (two connections can reach one
    /// broker). `None` for a sink whose place is known only per message (a templated path
    /// or a reply-to). Errs toward yes: it decides where the loop guard's header is needed.
    fn may_feed(&self, sink: Option<&str>, source: &str) -> bool;

    /// The `origin` fields this system's sources may set (besides `endpoint`).
    fn origin_fields(&self) -> &'static [OriginField];

    /// Whether replies can be published back to requesters on this system.
    fn accepts_replies(&self) -> bool {
        true
    }

    /// The largest message a source of this system delivers with the broker's and client's
    /// default settings: the default of `limits.max_message_bytes`.
    fn max_message_bytes(&self) -> usize;

    /// Where this connection goes, safe to print (no secrets).
    fn describe(&self) -> String;

    /// Connects. Errors are [`AdapterError::Unavailable`] when retrying may help.
    async fn connect(&self, context: &ConnectContext) -> Result<Arc<dyn Connector>, AdapterError>;
}

/// Settings that `bridge run` passes to a source.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// Route name, for logs and consumer names.
    pub route: String,
    /// The source's options, parsed by its connection ([`Connection::source_options`]).
    pub options: SourceOptions,
    /// How many unsettled deliveries the router will hold; sources size prefetch to it.
    pub max_in_flight: usize,
    /// Whether the route has a dead letter (sources whose reject relies on broker
    /// configuration check that one of the two exists).
    pub dead_letter: bool,
}

/// How the dead letters at an endpoint are read (the `bridge dlq` commands).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterRead<'a> {
    /// Look at them from the oldest, changing what the system allows least, as
    /// `bridge tail --from-beginning` does (`disturb` where a system cannot peek).
    Peek { disturb: bool },
    /// Take them through a consumer of bridge's own, `reader` (a consumer group, durable
    /// consumer or route name; [`DEAD_LETTER_READER`] unless the user names another): ack
    /// removes a dead letter (on a log, moves that reader past it), retry leaves it to be
    /// taken again. At most `window` are held unsettled.
    Take { reader: &'a str, window: usize },
}

/// The name of the reader that takes dead letters unless the user names another.
pub const DEAD_LETTER_READER: &str = "bridge-dlq";

impl DeadLetterRead<'_> {
    /// What a peek asks of `tail`: the oldest message first.
    pub fn tail_settings(disturb: bool) -> TailSettings {
        TailSettings {
            from_beginning: true,
            disturb,
        }
    }

    /// What a take asks of a source: the route `reader`, with `options`, holding at most
    /// `window` unsettled.
    pub fn take_settings(reader: &str, options: SourceOptions, window: usize) -> SourceSettings {
        SourceSettings {
            route: reader.into(),
            options,
            max_in_flight: window,
            dead_letter: true,
        }
    }
}

/// Settings that `bridge tail` passes to a reader.
#[derive(Debug, Clone, Default)]
pub struct TailSettings {
    /// Start at the oldest retained message instead of new ones (logs only).
    pub from_beginning: bool,
    /// Allow a read that disturbs the broker's state (SQS receive counts and visibility,
    /// RabbitMQ redelivered flags, taking from a memory queue); adapters that cannot read
    /// undisturbed refuse without it.
    pub disturb: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Default, PartialEq)]
    struct Mine {
        window: u32,
    }

    #[derive(Debug, Clone, Default)]
    struct Theirs;

    #[test]
    fn options_read_back_as_made_and_default_when_none() {
        let options = SourceOptions::new(Mine { window: 7 });
        assert_eq!(options.get::<Mine>().unwrap(), Mine { window: 7 });
        assert_eq!(
            SourceOptions::none().get::<Mine>().unwrap(),
            Mine::default()
        );
        assert!(options.get::<Theirs>().is_err());
        assert_eq!(format!("{options:?}"), "Mine { window: 7 }");
    }

    #[test]
    fn origin_fields_are_those_with_a_value() {
        let origin = Origin {
            endpoint: "kafka:orders".into(),
            offset: Some(0),
            receive_count: Some(1),
            ..Origin::default()
        };
        assert_eq!(
            OriginField::set_in(&origin),
            [OriginField::Offset, OriginField::ReceiveCount]
        );
        assert!(OriginField::set_in(&Origin::default()).is_empty());
    }
}
