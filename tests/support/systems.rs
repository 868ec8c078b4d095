//! The eight systems as test fixtures: connections, named resources (declared by bridge
//! itself), and the endpoints a test writes to and reads from.

use std::sync::Arc;

use bridge::adapter::{Connector, SourceOptions, SourceSettings};
use serde_json::{Value, json};

pub const KAFKA: &str = "127.0.0.1:9092";
pub const RABBIT: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const AWS: &str = "http://127.0.0.1:4566";
pub const PUBSUB: &str = "http://127.0.0.1:8085";
pub const PROJECT: &str = "bridge-test";
/// The project's own nats-server (a system one may hold 4222).
pub const NATS: &str = "nats://127.0.0.1:4223";
/// The project's own Redis (a system one may hold 6379).
pub const REDIS: &str = "redis://127.0.0.1:6390/0";
/// The project's own Mosquitto (a system one may hold 1883).
pub const MQTT: &str = "mqtt://127.0.0.1:1884";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sys {
    Kafka,
    Rabbit,
    Sqs,
    /// SQS FIFO queues (names ending in `.fifo`): ordered per key, deduplicating.
    SqsFifo,
    Sns,
    PubSub,
    Nats,
    /// Redis Streams.
    Redis,
    /// MQTT 5.
    Mqtt,
}

impl Sys {
    pub const ALL: [Sys; 8] = [
        Sys::Kafka,
        Sys::Rabbit,
        Sys::Sqs,
        Sys::Sns,
        Sys::PubSub,
        Sys::Nats,
        Sys::Redis,
        Sys::Mqtt,
    ];

    /// Whether the system keeps the order of messages with the same key across a crash
    /// (standard SQS queues and SNS topics do not; JetStream delivers the messages a crash
    /// left unacknowledged again only after their ack wait, behind newer ones, and a Redis
    /// group claims a crashed consumer's pending entries after their idle time).
    pub fn keeps_order(self) -> bool {
        !matches!(self, Sys::Sqs | Sys::Sns | Sys::Nats | Sys::Redis)
    }

    /// How many deliveries one fault (a crash, a lost connection, an outage) may make this
    /// system, as the source of a route with the in-flight window `window`, deliver again
    /// in the tests: a Kafka source hands out up to two windows past its last confirmed
    /// commit, a RabbitMQ source holds its prefetch (the window). SQS, SNS and Pub/Sub are
    /// held to one window too, tighter than their documented bounds (docs/guarantees.md,
    /// which add read-ahead and acknowledgements not yet sent).
    pub fn redelivered_at_most(self, window: u32) -> u32 {
        match self {
            Sys::Kafka => 2 * window,
            Sys::Rabbit
            | Sys::Sqs
            | Sys::SqsFifo
            | Sys::Sns
            | Sys::PubSub
            | Sys::Nats
            | Sys::Redis => window,
            // Mosquitto 2.0 sends a reconnecting session's backlog up to its own
            // `max_inflight_messages` (1,000 on the project's server), whatever receive
            // maximum the client asks for: a crash leaves up to that many unacknowledged.
            Sys::Mqtt => window.max(1_000),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Sys::Kafka => "kafka",
            Sys::Rabbit => "rabbit",
            Sys::Sqs => "sqs",
            Sys::SqsFifo => "sqsfifo",
            Sys::Sns => "sns",
            Sys::PubSub => "pubsub",
            Sys::Nats => "nats",
            Sys::Redis => "redis",
            Sys::Mqtt => "mqtt",
        }
    }
}

/// A place messages go to and come from: the sink path writers use and the source path
/// (with options) readers use.
#[derive(Debug, Clone)]
pub struct Place {
    pub sink: String,
    pub source: String,
    pub source_options: Value,
    /// The same options as the adapter reads them (`SourceSettings::options`).
    pub options: SourceOptions,
    /// The reply-to that reaches this place, in the system's own terms.
    pub address: String,
}

/// Resources of one system for one test, declared when its connection opens.
#[derive(Debug, Clone)]
pub struct Resources {
    sys: Sys,
    kafka_topics: Vec<Value>,
    rabbit_queues: Vec<Value>,
    aws_queues: Vec<Value>,
    aws_topics: Vec<Value>,
    pubsub_topics: Vec<String>,
    pubsub_subscriptions: Vec<Value>,
    nats_streams: Vec<Value>,
    redis_streams: Vec<Value>,
    group: String,
}

impl Resources {
    pub fn new(sys: Sys, group: &str) -> Resources {
        Resources {
            sys,
            kafka_topics: Vec::new(),
            rabbit_queues: Vec::new(),
            aws_queues: Vec::new(),
            aws_topics: Vec::new(),
            pubsub_topics: Vec::new(),
            pubsub_subscriptions: Vec::new(),
            nats_streams: Vec::new(),
            redis_streams: Vec::new(),
            group: group.to_owned(),
        }
    }

    pub fn sys(&self) -> Sys {
        self.sys
    }

    /// A new place named `name` (a topic, a queue, or a topic with a subscription).
    pub fn place(&mut self, name: &str) -> Place {
        let mut place = self.declare(name);
        let mut reader_options = place.source_options.clone();
        if self.sys == Sys::Mqtt {
            // The test's own reader has a session of its own per place.
            reader_options["client_id"] = json!(format!("{name}-reader"));
        }
        place.options =
            super::source_options(&self.checker_connection(), &place.source, &reader_options);
        place
    }

    /// Declares the place `name` in this system's terms (its options still unparsed).
    fn declare(&mut self, name: &str) -> Place {
        let expires = json!({"x-expires": 900_000});
        match self.sys {
            Sys::Kafka => {
                self.kafka_topics
                    .push(json!({"name": name, "partitions": 2}));
                // Every place has a consumer group of its own: the routes of one
                // connection read different topics.
                Place {
                    sink: name.into(),
                    source: name.into(),
                    source_options: json!({"group_id": format!("{name}-group")}),
                    options: SourceOptions::none(),
                    address: name.into(),
                }
            }
            Sys::Rabbit => {
                self.rabbit_queues
                    .push(json!({"name": name, "arguments": expires}));
                Place {
                    sink: format!("queue/{name}"),
                    source: format!("queue/{name}"),
                    source_options: Value::Null,
                    options: SourceOptions::none(),
                    address: name.into(),
                }
            }
            Sys::Sqs => {
                self.aws_queues.push(json!({"name": name}));
                Place {
                    sink: format!("sqs/{name}"),
                    source: format!("sqs/{name}"),
                    source_options: Value::Null,
                    options: SourceOptions::none(),
                    address: name.into(),
                }
            }
            Sys::SqsFifo => {
                let name = format!("{name}.fifo");
                self.aws_queues.push(json!({"name": name}));
                Place {
                    sink: format!("sqs/{name}"),
                    source: format!("sqs/{name}"),
                    // moto's long poll misses a FIFO group unlocked during the call
                    // (docs/testing.md).
                    source_options: json!({"wait_seconds": 1}),
                    options: SourceOptions::none(),
                    address: name,
                }
            }
            Sys::Sns => {
                let queue = format!("{name}-q");
                self.aws_queues.push(json!({"name": queue}));
                self.aws_topics
                    .push(json!({"name": name, "subscriptions": [{"queue": queue}]}));
                Place {
                    sink: format!("sns/{name}"),
                    source: format!("sns/{name}"),
                    source_options: json!({"queue": queue}),
                    options: SourceOptions::none(),
                    address: name.into(),
                }
            }
            Sys::PubSub => {
                self.pubsub_topics.push(name.into());
                self.pubsub_subscriptions
                    .push(json!({"name": format!("{name}-sub"), "topic": name, "ordering": true}));
                Place {
                    sink: format!("topic/{name}"),
                    source: format!("subscription/{name}-sub"),
                    source_options: Value::Null,
                    options: SourceOptions::none(),
                    address: name.into(),
                }
            }
            Sys::Nats => {
                // A stream per place, capturing the place's subjects; a crashed reader's
                // messages come back after 5 s.
                self.nats_streams
                    .push(json!({"name": name, "subjects": [format!("{name}.>")]}));
                Place {
                    sink: format!("subject/{name}.in"),
                    source: format!("stream/{name}"),
                    source_options: json!({"ack_wait_seconds": 5}),
                    options: SourceOptions::none(),
                    address: format!("{name}.in"),
                }
            }
            Sys::Redis => {
                // A crashed reader's pending entries are claimed after 5 s.
                self.redis_streams.push(json!({"name": name}));
                Place {
                    sink: format!("stream/{name}"),
                    source: format!("stream/{name}"),
                    // Replicas of `bridge run` are consumers of their own (BRIDGE_REPLICA).
                    source_options: json!({"claim_idle_ms": 5000, "consumer": "replica-${BRIDGE_REPLICA:-1}"}),
                    options: SourceOptions::none(),
                    address: name.into(),
                }
            }
            Sys::Mqtt => {
                // Replicas of `bridge run` split a place (their client ids differ by
                // BRIDGE_REPLICA, see `connection`).
                Place {
                    sink: format!("topic/bridge-tests/{name}"),
                    source: format!("topic/bridge-tests/{name}"),
                    source_options: json!({"share_group": "bridge"}),
                    options: SourceOptions::none(),
                    address: format!("bridge-tests/{name}"),
                }
            }
        }
    }

    /// Makes sure a reader of `place` will receive what is sent from now on, before it
    /// opens: MQTT queues messages only for a session that has subscribed. The session
    /// subscribes once and closes: that of route `route` of replica 1 of `bridge run`, or
    /// (`None`) the test's own reader of the place. Elsewhere nothing.
    pub async fn subscribe_ahead(
        &self,
        connector: &Arc<dyn Connector>,
        place: &Place,
        route: Option<&str>,
    ) {
        if self.sys != Sys::Mqtt {
            return;
        }
        let options = match route {
            Some(route) => {
                let mut options = place.source_options.clone();
                options["client_id"] = json!(format!("{}-1-{route}", self.group));
                super::source_options(&self.checker_connection(), &place.source, &options)
            }
            None => place.options.clone(),
        };
        let settings = SourceSettings {
            route: "ahead".into(),
            options,
            max_in_flight: 16,
            dead_letter: true,
        };
        let endpoint = bridge::address::Endpoint {
            connection: "ahead".into(),
            path: place.source.clone(),
        };
        let source = connector.open_source(&endpoint, &settings).await.unwrap();
        source.close().await;
    }

    /// One more subscription `name` on the topic of Pub/Sub place `place` (the emulator
    /// often delivers nothing to a second consumer of a subscription whose first one
    /// closed: LOCAL-BROKERS.md, docs/testing.md).
    pub fn subscription(&mut self, place: &str, name: &str) -> String {
        assert_eq!(self.sys, Sys::PubSub, "subscriptions are Pub/Sub's");
        self.pubsub_subscriptions
            .push(json!({"name": name, "topic": place, "ordering": true}));
        format!("subscription/{name}")
    }

    /// The connection (with `type`) that declares every place made so far.
    pub fn connection(&self) -> Value {
        match self.sys {
            Sys::Kafka => json!({"type": "kafka", "brokers": KAFKA, "group_id": self.group,
                // A killed member is noticed within seconds, and a rebalance does not wait
                // minutes for it (max.poll.interval.ms is the rebalance timeout).
                "consumer_options": {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000",
                                     "max.poll.interval.ms": "20000"},
                "declare": self.kafka_topics}),
            Sys::Rabbit => {
                json!({"type": "rabbitmq", "url": RABBIT, "declare": {"queues": self.rabbit_queues}})
            }
            Sys::Sqs | Sys::SqsFifo | Sys::Sns => {
                json!({"type": "aws", "region": "us-east-1", "endpoint_url": AWS,
                "access_key_id": "test", "secret_access_key": "test",
                "declare": {"queues": self.aws_queues, "topics": self.aws_topics}})
            }
            Sys::PubSub => json!({"type": "pubsub", "project": PROJECT, "endpoint": PUBSUB,
                "declare": {"topics": self.pubsub_topics, "subscriptions": self.pubsub_subscriptions}}),
            Sys::Nats => {
                json!({"type": "nats", "url": NATS, "declare": {"streams": self.nats_streams}})
            }
            Sys::Redis => {
                json!({"type": "redis", "url": REDIS, "declare": {"streams": self.redis_streams}})
            }
            // Each replica of `bridge run` has sessions of its own (tests::support::process
            // sets BRIDGE_REPLICA).
            Sys::Mqtt => json!({"type": "mqtt", "url": MQTT,
                "client_id": format!("{}-${{BRIDGE_REPLICA:-1}}", self.group)}),
        }
    }

    /// The same connection for a test's own readers (a consumer group of their own).
    pub fn checker_connection(&self) -> Value {
        let mut connection = self.connection();
        match self.sys {
            Sys::Kafka => connection["group_id"] = json!(format!("{}-checker", self.group)),
            Sys::Mqtt => connection["client_id"] = json!(format!("{}-checker", self.group)),
            _ => {}
        }
        connection
    }
}

/// A source reading `place` in YAML flow form, e.g. `{endpoint: 'a:queue/x', options: {}}`.
pub fn source_yaml(connection: &str, place: &Place) -> String {
    if place.source_options.is_null() {
        format!("'{connection}:{}'", place.source)
    } else {
        format!(
            "{{endpoint: '{connection}:{}', options: {}}}",
            place.source, place.source_options
        )
    }
}
