//! Connection configurations, checked without touching the network.
//!
//! The routes file names each connection with a `type`; [`System::from_type`] knows every
//! type, including those of adapters left out of this build (their use is refused with the
//! cargo feature to turn on). [`ConnectionSpec::check_endpoint`] validates an endpoint path
//! and its options for a role, so `bridge validate` finds mistakes before anything connects.

use std::sync::Arc;

use serde::de::DeserializeOwned;

#[cfg(feature = "aws")]
use super::aws;
#[cfg(feature = "kafka")]
use super::kafka;
#[cfg(feature = "pubsub")]
use super::pubsub;
#[cfg(feature = "rabbitmq")]
use super::rabbitmq;
use super::{AdapterError, Connector, memory, stdio};

/// The kinds of connection a routes file can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Memory,
    Stdio,
    Kafka,
    RabbitMq,
    Aws,
    PubSub,
}

impl System {
    pub const ALL: [System; 6] = [
        System::Memory,
        System::Stdio,
        System::Kafka,
        System::RabbitMq,
        System::Aws,
        System::PubSub,
    ];

    /// The `type` written in the routes file.
    pub fn type_name(self) -> &'static str {
        match self {
            System::Memory => "memory",
            System::Stdio => "stdio",
            System::Kafka => "kafka",
            System::RabbitMq => "rabbitmq",
            System::Aws => "aws",
            System::PubSub => "pubsub",
        }
    }

    pub fn from_type(name: &str) -> Option<System> {
        System::ALL.into_iter().find(|s| s.type_name() == name)
    }

    /// The cargo feature that builds this adapter, if it is optional.
    pub fn feature(self) -> Option<&'static str> {
        match self {
            System::Memory | System::Stdio => None,
            System::Kafka => Some("kafka"),
            System::RabbitMq => Some("rabbitmq"),
            System::Aws => Some("aws"),
            System::PubSub => Some("pubsub"),
        }
    }

    /// Whether this build contains the adapter.
    pub fn is_built(self) -> bool {
        match self {
            System::Memory | System::Stdio => true,
            System::Kafka => cfg!(feature = "kafka"),
            System::RabbitMq => cfg!(feature = "rabbitmq"),
            System::Aws => cfg!(feature = "aws"),
            System::PubSub => cfg!(feature = "pubsub"),
        }
    }
}

/// What an endpoint is used for in a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Source,
    Sink,
}

/// Settings that `bridge run` passes to a source.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// Route name, for logs and consumer names.
    pub route: String,
    /// Adapter-specific options from the route's `from.options`, already checked.
    pub options: serde_json::Value,
    /// How many unsettled deliveries the router will hold; sources size prefetch to it.
    pub max_in_flight: usize,
    /// Whether the route has a dead letter (sources whose reject relies on broker
    /// configuration check that one of the two exists).
    pub dead_letter: bool,
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

/// Shared in-process state handed to every connector.
#[derive(Debug, Clone, Default)]
pub struct ConnectContext {
    /// The namespace of `memory` queues.
    pub memory: memory::MemoryBroker,
}

/// A connection's validated configuration.
#[derive(Debug, Clone)]
pub enum ConnectionSpec {
    Memory(memory::Config),
    Stdio(stdio::Config),
    #[cfg(feature = "kafka")]
    // Boxed: the largest configuration by far, and a connection is cloned rarely.
    Kafka(Box<kafka::Config>),
    #[cfg(feature = "rabbitmq")]
    RabbitMq(rabbitmq::Config),
    #[cfg(feature = "aws")]
    Aws(aws::Config),
    #[cfg(feature = "pubsub")]
    PubSub(pubsub::Config),
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

/// Deserializes `value` strictly (a list is never read as a mapping's fields), reporting
/// the path of the first problem inside it.
pub(crate) fn parse_strict<T: DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
    serde_path_to_error::deserialize(crate::config::strict::Strict(value))
}

impl ConnectionSpec {
    /// Checks a parsed connection's fields that serde cannot (URIs and the like); an error
    /// names the field at fault, or none when it is about several.
    pub fn check(&self) -> Result<(), FieldError> {
        match self {
            #[cfg(feature = "kafka")]
            ConnectionSpec::Kafka(config) => kafka::check_config(config),
            #[cfg(feature = "rabbitmq")]
            ConnectionSpec::RabbitMq(config) => rabbitmq::check_config(config),
            #[cfg(feature = "aws")]
            ConnectionSpec::Aws(config) => aws::check_config(config),
            _ => Ok(()),
        }
    }

    /// Reads the fields of a connection (everything but `type`).
    pub fn parse(
        system: System,
        value: serde_json::Value,
    ) -> Result<ConnectionSpec, serde_path_to_error::Error<serde_json::Error>> {
        Ok(match system {
            System::Memory => ConnectionSpec::Memory(parse_strict(value)?),
            System::Stdio => ConnectionSpec::Stdio(parse_strict(value)?),
            #[cfg(feature = "kafka")]
            System::Kafka => ConnectionSpec::Kafka(Box::new(parse_strict(value)?)),
            #[cfg(feature = "rabbitmq")]
            System::RabbitMq => ConnectionSpec::RabbitMq(parse_strict(value)?),
            #[cfg(feature = "aws")]
            System::Aws => ConnectionSpec::Aws(parse_strict(value)?),
            #[cfg(feature = "pubsub")]
            System::PubSub => ConnectionSpec::PubSub(parse_strict(value)?),
            #[allow(unreachable_patterns)]
            _ => unreachable!("callers check System::is_built first"),
        })
    }

    /// A connection from a URL given on the command line: `memory:`, `stdio:`, and the
    /// URL forms of each broker adapter (docs/cli.md lists them). The URL's credentials
    /// are remembered as secrets, and no error shows them.
    pub fn from_url(url: &str) -> Result<ConnectionSpec, String> {
        for secret in crate::secret::url_passwords(url) {
            crate::secret::remember(&secret);
        }
        let spec = Self::from_url_unchecked(url)
            .and_then(|spec| spec.check().map(|()| spec).map_err(|e| e.message))
            .map_err(|e| crate::secret::hide_url_secrets(&e, url))?;
        Ok(spec)
    }

    fn from_url_unchecked(url: &str) -> Result<ConnectionSpec, String> {
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or_default();
        match scheme {
            "memory" => Ok(ConnectionSpec::Memory(memory::Config::default())),
            "stdio" => Ok(ConnectionSpec::Stdio(stdio::Config::default())),
            #[cfg(feature = "kafka")]
            "kafka" => kafka::from_url(url).map(|config| ConnectionSpec::Kafka(Box::new(config))),
            #[cfg(feature = "rabbitmq")]
            "amqp" | "amqps" => rabbitmq::from_url(url).map(ConnectionSpec::RabbitMq),
            #[cfg(feature = "aws")]
            "aws" => aws::from_url(url).map(ConnectionSpec::Aws),
            #[cfg(feature = "pubsub")]
            "pubsub" => pubsub::from_url(url).map(ConnectionSpec::PubSub),
            _ => Err(format!(
                "unsupported URL scheme in `{}`; use kafka://, amqp://, amqps://, aws://, pubsub://, memory: or stdio:",
                crate::adapter::redact_url(url)
            )),
        }
    }

    pub fn system(&self) -> System {
        match self {
            ConnectionSpec::Memory(_) => System::Memory,
            ConnectionSpec::Stdio(_) => System::Stdio,
            #[cfg(feature = "kafka")]
            ConnectionSpec::Kafka(_) => System::Kafka,
            #[cfg(feature = "rabbitmq")]
            ConnectionSpec::RabbitMq(_) => System::RabbitMq,
            #[cfg(feature = "aws")]
            ConnectionSpec::Aws(_) => System::Aws,
            #[cfg(feature = "pubsub")]
            ConnectionSpec::PubSub(_) => System::PubSub,
        }
    }

    /// Checks an endpoint path and its options for `role` without any network access.
    pub fn check_endpoint(
        &self,
        path: &str,
        role: Role,
        options: &serde_json::Value,
    ) -> Result<(), String> {
        match self {
            ConnectionSpec::Memory(_) => memory::check_endpoint(path, role, options),
            ConnectionSpec::Stdio(_) => stdio::check_endpoint(path, role, options),
            #[cfg(feature = "kafka")]
            ConnectionSpec::Kafka(_) => kafka::check_endpoint(path, role, options),
            #[cfg(feature = "rabbitmq")]
            ConnectionSpec::RabbitMq(_) => rabbitmq::check_endpoint(path, role, options),
            #[cfg(feature = "aws")]
            ConnectionSpec::Aws(_) => aws::check_endpoint(path, role, options),
            #[cfg(feature = "pubsub")]
            ConnectionSpec::PubSub(_) => pubsub::check_endpoint(path, role, options),
        }
    }

    /// Checks that a source on `path` has somewhere to put messages it rejects when its
    /// route has no `dead_letter`: a broker dead-letter mechanism bridge knows about.
    /// Without one, a rejected message would be dropped by the broker or redelivered forever.
    pub fn check_reject_without_dead_letter(
        &self,
        path: &str,
        options: &serde_json::Value,
    ) -> Result<(), String> {
        match self {
            ConnectionSpec::Memory(_) | ConnectionSpec::Stdio(_) => Ok(()),
            #[cfg(feature = "kafka")]
            ConnectionSpec::Kafka(_) => {
                Err("Kafka has no reject of its own for messages that cannot be delivered".into())
            }
            #[cfg(feature = "rabbitmq")]
            ConnectionSpec::RabbitMq(config) => rabbitmq::check_reject(config, path, options),
            // Checked when the source opens: the queue needs a redrive policy.
            #[cfg(feature = "aws")]
            ConnectionSpec::Aws(_) => Ok(()),
            // Checked when the source opens: the subscription needs a dead-letter policy.
            #[cfg(feature = "pubsub")]
            ConnectionSpec::PubSub(_) => Ok(()),
        }
    }

    /// The reply-to that repliers should use to reach a source on `path` (its queue or
    /// topic in the system's own terms), when it can be told from the path.
    pub fn reply_address(&self, path: &str) -> Option<String> {
        match self {
            ConnectionSpec::Memory(_) => Some(path.to_owned()),
            ConnectionSpec::Stdio(_) => None,
            #[cfg(feature = "kafka")]
            ConnectionSpec::Kafka(_) => Some(path.to_owned()),
            #[cfg(feature = "rabbitmq")]
            ConnectionSpec::RabbitMq(_) => path.strip_prefix("queue/").map(str::to_owned),
            #[cfg(feature = "aws")]
            ConnectionSpec::Aws(_) => path
                .strip_prefix("sqs/")
                .or_else(|| path.strip_prefix("sns/"))
                .map(str::to_owned),
            #[cfg(feature = "pubsub")]
            ConnectionSpec::PubSub(_) => path.strip_prefix("topic/").map(str::to_owned),
        }
    }

    /// Whether a message this connection sends to `sink` may come back through a source on
    /// `source`, a path of a connection of the same system (two connections can reach one
    /// broker, so their names are not compared). `None` for a sink whose place is known
    /// only per message (a templated path or a reply-to). Errs toward yes: it decides where
    /// the loop guard's header is needed (`count_hops: auto`).
    pub fn may_feed(&self, sink: Option<&str>, source: &str) -> bool {
        let Some(sink) = sink else {
            return true;
        };
        match self {
            ConnectionSpec::Memory(_) => sink == source,
            // What goes to stdout is not read back by this process.
            ConnectionSpec::Stdio(_) => false,
            #[cfg(feature = "kafka")]
            ConnectionSpec::Kafka(_) => kafka::may_feed(sink, source),
            #[cfg(feature = "rabbitmq")]
            ConnectionSpec::RabbitMq(_) => rabbitmq::may_feed(sink, source),
            #[cfg(feature = "aws")]
            ConnectionSpec::Aws(_) => aws::may_feed(sink, source),
            // Any subscription may be attached to a topic.
            #[cfg(feature = "pubsub")]
            ConnectionSpec::PubSub(_) => true,
        }
    }

    /// The largest message a source of this system delivers with the broker's and client's
    /// default settings: the default of `limits.max_message_bytes`, so that a route never
    /// refuses what its broker delivered unless told to.
    pub fn max_message_bytes(&self) -> usize {
        match self {
            ConnectionSpec::Memory(_) | ConnectionSpec::Stdio(_) => 16 << 20,
            // librdkafka's `receive.message.max.bytes`: nothing larger can be fetched.
            #[cfg(feature = "kafka")]
            ConnectionSpec::Kafka(_) => 100_000_000,
            // RabbitMQ 3's default `max_message_size` (128 MiB).
            #[cfg(feature = "rabbitmq")]
            ConnectionSpec::RabbitMq(_) => 128 << 20,
            // SQS's limit for body and attributes (SNS reaches bridge through SQS), and the
            // 128 bytes of a FIFO group id, which SQS does not count but bridge counts as the
            // key.
            #[cfg(feature = "aws")]
            ConnectionSpec::Aws(_) => (1 << 20) + 128,
            // Pub/Sub's limit for a message with its attributes.
            #[cfg(feature = "pubsub")]
            ConnectionSpec::PubSub(_) => 10_000_000,
        }
    }

    /// Whether replies can be published back to requesters on this system.
    pub fn accepts_replies(&self) -> bool {
        !matches!(self, ConnectionSpec::Stdio(_))
    }

    /// Opens the connection. Errors are [`AdapterError::Unavailable`] when retrying may help.
    pub async fn connect(
        &self,
        name: &str,
        context: &ConnectContext,
    ) -> Result<Arc<dyn Connector>, AdapterError> {
        let _ = name;
        match self {
            ConnectionSpec::Memory(config) => Ok(memory::connect(config, context)),
            ConnectionSpec::Stdio(config) => Ok(stdio::connect(config)),
            #[cfg(feature = "kafka")]
            ConnectionSpec::Kafka(config) => kafka::connect(config).await,
            #[cfg(feature = "rabbitmq")]
            ConnectionSpec::RabbitMq(config) => rabbitmq::connect(config).await,
            #[cfg(feature = "aws")]
            ConnectionSpec::Aws(config) => aws::connect(config).await,
            #[cfg(feature = "pubsub")]
            ConnectionSpec::PubSub(config) => pubsub::connect(config).await,
        }
    }

    /// A text safe to print that says where this connection goes (no secrets).
    pub fn describe(&self) -> String {
        match self {
            ConnectionSpec::Memory(_) => "in-process memory queues".to_owned(),
            ConnectionSpec::Stdio(_) => "standard input and output".to_owned(),
            #[cfg(feature = "kafka")]
            ConnectionSpec::Kafka(config) => kafka::describe(config),
            #[cfg(feature = "rabbitmq")]
            ConnectionSpec::RabbitMq(config) => rabbitmq::describe(config),
            #[cfg(feature = "aws")]
            ConnectionSpec::Aws(config) => aws::describe(config),
            #[cfg(feature = "pubsub")]
            ConnectionSpec::PubSub(config) => pubsub::describe(config),
        }
    }
}
