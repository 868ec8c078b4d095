//! Configuration of a `type: rabbitmq` connection, its sources and its endpoint paths.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A RabbitMQ broker (`type: rabbitmq`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// AMQP URI, e.g. `amqp://user:${RABBIT_PASSWORD}@host:5672/%2f`; `amqps://` for TLS.
    /// A `heartbeat` of 10 s is added when the URI sets none, so a dead socket is noticed.
    pub url: crate::secret::SecretUrl,
    /// Longest wait for the TCP and AMQP handshake, in milliseconds. Default 10000.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Longest wait for a publisher confirm before the send counts as failed (and is
    /// retried), in milliseconds. Default 30000.
    #[serde(default = "default_confirm_timeout_ms")]
    pub confirm_timeout_ms: u64,
    /// Most unconfirmed publishes on this connection. Default 1024.
    #[serde(default = "default_max_unconfirmed")]
    pub max_unconfirmed: usize,
    /// Exchanges and queues to declare at start-up (idempotent).
    #[serde(default)]
    pub declare: Declarations,
    /// For `amqps://`: an extra CA to trust and a client certificate (mutual TLS). The
    /// server certificate is always verified (system trust store plus `ca_file`).
    #[serde(default)]
    pub tls: Option<crate::adapter::tls::TlsFiles>,
}

fn default_connect_timeout_ms() -> u64 {
    10_000
}
fn default_confirm_timeout_ms() -> u64 {
    30_000
}
fn default_max_unconfirmed() -> usize {
    1024
}

/// Topology bridge declares when it connects.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declarations {
    #[serde(default)]
    pub exchanges: Vec<ExchangeDeclaration>,
    #[serde(default)]
    pub queues: Vec<QueueDeclaration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeDeclaration {
    pub name: String,
    /// `direct`, `fanout`, `topic` (default) or `headers`.
    #[serde(default = "default_exchange_kind")]
    pub kind: ExchangeType,
    /// Default true.
    #[serde(default = "yes")]
    pub durable: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeType {
    Direct,
    Fanout,
    Topic,
    Headers,
}

fn default_exchange_kind() -> ExchangeType {
    ExchangeType::Topic
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueDeclaration {
    pub name: String,
    /// Default true.
    #[serde(default = "yes")]
    pub durable: bool,
    /// Exchange that rejected messages go to (`x-dead-letter-exchange`).
    #[serde(default)]
    pub dead_letter_exchange: Option<String>,
    /// Routing key for dead-lettered messages (`x-dead-letter-routing-key`).
    #[serde(default)]
    pub dead_letter_routing_key: Option<String>,
    /// Other queue arguments (`x-queue-type`, `x-max-length`, ...): text, numbers, booleans.
    #[serde(default)]
    pub arguments: BTreeMap<String, serde_json::Value>,
    /// Bindings of this queue to exchanges.
    #[serde(default)]
    pub bindings: Vec<Binding>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub exchange: String,
    /// Default `#`.
    #[serde(default = "default_binding_key")]
    pub routing_key: String,
}

fn default_binding_key() -> String {
    "#".into()
}

/// Options of a RabbitMQ source (`from.options`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceOptions {
    /// basic.qos prefetch count, 1-65535; default the route's `max_in_flight`.
    #[serde(default)]
    pub prefetch: Option<u16>,
    /// The queue has a dead-letter exchange that bridge cannot see (set by a policy or by
    /// another tool), so a route without `dead_letter` may reject into it. Default false.
    #[serde(default)]
    pub broker_dead_letter: bool,
}

/// A RabbitMQ endpoint path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `queue/NAME`: consume the queue; publish through the default exchange.
    Queue(String),
    /// `exchange/NAME[/ROUTING_KEY]`: publish to an exchange (routing key may hold `/`).
    Exchange { name: String, routing_key: String },
}

/// The pseudo-queue of RabbitMQ's direct reply-to; a requester's reply address is this
/// name followed by `.` and a base64 token.
pub const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

impl Target {
    pub fn parse(path: &str) -> Result<Target, String> {
        fn is_direct_reply_to(name: &str) -> bool {
            name.starts_with(DIRECT_REPLY_TO)
        }
        let bad = || {
            format!("`{path}` is not a RabbitMQ path; use queue/NAME or exchange/NAME/ROUTING_KEY")
        };
        let (kind, rest) = path.split_once('/').ok_or_else(bad)?;
        match kind {
            // A direct reply-to name ends in a base64 token, which may hold a `/`.
            "queue" if !rest.is_empty() && (!rest.contains('/') || is_direct_reply_to(rest)) => {
                Ok(Target::Queue(rest.to_owned()))
            }
            "exchange" => {
                let (name, routing_key) = rest.split_once('/').unwrap_or((rest, ""));
                if name.is_empty() {
                    return Err(format!(
                        "`{path}` names no exchange; to use the default exchange write queue/NAME"
                    ));
                }
                Ok(Target::Exchange {
                    name: name.to_owned(),
                    routing_key: routing_key.to_owned(),
                })
            }
            _ => Err(bad()),
        }
    }

    /// Exchange and routing key to publish to.
    pub fn publish_to(&self) -> (&str, &str) {
        match self {
            Target::Queue(name) => ("", name),
            Target::Exchange { name, routing_key } => (name, routing_key),
        }
    }

    /// Where a publish goes, as errors name it.
    pub fn described(&self) -> String {
        let (exchange, routing_key) = self.publish_to();
        format!("exchange `{exchange}` with routing key `{routing_key}`")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_direct_reply_to_name_is_a_queue_even_with_a_slash_in_its_token() {
        let name = "amq.rabbitmq.reply-to.g1h2AA1yZXBseUA5MjQ4ODg0AABNiAAAAAFrCMxc.ea/3pgfQdSrv2xa1yg3VAw==";
        assert_eq!(
            Target::parse(&format!("queue/{name}")),
            Ok(Target::Queue(name.into()))
        );
        assert!(Target::parse("queue/orders/x").is_err());
    }

    #[test]
    fn paths_name_queues_or_exchanges_with_routing_keys() {
        assert_eq!(
            Target::parse("queue/orders"),
            Ok(Target::Queue("orders".into()))
        );
        assert_eq!(
            Target::parse("exchange/events/order.placed/eu"),
            Ok(Target::Exchange {
                name: "events".into(),
                routing_key: "order.placed/eu".into()
            })
        );
        assert_eq!(
            Target::parse("exchange/events").unwrap().publish_to(),
            ("events", "")
        );
        assert!(Target::parse("topic/x").is_err());
        assert!(Target::parse("exchange//k").is_err());
    }
}
